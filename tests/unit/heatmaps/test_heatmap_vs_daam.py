"""Which cross-attention layers feed the word maps, against DAAM's own locator (castorini/daam `daam/hook.py`,
`UNetCrossAttentionLocator`, as `trace` builds it: middle block only when saving/loading heads).

The peer's code is never stored here: set ``PROMPTSCOPE_DAAM`` to a checkout of castorini/daam (a work tree, or a
git directory read with ``git show HEAD:…``). Without it these tests skip. DAAM imports diffusers for type names
only; the locator runs on any module with diffusers' UNet layout, so small stand-ins are given for those imports.
"""

from __future__ import annotations

import sys
import types

import pytest
from heatmap_blocks import DiffusersAttention
from torch import nn

from lib_ext.attention_sites import find_cross_attention
from lib_ext.heatmaps.feature import HeatmapFeature, HeatmapSettings
from lib_ext.patches import PatchSet
from lib_ext.seam import BatchLayout, JobInfo, SamplingContext
from tests.peer_source import peer_source as read_peer

ENV = "PROMPTSCOPE_DAAM"


def peer_source(path: str) -> str:
    return read_peer(ENV, "castorini/daam", path)


@pytest.fixture
def daam_hook(monkeypatch):
    """daam/hook.py executed with stand-ins for the two diffusers names it imports."""
    diffusers = types.ModuleType("diffusers")
    diffusers.UNet2DConditionModel = nn.Module
    processor = types.ModuleType("diffusers.models.attention_processor")
    processor.Attention = nn.Module
    models = types.ModuleType("diffusers.models")
    for name, module in (("diffusers", diffusers), ("diffusers.models", models),
                         ("diffusers.models.attention_processor", processor)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    namespace: dict = {"__name__": "daam_hook"}
    exec(compile(peer_source("daam/hook.py"), "daam/hook.py", "exec"), namespace)
    return namespace


class TransformerBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn1 = DiffusersAttention(dim, dim, 2, dim // 2)
        self.attn2 = DiffusersAttention(dim, 32, 2, dim // 2)


class Transformer2DModel(nn.Module):
    def __init__(self, dim: int, depth: int) -> None:
        super().__init__()
        self.transformer_blocks = nn.ModuleList(TransformerBlock(dim) for _ in range(depth))


def block_class(name: str, with_attention: bool) -> type:
    def init(self, dim: int, n: int, depth: int) -> None:
        nn.Module.__init__(self)
        if with_attention:
            self.attentions = nn.ModuleList(Transformer2DModel(dim, depth) for _ in range(n))
        self.resnets = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n))

    return type(name, (nn.Module,), {"__init__": init})


CrossAttnDownBlock2D = block_class("CrossAttnDownBlock2D", True)
DownBlock2D = block_class("DownBlock2D", False)
UNetMidBlock2DCrossAttn = block_class("UNetMidBlock2DCrossAttn", True)
CrossAttnUpBlock2D = block_class("CrossAttnUpBlock2D", True)
UpBlock2D = block_class("UpBlock2D", False)


class UNet(nn.Module):
    """diffusers' UNet2DConditionModel layout: SD1.5 (3 cross-attention levels, depth 1) or SDXL (2 levels at 2× and
    4×, transformer depth 2 and 10, middle block depth 10), channels shrunk."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind == "sd15":
            self.down_blocks = nn.ModuleList([CrossAttnDownBlock2D(8, 2, 1), CrossAttnDownBlock2D(8, 2, 1),
                                              CrossAttnDownBlock2D(8, 2, 1), DownBlock2D(8, 2, 1)])  # fmt: skip
            self.mid_block = UNetMidBlock2DCrossAttn(8, 1, 1)
            self.up_blocks = nn.ModuleList([UpBlock2D(8, 3, 1), CrossAttnUpBlock2D(8, 3, 1),
                                            CrossAttnUpBlock2D(8, 3, 1), CrossAttnUpBlock2D(8, 3, 1)])  # fmt: skip
        else:
            self.down_blocks = nn.ModuleList([DownBlock2D(8, 2, 1), CrossAttnDownBlock2D(8, 2, 2),
                                              CrossAttnDownBlock2D(8, 2, 10)])  # fmt: skip
            self.mid_block = UNetMidBlock2DCrossAttn(8, 1, 10)
            self.up_blocks = nn.ModuleList([CrossAttnUpBlock2D(8, 3, 10), CrossAttnUpBlock2D(8, 3, 2),
                                            UpBlock2D(8, 3, 1)])  # fmt: skip


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_word_maps_use_exactly_the_layers_daam_traces(daam_hook, kind):
    unet = UNet(kind)
    daam = daam_hook["UNetCrossAttentionLocator"](restrict=None, locate_middle_block=False).locate(unet)
    sites = find_cross_attention(unet)
    # what HeatmapFeature leaves in the sums: every hooked layer but those it names in sum_exclude
    feature = HeatmapFeature(HeatmapSettings())
    ctx = SamplingContext(JobInfo(prompts=["a cat"], negative_prompts=[""], seeds=[1], steps=2), PatchSet(), unet,
                          BatchLayout.from_weights([[1.0]]), lambda text: None)  # fmt: skip
    feature.begin_sampling(ctx)
    try:
        excluded = feature._capture.options.sum_exclude
    finally:
        ctx.patches.restore()
    summed = [site.module for site in sites if site.short_name not in excluded]
    assert {id(m) for m in summed} == {id(m) for m in daam}
    assert len(daam) == (16 - 1 if kind == "sd15" else 70 - 10)  # attn2 in all: SD1.5 16, SDXL 70 (10 in the middle)
    # DAAM's locator with the middle block (its head saving/loading mode) is every attn2 we find
    everything = daam_hook["UNetCrossAttentionLocator"](locate_middle_block=True).locate(unet)
    assert {id(m) for m in everything} == {id(site.module) for site in sites}
