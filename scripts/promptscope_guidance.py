# Semantic guidance (AND_TOPK / AND_PERP / AND_SALT); the code lives in <adapter>.guidance_script.
from promptscope_adapter import load

SemanticGuidanceScript = load("guidance_script", "SemanticGuidanceScript")
