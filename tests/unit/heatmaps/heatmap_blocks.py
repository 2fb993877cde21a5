"""Randomly initialised cross-attention blocks with the real shapes of SD1.x / SD2.x / SDXL, for the heatmap tests.

- ``LdmCrossAttention``: ldm/sgm ``CrossAttention`` re-implemented (q/k/v without bias, ``heads``, ``scale``,
  ``forward(x, context, mask)``) with ``scaled_dot_product_attention`` as the WebUI's SDP optimisation does;
- ``DiffusersAttention``: a diffusers-style ``Attention`` whose ``forward`` delegates to a processor;
- ``FakeUNet``: attention blocks at the UNet's resolutions (ceil-halved latent), fed from the latent so that a
  forward pre-hook on it sees ``x`` of shape [B, 4, H, W] as the real UNet's.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a busy 2-core machine two OpenMP threads spin against other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class LdmCrossAttention(nn.Module):
    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.scale = dim_head**-0.5
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        h = self.heads
        q = self.to_q(x)
        context = x if context is None else context
        k, v = self.to_k(context), self.to_v(context)
        b, n, _ = q.shape
        q, k, v = (t.reshape(b, -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


def split_attention_forward(self, x, context=None, mask=None):
    """A sliced attention like the WebUI's Doggettx/sub-quadratic paths: projections once, softmax per query slice."""
    h = self.heads
    q_in = self.to_q(x)
    context = x if context is None else context
    k_in, v_in = self.to_k(context), self.to_v(context)
    b, n, _ = q_in.shape
    q, k, v = (t.reshape(b, -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q_in, k_in, v_in))
    out = torch.empty_like(q)
    for i in range(0, n, 7):
        s = (q[:, :, i : i + 7] @ k.transpose(-1, -2)) * self.scale
        out[:, :, i : i + 7] = s.softmax(-1) @ v
    return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class SdpProcessor:
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        b, n, _ = q.shape
        q, k, v = (t.view(b, -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        out = attn.to_out[0](out.transpose(1, 2).reshape(b, n, -1))
        return attn.to_out[1](out)


class DiffusersAttention(nn.Module):
    def __init__(self, query_dim: int, cross_attention_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(cross_attention_dim, inner, bias=False)
        self.to_v = nn.Linear(cross_attention_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])
        self.processor = SdpProcessor()

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        return self.processor(self, hidden_states, encoder_hidden_states, attention_mask)


# (query dim, heads, dim_head, downsampling factor) per attn2, in UNet order, at toy spatial sizes.
SD15_LAYERS = [(320, 8, 40, 1), (640, 8, 80, 2), (1280, 8, 160, 4), (1280, 8, 160, 8), (640, 8, 80, 2), (320, 8, 40, 1)]
SD2_LAYERS = [(320, 5, 64, 1), (640, 10, 64, 2), (1280, 20, 64, 4), (640, 10, 64, 2), (320, 5, 64, 1)]
SDXL_LAYERS = [(640, 10, 64, 2), (1280, 20, 64, 4), (1280, 20, 64, 4), (640, 10, 64, 2)]
CONTEXT_DIM = {"sd15": 768, "sd2": 1024, "sdxl": 2048}
LAYERS = {"sd15": SD15_LAYERS, "sd2": SD2_LAYERS, "sdxl": SDXL_LAYERS}


def grid_at(latent: tuple[int, int], factor: int) -> tuple[int, int]:
    h, w = latent
    while factor > 1:
        h, w, factor = (h + 1) // 2, (w + 1) // 2, factor // 2
    return h, w


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, factor: int, context_dim: int, diffusers: bool) -> None:
        super().__init__()
        self.factor = factor
        self.proj_in = nn.Linear(4, dim)
        cls = DiffusersAttention if diffusers else LdmCrossAttention
        self.attn2 = cls(dim, context_dim, heads, dim_head)


class FakeUNet(nn.Module):
    def __init__(self, kind: str = "sd15", diffusers: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        ctx = CONTEXT_DIM[kind]
        self.blocks = nn.ModuleList(Block(d, h, dh, f, ctx, diffusers) for d, h, dh, f in LAYERS[kind])
        self.diffusers = diffusers

    def attn2_modules(self) -> list[nn.Module]:
        return [b.attn2 for b in self.blocks]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for block in self.blocks:
            h, w = grid_at((x.shape[-2], x.shape[-1]), block.factor)
            feats = F.adaptive_avg_pool2d(x, (h, w)).flatten(2).transpose(1, 2)  # [B, h·w, 4]
            hidden = block.proj_in(feats)
            if self.diffusers:
                y = block.attn2(hidden, encoder_hidden_states=context)
            else:
                y = block.attn2(hidden, context=context)
            y = y.mean(-1).reshape(x.shape[0], 1, h, w)
            out = out + F.interpolate(y, size=x.shape[-2:], mode="nearest")
        return out


def naive_maps(attn: nn.Module, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √d) summed over heads, in float64, from the module's own weights: [B, L, N]."""
    h = attn.heads
    q = hidden.double() @ attn.to_q.weight.double().T
    k = context.double() @ attn.to_k.weight.double().T
    b, n, inner = q.shape
    d = inner // h
    q = q.reshape(b, n, h, d).transpose(1, 2)
    k = k.reshape(b, -1, h, d).transpose(1, 2)
    probs = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)  # [B, h, N, L]
    return probs.sum(1).transpose(1, 2)
