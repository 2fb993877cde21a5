"""Attention heatmaps in Forge: the same script as in A1111; only the sampling glue differs."""

from promptscope_a1111.heatmaps_script import *  # noqa: F403
from promptscope_a1111.heatmaps_script import AttentionHeatmapsScript  # noqa: F401
