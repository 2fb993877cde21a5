"""An SD1.5-shaped UNet with random weights, for timing only (ldm `UNetModel` with v1-inference.yaml's config).

model_channels 320, channel_mult (1, 2, 4, 4), 2 res blocks per level, attention at the first three levels with
8 heads, one transformer block (self-attention, cross-attention on 768-wide context, GEGLU feed-forward), conv
proj_in/proj_out, 1280-wide timestep embedding: ~860M parameters, the real layer shapes and FLOPs. Attention
uses `scaled_dot_product_attention`, as the WebUI's SDP optimisation does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CONTEXT_DIM = 768
MODEL_CHANNELS = 320
CHANNEL_MULT = (1, 2, 4, 4)
HEADS = 8


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, cout))
        self.out_layers = nn.Sequential(_norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    def __init__(self, dim: int, context_dim: int) -> None:
        super().__init__()
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, d = x.shape
        q, k, v = (t.view(b, -1, HEADS, d // HEADS).transpose(1, 2) for t in (self.to_q(x), self.to_k(context),
                                                                              self.to_v(context)))  # fmt: skip
        return self.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class SpatialTransformer(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.proj_in = nn.Conv2d(c, c, 1)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(c), nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn1 = Attention(c, c)
        self.attn2 = Attention(c, CONTEXT_DIM)
        self.ff_in = nn.Linear(c, 8 * c)  # GEGLU: 4c values and 4c gates
        self.ff_out = nn.Linear(4 * c, c)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        t = t + self.attn1(self.norm1(t))
        t = t + self.attn2(self.norm2(t), context)
        a, gate = self.ff_in(self.norm3(t)).chunk(2, dim=-1)
        t = t + self.ff_out(a * F.gelu(gate))
        return x + self.proj_out(t.transpose(1, 2).reshape(b, c, h, w))


class Step(nn.Module):
    """One entry of input_blocks / output_blocks: a res block, maybe attention, maybe a resampler."""

    def __init__(self, res: ResBlock | None, attn: bool, cout: int, resample: nn.Module | None = None) -> None:
        super().__init__()
        self.res = res
        self.attn = SpatialTransformer(cout) if attn else None
        self.resample = resample

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.res is not None:
            x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x, context)
        if self.resample is not None:
            x = self.resample(x)
        return x


class Upsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SD15UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        mc, emb = MODEL_CHANNELS, 4 * MODEL_CHANNELS
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(4, mc, 3, padding=1)
        self.input_blocks = nn.ModuleList()
        chans, ch = [mc], mc
        for level, mult in enumerate(CHANNEL_MULT):
            attn = level < 3
            for _ in range(2):
                self.input_blocks.append(Step(ResBlock(ch, mult * mc, emb), attn, mult * mc))
                ch = mult * mc
                chans.append(ch)
            if level < len(CHANNEL_MULT) - 1:
                self.input_blocks.append(Step(None, False, ch, nn.Conv2d(ch, ch, 3, stride=2, padding=1)))
                chans.append(ch)
        self.middle = nn.ModuleList([ResBlock(ch, ch, emb), SpatialTransformer(ch), ResBlock(ch, ch, emb)])
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(CHANNEL_MULT))):
            for i in range(3):
                cin = ch + chans.pop()
                ch = mult * mc
                up = Upsample(ch) if level > 0 and i == 2 else None
                self.output_blocks.append(Step(ResBlock(cin, ch, emb), level < 3, ch, up))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, 4, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, MODEL_CHANNELS))
        h = self.conv_in(x)
        skips = [h]
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle[2](self.middle[1](self.middle[0](h, emb), context), emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        return self.out(h)


def build(seed: int = 0) -> SD15UNet:
    torch.manual_seed(seed)
    return SD15UNet().eval()


def forward_seconds(unet: SD15UNet, batch: int, repeats: int = 1, size: int = 64) -> float:
    """Median wall time of one forward on `batch` rows of (4, size, size) latents with 77-token contexts."""
    import statistics
    import time

    x = torch.randn(batch, 4, size, size)
    t = torch.full((batch,), 500)
    context = torch.randn(batch, 77, CONTEXT_DIM)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            unet(x, t, context)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
