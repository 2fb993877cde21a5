from ldm._parts import Downsample, ResBlock, TimestepEmbedSequential, UNetModel, Upsample  # noqa: F401
