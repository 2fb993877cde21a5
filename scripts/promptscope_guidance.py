# Semantic guidance (AND_TOPK / AND_PERP / AND_SALT); the code lives in promptscope_a1111.guidance_script.
from promptscope_a1111.guidance_script import SemanticGuidanceScript  # noqa: F401
