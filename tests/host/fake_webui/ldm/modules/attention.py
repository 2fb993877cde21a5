"""``ldm.modules.attention`` (SD1.x): the WebUI replaces ``CrossAttention.forward`` on this class."""

from ldm._parts import make_attention_classes

CrossAttention, FeedForward, BasicTransformerBlock, SpatialTransformer = make_attention_classes(__name__)
