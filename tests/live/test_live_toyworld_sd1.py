"""The toy world's SD1 checkpoint in the WebUI's own classes: the checkout's ldm UNetModel and AutoencoderKL and
transformers' CLIPTextModel/CLIPTokenizer (built from the yaml and the Hugging Face entry tools/prepare_webui.py
writes) load the shipped tensors strictly and compute what the toy host computes; and the running WebUI lists the
checkpoint and draws a 256x256 picture with it. The script runs in the WebUI's interpreter (no server needed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.live.webui_harness import OFFLINE_ENV, WebUIConfig, is_forge_neo

pytestmark = pytest.mark.live
REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "lib_ext" / "toyworld" / "weights" / "toyworld-sd1.safetensors"

SCRIPT = r"""
import json, os, sys
import torch
checkout, repo, weights = sys.argv[1:4]
sys.path[:0] = [os.path.join(checkout, "repositories", "stable-diffusion-stability-ai"), repo]
import transformers
from omegaconf import OmegaConf
from safetensors.torch import load_file
from ldm.util import instantiate_from_config
from lib_ext.toyworld.clip_bpe import ClipTokenizer
from lib_ext.toyworld.ldm_model import pixels_from_latent
from lib_ext.toyworld.ldm_weights import load_ldm_toyworld

cfg = OmegaConf.load(weights[: -len(".safetensors")] + ".yaml").model.params
state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(weights).items()}
def part(prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
out = {}
unet = instantiate_from_config(cfg.unet_config).eval()
unet.load_state_dict(part("model.diffusion_model."), strict=True)
vae = instantiate_from_config(cfg.first_stage_config).eval()
vae.load_state_dict(part("first_stage_model."), strict=True)
name = cfg.cond_stage_config.params.version
text = transformers.CLIPTextModel(transformers.CLIPTextConfig.from_pretrained(name)).eval()
text.load_state_dict(part("cond_stage_model.transformer."), strict=True)
tokenizer = transformers.CLIPTokenizer.from_pretrained(name)
te, our_unet, _, _ = load_ldm_toyworld(weights)
ours = ClipTokenizer()
prompts = ["a vermilion roundel and a blue square", "a 赤 triangle, (red:1.3)", "猫 ねこ cerulean BREAK circle"]
out["tokens_equal"] = all(tokenizer(p, add_special_tokens=False)["input_ids"] == ours.encode(p) for p in prompts)
g = torch.Generator().manual_seed(0)
ids = torch.tensor([[49406] + ours.encode(prompts[0]) + [49407] * (76 - len(ours.encode(prompts[0])))])
with torch.no_grad():
    out["text_max_diff"] = (text(input_ids=ids).last_hidden_state - te(ids)).abs().max().item()
    ctx = te(ids).repeat(2, 1, 1)
    x = torch.randn(2, 4, 32, 32, generator=g)
    t = torch.tensor([15.5, 800.0])
    theirs = unet(x, t, context=ctx)
    out["unet_max_diff"] = (theirs - our_unet(x, t, ctx)).abs().max().item()
    out["unet_scale"] = theirs.abs().max().item()
    z = torch.rand(1, 4, 32, 32, generator=g) * 2 - 1
    out["decode_max_diff"] = (vae.decode(z) - pixels_from_latent(z)).abs().max().item()
    out["encode_max_diff"] = (vae.encode(pixels_from_latent(z)).mode()[:, :3] - z[:, :3]).abs().max().item()
print(json.dumps(out))
"""


def test_checkpoint_in_the_webuis_own_classes() -> None:
    config = WebUIConfig.from_env()
    assert config is not None
    if is_forge_neo(config.checkout):
        pytest.skip("an A1111 fact: Forge Neo builds SD1 models with its own classes")
    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS} is not in this checkout")
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("PYTHONPATH", None)
    res = subprocess.run([str(config.python), "-c", SCRIPT, str(config.checkout), str(REPO), str(WEIGHTS)],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["tokens_equal"], out
    assert out["text_max_diff"] < 1e-4, out
    # the same maths in another order (ldm's attention vs ours): fp32 rounding, relative to the output's size
    assert out["unet_max_diff"] < 1e-4 * max(1.0, out["unet_scale"]), (out["unet_max_diff"], out["unet_scale"])
    assert out["decode_max_diff"] < 2e-3, out  # fp16-stored constants of the constructed autoencoder
    assert out["encode_max_diff"] < 2e-3, out
