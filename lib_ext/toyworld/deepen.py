"""Adds one res block (with its transformer) per UNet level to an exported toy-world checkpoint, keeping its output.

    python -m lib_ext.toyworld.deepen OUT.safetensors IN.safetensors

The shipped UNet (`num_res_blocks` 1) merges two objects of one colour and draws objects twice, and fine-tuning it
longer has not removed either. More depth is the capacity lever that does not need training from scratch: every
new block starts as the identity, so the deeper model draws exactly what the old one drew (Net2Net's "deeper",
Chen et al. 2016) and training starts from there (`train_ldm --init-from OUT`).

Why the identity is exact, in ldm's layout: a ResBlock's last convolution and a SpatialTransformer's `proj_out`
start at zero, so a new block between equal channel counts returns its input. On the way down, the new block of a
level comes last, so the skip it pushes equals the one before it. On the way up, a level's blocks pop those skips
in reverse; the new block is second: the level's first (old) block pops the new skip (equal to the one it popped
before), the new block pops the old skip and passes its input through (its 1×1 skip convolution is [I | 0] over
the concatenation), and the rest pop what they popped before. The text model is unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from .ldm_model import LdmConfig, LdmUNet


def _input_roles(cfg: LdmConfig) -> list[tuple]:
    """ldm's input blocks in order: ("conv",), ("res", level, i) or ("down", level)."""
    roles: list[tuple] = [("conv",)]
    for level in range(len(cfg.channel_mult)):
        roles += [("res", level, i) for i in range(cfg.num_res_blocks)]
        if level != len(cfg.channel_mult) - 1:
            roles.append(("down", level))
    return roles


def _output_roles(cfg: LdmConfig) -> list[tuple[int, int]]:
    """ldm's output blocks in order: (level, i), deepest level first."""
    return [(level, i) for level in reversed(range(len(cfg.channel_mult))) for i in range(cfg.num_res_blocks + 1)]


def deepen(unet: LdmUNet, seed: int = 0) -> LdmUNet:
    """A UNet with one more res block per level that computes what `unet` computes (new weights seeded by `seed`)."""
    cfg = dataclasses.replace(unet.cfg, num_res_blocks=unet.cfg.num_res_blocks + 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        deep = LdmUNet(cfg)
    n = unet.cfg.num_res_blocks
    new_in = {role: k for k, role in enumerate(_input_roles(cfg))}
    new_out = {role: k for k, role in enumerate(_output_roles(cfg))}
    in_map = {k: new_in[role] for k, role in enumerate(_input_roles(unet.cfg))}
    # an old output block keeps its place in the level but the first: the new block goes second
    out_map = {k: new_out[(level, i if i == 0 else i + 1)] for k, (level, i) in enumerate(_output_roles(unet.cfg))}

    state = deep.state_dict()
    for name, value in unet.state_dict().items():
        head, _, rest = name.partition(".")
        if head in ("input_blocks", "output_blocks"):
            index, _, tail = rest.partition(".")
            moved = (in_map if head == "input_blocks" else out_map)[int(index)]
            name = f"{head}.{moved}.{tail}"
        if state[name].shape != value.shape:
            raise ValueError(f"{name}: {tuple(value.shape)} does not fit {tuple(state[name].shape)}")
        state[name] = value.clone()
    for level in range(len(cfg.channel_mult)):
        down = deep.input_blocks[new_in[("res", level, n)]]
        if not isinstance(down[0].skip_connection, torch.nn.Identity):
            raise ValueError(f"level {level}: a new down block must keep its channel count")
        up = f"output_blocks.{new_out[(level, 1)]}.0.skip_connection"
        w = torch.zeros_like(state[f"{up}.weight"])
        out_ch = w.shape[0]
        w[:, :out_ch, 0, 0] = torch.eye(out_ch)  # pass the running features, drop the skip
        state[f"{up}.weight"], state[f"{up}.bias"] = w, torch.zeros_like(state[f"{up}.bias"])
    deep.load_state_dict(state)
    for level in range(len(cfg.channel_mult)):  # the new blocks' residual branches must start at zero
        for block in (deep.input_blocks[new_in[("res", level, n)]], deep.output_blocks[new_out[(level, 1)]]):
            last = [block[0].out_layers[3], block[1].proj_out]
            if any(t.abs().max() != 0 for m in last for t in (m.weight, m.bias)):
                raise AssertionError(f"level {level}: a new block's residual branch does not start at zero")
    return deep


def main(argv: list[str] | None = None) -> None:
    from .ldm_weights import export_checkpoint_file, load_ldm_toyworld

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("source", type=Path)
    ap.add_argument("--seed", type=int, default=0, help="seeds the new blocks' other weights")
    args = ap.parse_args(argv)
    if args.out.resolve() == args.source.resolve():
        raise SystemExit("write the deeper checkpoint to a new file")
    te, unet, _cfg, info = load_ldm_toyworld(args.source)
    deep = deepen(unet, args.seed)
    info = {**info, "deepened_from": args.source.name, "deepened_at_step": info.get("steps", 0)}
    export_checkpoint_file(args.out, te, deep, deep.cfg, info)
    old = sum(p.numel() for p in unet.parameters())
    new = sum(p.numel() for p in deep.parameters())
    print(f"wrote {args.out}: num_res_blocks {unet.cfg.num_res_blocks} → {deep.cfg.num_res_blocks}, {old:,} → {new:,}")


if __name__ == "__main__":
    main()
