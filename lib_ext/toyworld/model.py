"""The toy world's text-to-image model: a CLIP-like text encoder and a small SD-shaped pixel-space UNet.

The UNet mirrors ldm's `openaimodel.UNetModel` naming (`input_blocks`, `middle_block`, `output_blocks`,
`SpatialTransformer` → `transformer_blocks[i].attn1/attn2`) and ldm's `CrossAttention` (q/k/v without bias,
`to_out` = [Linear, Dropout], heads split as 'b n (h d) -> b h n d', softmax(QKᵀ·d^-½)), so attention hooks
written for SD find the same modules and compute the same probabilities here.

Text encoder: NON-causal, so word tokens keep their own identity instead of the end token carrying the caption.
Word tokens attend to start, words and the first end token; start, end and pad tokens attend only to themselves,
so their outputs do not depend on the caption (they act as caption-free attention sinks, and the empty prompt's
context is a constant).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ToyConfig:
    vocab_size: int = 23
    context_length: int = 77
    bos_id: int = 0
    eos_id: int = 1
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    in_channels: int = 3
    channels: tuple[int, ...] = (32, 48, 64)  # per resolution level: 32×32, 16×16, 8×8
    attn_heads: tuple[int, ...] = (2, 4, 4)
    # Self-attention (attn1) per level; off at 32×32 where its 1024² maps cost most of a CPU training step.
    self_attn: tuple[bool, ...] = (False, True, True)
    time_dim: int = 128
    groups: int = 8
    image_size: int = 32
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["attn_heads"] = list(self.attn_heads)
        d["self_attn"] = list(self.self_attn)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ToyConfig:
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        d["attn_heads"] = tuple(d["attn_heads"])
        d["self_attn"] = tuple(d["self_attn"])
        return cls(**d)


# ----------------------------------------------------------------------------------------------- attention


class CrossAttention(nn.Module):
    """ldm's CrossAttention: self-attention when context is None, else attention over the context tokens."""

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 4, dim_head: int = 16) -> None:
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])
        # Training reads the probabilities for the attention loss; off by default (no memory kept at inference).
        self.store_probs = False
        self.last_probs: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        h = self.heads
        ctx = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(ctx), self.to_v(ctx)
        b, n, _ = q.shape
        m = k.shape[1]
        q = q.view(b, n, h, -1).transpose(1, 2)
        k = k.view(b, m, h, -1).transpose(1, 2)
        v = v.view(b, m, h, -1).transpose(1, 2)
        sim = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (b, h, n, m)
        if mask is not None:  # (b, m) bool, True = attend (ldm's convention)
            sim = sim.masked_fill(~mask.view(b, 1, 1, m), torch.finfo(sim.dtype).min)
        attn = sim.softmax(dim=-1)
        self.last_probs = attn if self.store_probs else None
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, -1)
        for layer in self.to_out:
            out = layer(out)
        return out


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int, self_attn: bool = True) -> None:
        super().__init__()
        dim_head = dim // heads
        self.attn1 = CrossAttention(dim, None, heads, dim_head) if self_attn else None
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.attn1 is not None:
            x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context=context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, context_dim: int, groups: int, self_attn: bool = True) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, context_dim, self_attn)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (b, hw, c), row-major like SD
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        h = self.proj_out(h).transpose(1, 2).reshape(b, c, hh, ww)
        return x + h


