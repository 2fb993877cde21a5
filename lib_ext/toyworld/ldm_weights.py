"""The toy world's SD1-format checkpoint: writing it (training), reading it (toy host), and its WebUI yaml.

One `.safetensors` file with the names a WebUI loads (`model.diffusion_model.*`, `cond_stage_model.transformer.*`,
`first_stage_model.*`) and `toyworld-sd1.yaml` beside it, a copy of SD1's `v1-inference.yaml` with tiny sizes, the
latent scale factor 1 and the text model's config named `promptscope/toyworld-clip` (an offline Hugging Face cache
entry that `tools/prepare_webui.py` writes: CLIP's tokenizer with this config).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .ldm_model import ClipTextModel, LdmConfig, LdmUNet, vae_ddconfig, vae_state_dict

WEIGHTS_DIR = Path(__file__).with_name("weights")
DEFAULT_LDM_WEIGHTS = WEIGHTS_DIR / "toyworld-sd1.safetensors"
DEFAULT_LDM_YAML = WEIGHTS_DIR / "toyworld-sd1.yaml"
CLIP_NAME = "promptscope/toyworld-clip"
FORMAT = "toyworld-sd1"

UNET = "model.diffusion_model."
TEXT = "cond_stage_model.transformer."
VAE = "first_stage_model."


def checkpoint_state(te: ClipTextModel, unet: LdmUNet, cfg: LdmConfig) -> dict[str, torch.Tensor]:
    state = {UNET + k: v for k, v in unet.state_dict().items()}
    state.update({TEXT + k: v for k, v in te.state_dict().items()})
    state.update({VAE + k: v for k, v in vae_state_dict(cfg).items()})
    return state


def export_checkpoint_file(path: Path, te: ClipTextModel, unet: LdmUNet, cfg: LdmConfig, info: dict) -> None:
    """Writes the checkpoint (fp16; position ids stay integers) and its yaml beside it."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in checkpoint_state(te, unet, cfg).items()
    }
    meta = {"format": FORMAT, "config": json.dumps(cfg.to_dict()), "train": json.dumps(info)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    path.with_suffix(".yaml").write_text(webui_yaml(cfg), encoding="utf8")


def is_sd1_checkpoint(path: Path | str) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("format") == FORMAT


def read_config(path: Path | str) -> tuple[LdmConfig, dict[str, str]]:
    """(model config, metadata) of a toy-world SD1 checkpoint, without reading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a toy-world SD1 checkpoint (format {meta.get('format')!r})")
    return LdmConfig.from_dict(json.loads(meta["config"])), meta


def load_ldm_toyworld(
    path: Path | str = DEFAULT_LDM_WEIGHTS, device: str | torch.device = "cpu"
) -> tuple[ClipTextModel, LdmUNet, LdmConfig, dict]:
    """(text model, UNet, config, training info) in eval mode, fp32. The autoencoder is not loaded: it is the fixed
    8×8 block map of `ldm_model.latent_from_pixels` / `pixels_from_latent`; a check compares the file's tensors."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg, meta = read_config(path)
    state = load_file(str(path))
    te, unet = ClipTextModel(cfg), LdmUNet(cfg)
    te.load_state_dict(
        {k[len(TEXT) :]: v.float() if v.is_floating_point() else v for k, v in state.items() if k.startswith(TEXT)}
    )
    unet.load_state_dict({k[len(UNET) :]: v.float() for k, v in state.items() if k.startswith(UNET)})
    vae = {k[len(VAE) :]: v.float() for k, v in state.items() if k.startswith(VAE)}
    expected = vae_state_dict(cfg)
    if set(vae) != set(expected) or any(not torch.allclose(vae[k], expected[k], atol=0.05, rtol=1e-3) for k in vae):
        raise ValueError(f"{path}: its autoencoder is not the constructed 8×8 block map the toy host assumes")
    te.eval().to(device)
    unet.eval().to(device)
    return te, unet, cfg, json.loads(meta.get("train", "{}"))


def webui_yaml(cfg: LdmConfig) -> str:
    """The LatentDiffusion config a WebUI reads from the `.yaml` beside the checkpoint."""
    dd = vae_ddconfig(cfg)

    def flow(values: list) -> str:
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    attn_res = flow([2**i for i in range(len(cfg.channel_mult))])
    lines = [
        "# The toy world as an SD1 checkpoint (PromptScope, lib_ext/toyworld/ldm_weights.py).",
        "# Tiny sizes; latent scale 1:",
        "# the autoencoder maps each 8x8 pixel block to one latent pixel (RGB, 0).",
        "model:",
        "  base_learning_rate: 1.0e-04",
        "  target: ldm.models.diffusion.ddpm.LatentDiffusion",
        "  params:",
        "    linear_start: 0.00085",
        "    linear_end: 0.0120",
        "    num_timesteps_cond: 1",
        "    log_every_t: 200",
        "    timesteps: 1000",
        "    first_stage_key: jpg",
        "    cond_stage_key: txt",
        f"    image_size: {cfg.image_size}",
        f"    channels: {cfg.in_channels}",
        "    cond_stage_trainable: false",
        "    conditioning_key: crossattn",
        "    monitor: val/loss_simple_ema",
        "    scale_factor: 1.0",
        *([f"    parameterization: {cfg.prediction}"] if cfg.prediction != "eps" else []),
        "    use_ema: false",
        "    unet_config:",
        "      target: ldm.modules.diffusionmodules.openaimodel.UNetModel",
        "      params:",
        f"        image_size: {cfg.image_size}",
        f"        in_channels: {cfg.in_channels}",
        f"        out_channels: {cfg.in_channels}",
        f"        model_channels: {cfg.model_channels}",
        f"        attention_resolutions: {attn_res}",
        f"        num_res_blocks: {cfg.num_res_blocks}",
        f"        channel_mult: {flow(list(cfg.channel_mult))}",
        f"        num_head_channels: {cfg.num_head_channels}",
        f"        disable_self_attentions: {flow([bool(x) for x in cfg.disable_self_attentions])}",
        "        use_spatial_transformer: true",
        "        transformer_depth: 1",
        f"        context_dim: {cfg.text_dim}",
        "        use_checkpoint: false",
        "        legacy: false",
        "    first_stage_config:",
        "      target: ldm.models.autoencoder.AutoencoderKL",
        "      params:",
        "        embed_dim: 4",
        "        monitor: val/rec_loss",
        "        ddconfig:",
        *[f"          {k}: {flow(v) if isinstance(v, list) else json.dumps(v)}" for k, v in dd.items()],
        "        lossconfig:",
        "          target: torch.nn.Identity",
        "    cond_stage_config:",
        "      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder",
        "      params:",
        f"        version: {CLIP_NAME}",
    ]
    return "\n".join(lines) + "\n"


def hf_text_config(cfg: LdmConfig) -> dict:
    """The text part of the Hugging Face config the WebUI builds the text model from (`CLIP_NAME`)."""
    return {
        "hidden_size": cfg.text_dim,
        "intermediate_size": cfg.text_intermediate,
        "num_attention_heads": cfg.text_heads,
        "num_hidden_layers": cfg.text_layers,
        "max_position_embeddings": cfg.max_positions,
        "vocab_size": cfg.vocab_size,
        "hidden_act": "quick_gelu",
    }
