#!/usr/bin/env python3
"""Random-weight single-file checkpoints Forge Neo detects and loads, for PromptScope's live tier on Neo.

    <python with torch> tools/neo_checkpoints.py <folder> [--models sd15,sdxl] [--seed 0]

writes <folder>/<kind>/<file> (one folder per checkpoint, as Neo takes a folder: `--ckpt-dirs <folder>/sdxl`).

Forge Neo (unlike A1111) takes no config file with a checkpoint: it builds the UNet from the key names and shapes
it finds (`huggingface_guess`, after ComfyUI's model detection) and calls it SDXL only when the detected config has
SDXL's model_channels 320, transformer depths [0, 0, 2, 2, 10, 10] of the input blocks, context_dim 2048 and
adm_in_channels 2816; the text encoders and the VAE are built from configs it ships, at full size. What it does
not check — the channel multipliers, the output and middle blocks' depths — is kept small here, so the SDXL-shaped
checkpoint (`random-sdxl-neo.safetensors`) has SDXL's two text encoders (CLIP-L, OpenCLIP bigG), its VAE, its
conditioning (pooled text + size vector, 2816) and a UNet of SDXL's input layout at width 320 throughout (~2.4 GB in
fp16). `sdxl-full` is SDXL's own UNet layout (~6.9 GB). `sd15` is SD1.5's layout (the A1111 one of
tools/prepare_webui.py loads in Neo too).

Keys follow the original single-file layouts (ldm UNet and VAE, Hugging Face CLIP-L, OpenCLIP bigG). Values are
random (seeded); norm layers get weights around 1 and biases around 0.2 (the text encoders' emphasis rescaling
divides by a mean); other weights have a 1/sqrt(fan-in) scale. Tensors are written one at a time into the
safetensors file, so memory stays at one tensor. Needs only torch (e.g. Neo's own venv). Existing files are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

Spec = list[tuple[str, tuple[int, ...]]]

FILES = {"sd15": "random-sd15-neo.safetensors", "sdxl": "random-sdxl-neo.safetensors",
         "sdxl-full": "random-sdxl-full-neo.safetensors"}  # fmt: skip


@dataclass(frozen=True)
class UNetLayout:
    """An ldm `UNetModel` (openaimodel.py) as its state dict shows it."""

    model_channels: int
    channel_mult: tuple[int, ...]
    transformer_depth: tuple[int, ...]  # per level, input blocks
    transformer_depth_output: tuple[int, ...]  # per level, output blocks
    transformer_depth_middle: int
    context_dim: int
    linear_proj: bool  # SDXL: proj_in/proj_out are Linear; SD1: 1x1 convolutions
    adm_in_channels: int | None = None
    num_res_blocks: int = 2
    in_channels: int = 4
    out_channels: int = 4


SD15_UNET = UNetLayout(320, (1, 2, 4, 4), (1, 1, 1, 0), (1, 1, 1, 0), 1, 768, False)
SDXL_UNET = UNetLayout(320, (1, 2, 4), (0, 2, 10), (0, 2, 10), 10, 2048, True, 2816)
# What Neo's detection checks of SDXL, at width 320 throughout; one transformer per output and middle block.
SDXL_NEO_SMALL_UNET = UNetLayout(320, (1, 1, 1), (0, 2, 10), (0, 1, 1), 1, 2048, True, 2816)


def _resblock(p: str, cin: int, cout: int, emb: int) -> Spec:
    spec: Spec = [(f"{p}in_layers.0.weight", (cin,)), (f"{p}in_layers.0.bias", (cin,)),
                  (f"{p}in_layers.2.weight", (cout, cin, 3, 3)), (f"{p}in_layers.2.bias", (cout,)),
                  (f"{p}emb_layers.1.weight", (cout, emb)), (f"{p}emb_layers.1.bias", (cout,)),
                  (f"{p}out_layers.0.weight", (cout,)), (f"{p}out_layers.0.bias", (cout,)),
                  (f"{p}out_layers.3.weight", (cout, cout, 3, 3)), (f"{p}out_layers.3.bias", (cout,))]  # fmt: skip
    if cin != cout:
        spec += [(f"{p}skip_connection.weight", (cout, cin, 1, 1)), (f"{p}skip_connection.bias", (cout,))]
    return spec


def _transformer(p: str, ch: int, depth: int, ctx: int, linear: bool) -> Spec:
    proj = (ch, ch) if linear else (ch, ch, 1, 1)
    spec: Spec = [(f"{p}norm.weight", (ch,)), (f"{p}norm.bias", (ch,)),
                  (f"{p}proj_in.weight", proj), (f"{p}proj_in.bias", (ch,))]  # fmt: skip
    for d in range(depth):
        b = f"{p}transformer_blocks.{d}."
        for attn, kv in (("attn1", ch), ("attn2", ctx)):
            spec += [(f"{b}{attn}.to_q.weight", (ch, ch)), (f"{b}{attn}.to_k.weight", (ch, kv)),
                     (f"{b}{attn}.to_v.weight", (ch, kv)), (f"{b}{attn}.to_out.0.weight", (ch, ch)),
                     (f"{b}{attn}.to_out.0.bias", (ch,))]  # fmt: skip
        spec += [(f"{b}ff.net.0.proj.weight", (ch * 8, ch)), (f"{b}ff.net.0.proj.bias", (ch * 8,)),
                 (f"{b}ff.net.2.weight", (ch, ch * 4)), (f"{b}ff.net.2.bias", (ch,))]  # fmt: skip
        for n in (1, 2, 3):
            spec += [(f"{b}norm{n}.weight", (ch,)), (f"{b}norm{n}.bias", (ch,))]
    return [*spec, (f"{p}proj_out.weight", proj), (f"{p}proj_out.bias", (ch,))]


def unet_spec(u: UNetLayout, prefix: str = "model.diffusion_model.") -> Spec:
    c, emb = u.model_channels, u.model_channels * 4
    p = prefix
    spec: Spec = [(f"{p}time_embed.0.weight", (emb, c)), (f"{p}time_embed.0.bias", (emb,)),
                  (f"{p}time_embed.2.weight", (emb, emb)), (f"{p}time_embed.2.bias", (emb,))]  # fmt: skip
    if u.adm_in_channels:
        spec += [(f"{p}label_emb.0.0.weight", (emb, u.adm_in_channels)), (f"{p}label_emb.0.0.bias", (emb,)),
                 (f"{p}label_emb.0.2.weight", (emb, emb)), (f"{p}label_emb.0.2.bias", (emb,))]  # fmt: skip
    spec += [(f"{p}input_blocks.0.0.weight", (c, u.in_channels, 3, 3)), (f"{p}input_blocks.0.0.bias", (c,))]
    ch, chans, block = c, [c], 1
    for level, mult in enumerate(u.channel_mult):
        for _ in range(u.num_res_blocks):
            b = f"{p}input_blocks.{block}."
            spec += _resblock(f"{b}0.", ch, mult * c, emb)
            ch = mult * c
            if u.transformer_depth[level]:
                spec += _transformer(f"{b}1.", ch, u.transformer_depth[level], u.context_dim, u.linear_proj)
            chans.append(ch)
            block += 1
        if level != len(u.channel_mult) - 1:
            spec += [
                (f"{p}input_blocks.{block}.0.op.weight", (ch, ch, 3, 3)),
                (f"{p}input_blocks.{block}.0.op.bias", (ch,)),
            ]
            chans.append(ch)
            block += 1
    spec += _resblock(f"{p}middle_block.0.", ch, ch, emb)
    spec += _transformer(f"{p}middle_block.1.", ch, u.transformer_depth_middle, u.context_dim, u.linear_proj)
    spec += _resblock(f"{p}middle_block.2.", ch, ch, emb)
    block = 0
    for level, mult in reversed(list(enumerate(u.channel_mult))):
        for i in range(u.num_res_blocks + 1):
            b = f"{p}output_blocks.{block}."
            spec += _resblock(f"{b}0.", ch + chans.pop(), mult * c, emb)
            ch, layer = mult * c, 1
            if u.transformer_depth_output[level]:
                spec += _transformer(f"{b}1.", ch, u.transformer_depth_output[level], u.context_dim, u.linear_proj)
                layer = 2
            if level and i == u.num_res_blocks:
                spec += [(f"{b}{layer}.conv.weight", (ch, ch, 3, 3)), (f"{b}{layer}.conv.bias", (ch,))]
            block += 1
    return [*spec, (f"{p}out.0.weight", (ch,)), (f"{p}out.0.bias", (ch,)),
            (f"{p}out.2.weight", (u.out_channels, c, 3, 3)), (f"{p}out.2.bias", (u.out_channels,))]  # fmt: skip


def _vae_resblock(p: str, cin: int, cout: int) -> Spec:
    spec: Spec = [(f"{p}norm1.weight", (cin,)), (f"{p}norm1.bias", (cin,)),
                  (f"{p}conv1.weight", (cout, cin, 3, 3)), (f"{p}conv1.bias", (cout,)),
                  (f"{p}norm2.weight", (cout,)), (f"{p}norm2.bias", (cout,)),
                  (f"{p}conv2.weight", (cout, cout, 3, 3)), (f"{p}conv2.bias", (cout,))]  # fmt: skip
    if cin != cout:
        spec += [(f"{p}nin_shortcut.weight", (cout, cin, 1, 1)), (f"{p}nin_shortcut.bias", (cout,))]
    return spec


def _vae_mid(p: str, ch: int) -> Spec:
    attn = [(f"{p}attn_1.norm.weight", (ch,)), (f"{p}attn_1.norm.bias", (ch,))]
    for name in ("q", "k", "v", "proj_out"):
        attn += [(f"{p}attn_1.{name}.weight", (ch, ch, 1, 1)), (f"{p}attn_1.{name}.bias", (ch,))]
    return [*_vae_resblock(f"{p}block_1.", ch, ch), *attn, *_vae_resblock(f"{p}block_2.", ch, ch)]


def vae_spec(prefix: str = "first_stage_model.", ch: int = 128, mult: tuple[int, ...] = (1, 2, 4, 4)) -> Spec:
    """ldm's AutoencoderKL (the same for SD1.5 and SDXL)."""
    p, e, d = prefix, f"{prefix}encoder.", f"{prefix}decoder."
    spec: Spec = [(f"{e}conv_in.weight", (ch, 3, 3, 3)), (f"{e}conv_in.bias", (ch,))]
    cin = ch
    for i, m in enumerate(mult):
        for j in range(2):
            spec += _vae_resblock(f"{e}down.{i}.block.{j}.", cin, ch * m)
            cin = ch * m
        if i != len(mult) - 1:
            spec += [
                (f"{e}down.{i}.downsample.conv.weight", (cin, cin, 3, 3)),
                (f"{e}down.{i}.downsample.conv.bias", (cin,)),
            ]
    spec += _vae_mid(f"{e}mid.", cin)
    spec += [(f"{e}norm_out.weight", (cin,)), (f"{e}norm_out.bias", (cin,)),
             (f"{e}conv_out.weight", (8, cin, 3, 3)), (f"{e}conv_out.bias", (8,)),
             (f"{d}conv_in.weight", (cin, 4, 3, 3)), (f"{d}conv_in.bias", (cin,))]  # fmt: skip
    spec += _vae_mid(f"{d}mid.", cin)
    for i in reversed(range(len(mult))):
        for j in range(3):
            spec += _vae_resblock(f"{d}up.{i}.block.{j}.", cin, ch * mult[i])
            cin = ch * mult[i]
        if i:
            spec += [(f"{d}up.{i}.upsample.conv.weight", (cin, cin, 3, 3)), (f"{d}up.{i}.upsample.conv.bias", (cin,))]
    return [*spec, (f"{d}norm_out.weight", (cin,)), (f"{d}norm_out.bias", (cin,)),
            (f"{d}conv_out.weight", (3, cin, 3, 3)), (f"{d}conv_out.bias", (3,)),
            (f"{p}quant_conv.weight", (8, 8, 1, 1)), (f"{p}quant_conv.bias", (8,)),
            (f"{p}post_quant_conv.weight", (4, 4, 1, 1)), (f"{p}post_quant_conv.bias", (4,))]  # fmt: skip


