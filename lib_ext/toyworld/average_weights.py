"""Averages exported toy-world checkpoints of one architecture into one file (a "model soup").

    python -m lib_ext.toyworld.average_weights OUT.safetensors A.safetensors B.safetensors [...]

Fine-tunings that start from the same file stay in one basin, so their mean weights usually sample better than
any one of them (Wortsman et al. 2022, "Model soups"); it costs no training. Floating-point tensors are averaged
in float32 and stored in their own dtype; any other tensor (an integer buffer) must be equal in every input. The
first input's metadata is kept, with an ``averaged_from`` entry naming each input and its SHA-256, so the file
says what it is made of.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..bandit.store import sha256_file as sha256


def average(paths: list[Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(mean tensors, metadata) of the given checkpoints; refuses files whose keys, shapes or dtypes differ."""
    if len(paths) < 2:
        raise ValueError("give at least two checkpoints to average")
    with safe_open(str(paths[0]), "pt") as first:
        meta = dict(first.metadata() or {})
        keys = sorted(first.keys())
        sums = {k: first.get_tensor(k) for k in keys}
    dtypes = {k: t.dtype for k, t in sums.items()}
    sums = {k: t.float() if t.is_floating_point() else t for k, t in sums.items()}
    for path in paths[1:]:
        with safe_open(str(path), "pt") as f:
            other = sorted(f.keys())
            if other != keys:
                missing, extra = sorted(set(keys) - set(other)), sorted(set(other) - set(keys))
                raise ValueError(f"{path}: tensors differ from {paths[0]} (missing {missing[:3]}, extra {extra[:3]})")
            for k in keys:
                t = f.get_tensor(k)
                if t.shape != sums[k].shape or t.dtype != dtypes[k]:
                    want = f"{dtypes[k]} {tuple(sums[k].shape)}"
                    raise ValueError(f"{path}: {k} is {t.dtype} {tuple(t.shape)}, not {want}")
                if t.is_floating_point():
                    sums[k] += t.float()
                elif not torch.equal(t, sums[k]):
                    raise ValueError(f"{path}: integer tensor {k} differs from {paths[0]}'s; cannot average it")
    n = len(paths)
    out = {k: (v / n).to(dtypes[k]) if v.is_floating_point() else v for k, v in sums.items()}
    meta["averaged_from"] = json.dumps([{"file": p.name, "sha256": sha256(p)} for p in paths])
    return out, meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("inputs", type=Path, nargs="+")
    args = ap.parse_args(argv)
    if args.out.resolve() in {p.resolve() for p in args.inputs}:
        raise SystemExit("the output must not be one of the inputs")
    try:
        tensors, meta = average(args.inputs)
    except (ValueError, OSError) as e:
        raise SystemExit(str(e)) from e
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=meta)
    print(f"wrote {args.out}: mean of {len(args.inputs)} checkpoints")


if __name__ == "__main__":
    main()
