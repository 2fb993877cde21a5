"""Building blocks shared by the fake ``ldm`` and ``sgm`` packages.

``make_attention_classes(module_name)`` returns fresh, unrelated classes per package, because in the real repos
``ldm.modules.attention.CrossAttention`` and ``sgm.modules.attention.CrossAttention`` are distinct classes that
the WebUI patches separately.
"""

import math

import torch
from torch import nn


def make_attention_classes(module_name: str, sgm_style: bool = False):
    class CrossAttention(nn.Module):
        """Attention with ``to_q/to_k/to_v/to_out/heads``; ``attn1`` attends to itself, ``attn2`` to the text."""

        def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, dropout=0.0):
            super().__init__()
            inner_dim = dim_head * heads
            context_dim = query_dim if context_dim is None else context_dim
            self.scale = dim_head**-0.5
            self.heads = heads
            self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
            self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
            self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
            self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))

        def forward(self, x, context=None, mask=None, **kwargs):
            h = self.heads
            q = self.to_q(x)
            context = x if context is None else context
            k = self.to_k(context)
            v = self.to_v(context)
            b = q.shape[0]
            q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
            attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
            out = (attn @ v).transpose(1, 2).reshape(b, x.shape[1], -1)
            return self.to_out(out)

    class FeedForward(nn.Module):
        def __init__(self, dim, mult=2):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))

        def forward(self, x):
            return self.net(x)

    class BasicTransformerBlock(nn.Module):
        def __init__(self, dim, n_heads, d_head, context_dim=None):
            super().__init__()
            self.attn1 = CrossAttention(query_dim=dim, heads=n_heads, dim_head=d_head)
            self.ff = FeedForward(dim)
            self.attn2 = CrossAttention(query_dim=dim, context_dim=context_dim, heads=n_heads, dim_head=d_head)
            self.norm1 = nn.LayerNorm(dim)
            self.norm2 = nn.LayerNorm(dim)
            self.norm3 = nn.LayerNorm(dim)

        def forward(self, x, context=None):
            # the keyword arguments each repository passes to its attention modules
            if sgm_style:
                x = (
                    self.attn1(self.norm1(x), context=None, additional_tokens=None, n_times_crossframe_attn_in_self=0)
                    + x
                )
                x = self.attn2(self.norm2(x), context=context, additional_tokens=None) + x
            else:
                x = self.attn1(self.norm1(x), context=None) + x
                x = self.attn2(self.norm2(x), context=context) + x
            return self.ff(self.norm3(x)) + x

    class SpatialTransformer(nn.Module):
        def __init__(self, in_channels, n_heads, d_head, depth=1, context_dim=None):
            super().__init__()
            inner = n_heads * d_head
            self.in_channels = in_channels
            self.norm = nn.GroupNorm(8, in_channels)
            self.proj_in = nn.Linear(in_channels, inner)
            self.transformer_blocks = nn.ModuleList(
                [BasicTransformerBlock(inner, n_heads, d_head, context_dim=context_dim) for _ in range(depth)]
            )
            self.proj_out = nn.Linear(inner, in_channels)

        def forward(self, x, context=None):
            b, c, h, w = x.shape
            x_in = x
            x = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
            x = self.proj_in(x)
            for block in self.transformer_blocks:
                x = block(x, context=context)
            x = self.proj_out(x).transpose(1, 2).reshape(b, c, h, w)
            return x + x_in

    for cls in (CrossAttention, FeedForward, BasicTransformerBlock, SpatialTransformer):
        cls.__module__ = module_name
        cls.__qualname__ = cls.__name__
    return CrossAttention, FeedForward, BasicTransformerBlock, SpatialTransformer


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, channels, emb_channels, out_channels=None):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(8, out_channels), nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x, emb, context=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif hasattr(layer, "transformer_blocks"):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    """Two resolutions, skip connections, a SpatialTransformer after every ResBlock of a level whose ``depth`` is
    not 0 (SD1: both levels; SDXL: only the lower resolution, two transformer blocks each, like the real one).

    Module paths mirror the real UNet: ``input_blocks.1.1.transformer_blocks.0.attn2``, ``middle_block.1...``,
    ``output_blocks.N.1...``.
    """

    def __init__(
        self,
        spatial_transformer,
        in_channels=4,
        model_channels=32,
        context_dim=32,
        heads=4,
        d_head=8,
        depth=(1, 1),
        adm_in_channels=None,
    ):
        super().__init__()
        c1, c2 = model_channels, model_channels * 2
        emb = model_channels * 4
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = None
        if adm_in_channels is not None:
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(adm_in_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
            )

        def st(ch, level):
            if depth[level] == 0:  # no attention at this resolution (SDXL's highest one)
                return None
            return spatial_transformer(ch, heads, ch // heads, depth=depth[level], context_dim=context_dim)

        def tes(*layers):
            return TimestepEmbedSequential(*[x for x in layers if x is not None])

        self.input_blocks = nn.ModuleList(
            [
                tes(nn.Conv2d(in_channels, c1, 3, padding=1)),
                tes(ResBlock(c1, emb), st(c1, 0)),
                tes(Downsample(c1)),
                tes(ResBlock(c1, emb, c2), st(c2, 1)),
            ]
        )
        self.middle_block = tes(ResBlock(c2, emb), st(c2, 1), ResBlock(c2, emb))
        self.output_blocks = nn.ModuleList(
            [
                tes(ResBlock(c2 + c2, emb, c2), st(c2, 1)),
                tes(ResBlock(c2 + c1, emb, c2), st(c2, 1), Upsample(c2)),
                tes(ResBlock(c2 + c1, emb, c1), st(c1, 0)),
                tes(ResBlock(c1 + c1, emb, c1), st(c1, 0)),
            ]
        )
        self.out = nn.Sequential(nn.GroupNorm(8, c1), nn.SiLU(), nn.Conv2d(c1, in_channels, 3, padding=1))

    def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.label_emb is not None:
            emb = emb + self.label_emb(y)
        hs = []
        h = x
        for module in self.input_blocks:
            h = module(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)
