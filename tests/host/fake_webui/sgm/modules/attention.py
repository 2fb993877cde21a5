"""``sgm.modules.attention`` (SDXL): a CrossAttention class distinct from ldm's, patched separately."""

from ldm._parts import make_attention_classes

CrossAttention, FeedForward, BasicTransformerBlock, SpatialTransformer = make_attention_classes(
    __name__, sgm_style=True
)
