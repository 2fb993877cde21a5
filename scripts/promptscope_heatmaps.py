# Attention heatmaps (DAAM); the code lives in <adapter>.heatmaps_script.
from promptscope_adapter import load

AttentionHeatmapsScript = load("heatmaps_script", "AttentionHeatmapsScript")
