"""tools/neo_checkpoints.py: the key layouts match the published models, the SDXL-shaped one passes what Forge Neo's
detection checks for SDXL, and the streaming writer gives a file safetensors reads."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

TOOL = Path(__file__).resolve().parents[3] / "tools" / "neo_checkpoints.py"
_spec = importlib.util.spec_from_file_location("neo_checkpoints", TOOL)
assert _spec is not None and _spec.loader is not None
nc = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = nc  # its dataclasses look their module up
_spec.loader.exec_module(nc)


def _params(spec: nc.Spec) -> int:
    return sum(math.prod(shape) for _key, shape in spec)


def test_layouts_have_the_published_parameter_counts() -> None:
    assert _params(nc.unet_spec(nc.SD15_UNET)) == 859_520_964  # SD1.5's UNet
    sdxl = nc.unet_spec(nc.SDXL_UNET)
    assert len(sdxl) == 1680 and _params(sdxl) == 2_567_463_684  # SDXL base's UNet
    assert _params(nc.clip_g_spec()) == 694_659_841  # OpenCLIP bigG's text tower
    assert _params(nc.vae_spec()) == 83_653_863  # the SD/SDXL VAE


def _input_block_depths(spec: nc.Spec) -> list[int]:
    """Transformer blocks per input block, as Neo's detection counts them (blocks 1.. that hold a resblock)."""
    keys = [k for k, _s in spec]
    depths = []
    for i in range(1, 100):
        if f"model.diffusion_model.input_blocks.{i}.0.in_layers.0.weight" not in keys:
            if not any(k.startswith(f"model.diffusion_model.input_blocks.{i}.") for k in keys):
                break
            continue  # a downsampler
        found = {
            m.group(1)
            for k in keys
            if (m := re.match(rf"model\.diffusion_model\.input_blocks\.{i}\.1\.transformer_blocks\.(\d+)\.", k))
        }
        depths.append(len(found))
    return depths


def test_the_small_sdxl_has_what_neo_checks_for_sdxl() -> None:
    spec = dict(nc.checkpoint_spec("sdxl"))
    assert spec["model.diffusion_model.input_blocks.0.0.weight"][0] == 320  # model_channels
    assert spec["model.diffusion_model.label_emb.0.0.weight"][1] == 2816  # adm_in_channels
    assert spec["model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"][1] == 2048
    assert len(spec["model.diffusion_model.input_blocks.4.1.proj_in.weight"]) == 2  # use_linear_in_transformer
    assert spec["model.diffusion_model.out.2.weight"][0] == 4
    assert _input_block_depths(list(spec.items())) == [0, 0, 2, 2, 10, 10]
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in spec
    assert "conditioner.embedders.1.model.text_projection" in spec
    assert _params(list(spec.items())) < 1.1e9


def test_writer_streams_a_file_safetensors_reads(tmp_path: Path) -> None:
    spec: nc.Spec = [("a.norm.weight", (3,)), ("a.proj.weight", (4, 3, 1, 1)), ("b.logit_scale", ()), ("c.bias", (2,))]
    path = tmp_path / "x.safetensors"
    size = nc.write_safetensors(path, spec, seed=1, metadata={"k": "v"})
    assert path.stat().st_size == size
    state = load_file(str(path))
    assert {k: tuple(v.shape) for k, v in state.items()} == dict(spec)
    assert all(v.dtype == torch.float16 for v in state.values())
    assert (state["a.norm.weight"] - 1).abs().max() < 0.6  # norms around 1
    again = tmp_path / "y.safetensors"
    nc.write_safetensors(again, spec, seed=1, metadata={})
    assert all(torch.equal(state[k], v) for k, v in load_file(str(again)).items())