def clip_l_spec(prefix: str) -> Spec:
    """CLIP ViT-L/14's text model in Hugging Face's layout (`<prefix>text_model.…`)."""
    p, w = f"{prefix}text_model.", 768
    spec: Spec = [(f"{p}embeddings.token_embedding.weight", (49408, w)),
                  (f"{p}embeddings.position_embedding.weight", (77, w))]  # fmt: skip
    for i in range(12):
        b = f"{p}encoder.layers.{i}."
        for proj in ("k", "v", "q", "out"):
            spec += [(f"{b}self_attn.{proj}_proj.weight", (w, w)), (f"{b}self_attn.{proj}_proj.bias", (w,))]
        spec += [(f"{b}layer_norm1.weight", (w,)), (f"{b}layer_norm1.bias", (w,)),
                 (f"{b}mlp.fc1.weight", (4 * w, w)), (f"{b}mlp.fc1.bias", (4 * w,)),
                 (f"{b}mlp.fc2.weight", (w, 4 * w)), (f"{b}mlp.fc2.bias", (w,)),
                 (f"{b}layer_norm2.weight", (w,)), (f"{b}layer_norm2.bias", (w,))]  # fmt: skip
    return [*spec, (f"{p}final_layer_norm.weight", (w,)), (f"{p}final_layer_norm.bias", (w,))]


