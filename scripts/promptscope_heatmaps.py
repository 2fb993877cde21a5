# Attention heatmaps (DAAM); the code lives in promptscope_a1111.heatmaps_script.
from promptscope_a1111.heatmaps_script import AttentionHeatmapsScript  # noqa: F401
