"""Semantic guidance in Forge: the same script as in A1111 (accordion, arguments, infotext, settings, X/Y/Z axes);
only the sampling glue differs (`promptscope_forge.sampling`)."""

from promptscope_a1111.guidance_script import *  # noqa: F403
from promptscope_a1111.guidance_script import SemanticGuidanceScript, register_settings, register_xyz_axes  # noqa: F401