def clip_g_spec(prefix: str = "conditioner.embedders.1.model.") -> Spec:
    """OpenCLIP ViT-bigG/14's text tower in OpenCLIP's layout, as SDXL checkpoints store it."""
    p, w = prefix, 1280
    spec: Spec = [(f"{p}positional_embedding", (77, w)), (f"{p}token_embedding.weight", (49408, w))]
    for i in range(32):
        b = f"{p}transformer.resblocks.{i}."
        spec += [(f"{b}ln_1.weight", (w,)), (f"{b}ln_1.bias", (w,)),
                 (f"{b}attn.in_proj_weight", (3 * w, w)), (f"{b}attn.in_proj_bias", (3 * w,)),
                 (f"{b}attn.out_proj.weight", (w, w)), (f"{b}attn.out_proj.bias", (w,)),
                 (f"{b}ln_2.weight", (w,)), (f"{b}ln_2.bias", (w,)),
                 (f"{b}mlp.c_fc.weight", (4 * w, w)), (f"{b}mlp.c_fc.bias", (4 * w,)),
                 (f"{b}mlp.c_proj.weight", (w, 4 * w)), (f"{b}mlp.c_proj.bias", (w,))]  # fmt: skip
    return [*spec, (f"{p}ln_final.weight", (w,)), (f"{p}ln_final.bias", (w,)),
            (f"{p}text_projection", (w, w)), (f"{p}logit_scale", ())]  # fmt: skip