# ----------------------------------------------------------------------------------------------- UNet parts


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, time_dim: int, groups: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, out_ch))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(groups, out_ch), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """ldm's sinusoidal embedding (cos first)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ToyUNet(nn.Module):
    """ε-prediction UNet on (B, 3, 32, 32) pixels in [-1, 1]; cross-attention at 32×32, 16×16 and 8×8."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, heads, tdim, g, ctx = cfg.channels, cfg.attn_heads, cfg.time_dim, cfg.groups, cfg.text_dim
        self.model_channels = ch[0]
        self.time_embed = nn.Sequential(nn.Linear(ch[0], tdim), nn.SiLU(), nn.Linear(tdim, tdim))

        def level(i: int, cin: int) -> TimestepEmbedSequential:
            st = SpatialTransformer(ch[i], heads[i], ctx, g, cfg.self_attn[i])
            return TimestepEmbedSequential(ResBlock(cin, ch[i], tdim, g), st)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1))])
        skip_ch = [ch[0]]
        cur = ch[0]
        for i in range(len(ch)):
            self.input_blocks.append(level(i, cur))
            cur = ch[i]
            skip_ch.append(cur)
            if i < len(ch) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(cur)))
                skip_ch.append(cur)
        self.middle_block = TimestepEmbedSequential(
            ResBlock(cur, cur, tdim, g),
            SpatialTransformer(cur, heads[-1], ctx, g, cfg.self_attn[-1]),
            ResBlock(cur, cur, tdim, g),
        )
        self.output_blocks = nn.ModuleList()
        for i in reversed(range(len(ch))):
            for j in range(2):  # one per skip of this level (ResBlock+ST output, and the level's input)
                blk = level(i, cur + skip_ch.pop())
                cur = ch[i]
                if i > 0 and j == 1:
                    blk.append(Upsample(cur))
                self.output_blocks.append(blk)
        assert not skip_ch
        self.out = nn.Sequential(nn.GroupNorm(g, cur), nn.SiLU(), nn.Conv2d(cur, cfg.in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        hs = []
        h = x
        for blk in self.input_blocks:
            h = blk(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for blk in self.output_blocks:
            h = blk(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)

    def cross_attention_modules(self) -> list[tuple[str, CrossAttention]]:
        return [(n, m) for n, m in self.named_modules() if n.endswith("attn2") and isinstance(m, CrossAttention)]


# ----------------------------------------------------------------------------------------------- text encoder


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim)
        self.self_attn = CrossAttention(dim, None, heads, dim // heads)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, 4)

    def forward(self, x: torch.Tensor, allow: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(self.layer_norm1(x), allow)
        return x + self.mlp(self.layer_norm2(x))

    def _attend(self, x: torch.Tensor, allow: torch.Tensor) -> torch.Tensor:
        a = self.self_attn
        b, n, _ = x.shape
        q = a.to_q(x).view(b, n, a.heads, -1).transpose(1, 2)
        k = a.to_k(x).view(b, n, a.heads, -1).transpose(1, 2)
        v = a.to_v(x).view(b, n, a.heads, -1).transpose(1, 2)
        sim = torch.matmul(q, k.transpose(-1, -2)) * a.scale
        sim = sim.masked_fill(~allow[:, None], torch.finfo(sim.dtype).min)
        out = torch.matmul(sim.softmax(-1), v).transpose(1, 2).reshape(b, n, -1)
        for layer in a.to_out:
            out = layer(out)
        return out


class ToyTextEncoder(nn.Module):
    """ids (B, 77) → (B, 77, D). Non-causal over the words; start/end/pad tokens see only themselves."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.text_dim
        self.token_embedding = nn.Embedding(cfg.vocab_size, d)
        self.position_embedding = nn.Embedding(cfg.context_length, d)
        self.layers = nn.ModuleList([EncoderLayer(d, cfg.text_heads) for _ in range(cfg.text_layers)])
        self.final_layer_norm = nn.LayerNorm(d)

    def attention_allow(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, n, n) bool: query i may attend key j."""
        b, n = ids.shape
        pos = torch.arange(n, device=ids.device)
        is_eos = ids == self.cfg.eos_id
        # Position of the first end token (n if none: a context cut without an end token).
        first_eos = torch.where(is_eos, pos.expand(b, n), torch.full_like(ids, n)).min(dim=1).values
        is_word = (pos[None] > 0) & (pos[None] < first_eos[:, None])
        in_prompt = pos[None] <= first_eos[:, None]  # start, words, first end
        eye = torch.eye(n, dtype=torch.bool, device=ids.device)[None]
        return (is_word[:, :, None] & in_prompt[:, None, :]) | eye

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(pos)[None]
        allow = self.attention_allow(ids)
        for layer in self.layers:
            x = layer(x, allow)
        return self.final_layer_norm(x)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