def checkpoint_spec(kind: str) -> Spec:
    if kind == "sd15":
        return [*unet_spec(SD15_UNET), *vae_spec(), *clip_l_spec("cond_stage_model.transformer.")]
    unet = SDXL_UNET if kind == "sdxl-full" else SDXL_NEO_SMALL_UNET
    return [*unet_spec(unet), *vae_spec(), *clip_l_spec("conditioner.embedders.0.transformer."), *clip_g_spec()]


_NORM_PARTS = ("norm", "ln_", "layer_norm", "in_layers.0.", "out_layers.0.", "out.0.", "ln_final")


def _is_norm(key: str) -> bool:
    return any(part in key for part in _NORM_PARTS)


def random_tensors(spec: Spec, seed: int) -> Iterator[tuple[str, object]]:
    """(key, fp16 torch tensor) in spec order; each value depends only on the seed and its key."""
    import torch

    for key, shape in spec:
        gen = torch.Generator().manual_seed(seed * 2**32 + zlib.crc32(key.encode()))
        if not shape:
            value = torch.tensor(math.log(100.0))  # logit_scale
        elif _is_norm(key) and len(shape) == 1:
            base = 1.0 if key.endswith("weight") else 0.2
            value = base + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            value = 0.02 * torch.randn(shape, generator=gen)
        else:
            value = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        yield key, value.to(torch.float16)


def write_safetensors(path: Path, spec: Spec, seed: int, metadata: dict[str, str]) -> int:
    """Writes the header from the spec, then each tensor as it is made (fp16, little-endian). Returns bytes."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for key, shape in spec:
        size = 2 * math.prod(shape)
        header[key] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _key, value in random_tensors(spec, seed):
            f.write(value.contiguous().numpy().tobytes())  # type: ignore[attr-defined]
    os.replace(part, path)
    return 8 + len(raw) + offset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="where to write them, one subfolder per checkpoint")
    ap.add_argument("--models", default="sdxl", help=f"comma-separated: {', '.join(FILES)}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FILES]
    if unknown:
        print(f"--models: unknown {unknown}; known: {', '.join(FILES)}", file=sys.stderr)
        return 2
    for kind in kinds:
        out = args.folder / kind / FILES[kind]
        if out.exists():
            print(f"[neo_checkpoints] {out} exists")
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        spec = checkpoint_spec(kind)
        meta = {"promptscope": f"random weights, seed {args.seed}, {kind} (tools/neo_checkpoints.py)"}
        size = write_safetensors(out, spec, args.seed, meta)
        print(f"[neo_checkpoints] {out}: {sum(math.prod(s) for _k, s in spec) / 1e6:.0f} M values, {size / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
