"""Trains the toy text-to-image model on procedural scenes; resumable, deterministic for a given seed and step count.

    python -m lib_ext.toyworld.train --minutes 90 --out lib_ext/toyworld/weights/toyworld.safetensors [--resume]

Objective: DDPM ε-prediction MSE (linear β schedule, timesteps 0..999) plus an attention loss that ties each colour
and shape word's cross-attention map (mean over heads, every attn2 layer at 32×32, 16×16 and 8×8) to the mask of the
object it describes: KL(mask distribution ‖ attention distribution) over the pixels. Captions: 10% empty (the CFG
unconditional prompt), 15% partial captions of one-object scenes ("red", "circle", "red circle"), the rest full
captions of 1–3 object scenes. The exported weights are the EMA of the parameters.

A checkpoint with optimizer, EMA and RNG states is written outside git (work/…) every few minutes; --resume continues
from it. The stopping point is wall-time (--minutes) or --max-steps; given the same seed, the weights after N steps
are the same whether or not the run was resumed in between.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

# The CPU is shared: spinning OpenMP workers collapse throughput when other processes compete for the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

from .model import ToyConfig, ToyTextEncoder, ToyUNet, count_params
from .scenes import random_scene
from .schedule import NAME as SCHEDULE_NAME
from .schedule import alphas_cumprod
from .tokenizer import ToyTokenizer
from .vocab import IMAGE_SIZE

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    ids: torch.Tensor  # (B, 77) long
    masks: torch.Tensor  # (B, 77, H, W) float: ground-truth mask of the token's object, zero if unsupervised
    supervised: torch.Tensor  # (B, 77) bool: colour/shape tokens with a mask


def training_caption(rng: np.random.Generator) -> tuple[str, np.ndarray, list[tuple[int, np.ndarray]]]:
    """One training example: (caption, image, [(word index in caption, mask)])."""
    u = rng.random()
    if u < 0.10:  # empty prompt = CFG's unconditional
        scene = random_scene(rng, (1, 3))
        return "", scene.image, []
    if u < 0.25:  # partial captions of a one-object scene, so single concepts ("red") steer the model
        scene = random_scene(rng, 1)
        obj = scene.objects[0]
        v = rng.random()
        if v < 0.4:
            words = [obj.color]
        elif v < 0.8:
            words = [obj.shape]
        else:
            words = [obj.color, obj.shape]
        return " ".join(words), scene.image, [(i, obj.mask) for i in range(len(words))]
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.20]))
    scene = random_scene(rng, n)
    return scene.caption, scene.image, [(i, m) for i, _, m in scene.word_masks]


def make_batch(rng: np.random.Generator, batch: int, tok: ToyTokenizer) -> Batch:
    h = w = IMAGE_SIZE
    images = np.empty((batch, h, w, 3), dtype=np.uint8)
    ids = np.empty((batch, tok.context_length), dtype=np.int64)
    masks = np.zeros((batch, tok.context_length, h, w), dtype=np.float32)
    sup = np.zeros((batch, tok.context_length), dtype=bool)
    for b in range(batch):
        caption, image, word_masks = training_caption(rng)
        images[b] = image
        ids[b] = tok(caption)
        for i, m in word_masks:
            masks[b, 1 + i] = m  # +1: the start token
            sup[b, 1 + i] = True
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return Batch(x, torch.from_numpy(ids), torch.from_numpy(masks), torch.from_numpy(sup))


def attention_loss(unet: ToyUNet, batch: Batch) -> torch.Tensor:
    """Mean over attn2 layers of KL(mask ‖ attention) over pixels, for the supervised word tokens."""
    bi, ti = batch.supervised.nonzero(as_tuple=True)
    if bi.numel() == 0:
        return torch.zeros(())
    size = batch.masks.shape[-1]
    targets: dict[int, torch.Tensor] = {}
    losses = []
    for _, mod in unet.cross_attention_modules():
        probs = mod.last_probs  # (B, heads, HW, 77)
        if probs is None:
            continue
        hw = probs.shape[2]
        res = math.isqrt(hw)
        if res not in targets:
            sel = batch.masks[bi, ti]  # (N, H, W)
            pooled = F.avg_pool2d(sel[:, None], size // res)[:, 0].flatten(1)
            targets[res] = pooled / pooled.sum(-1, keepdim=True).clamp_min(1e-8)
        m = targets[res]
        a = probs.mean(1)[bi, :, ti]  # (N, HW)
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        kl = (m * (torch.log(m.clamp_min(1e-8)) - torch.log(a.clamp_min(1e-8)))).sum(-1)
        losses.append(kl.mean())
    return torch.stack(losses).mean()


def set_store_probs(unet: ToyUNet, on: bool) -> None:
    for _, mod in unet.cross_attention_modules():
        mod.store_probs = on
        if not on:
            mod.last_probs = None


def build_models(cfg: ToyConfig) -> tuple[ToyTextEncoder, ToyUNet]:
    return ToyTextEncoder(cfg), ToyUNet(cfg)


def default_config(tok: ToyTokenizer) -> ToyConfig:
    return ToyConfig(vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id)


def export_safetensors(path: Path, state: dict[str, torch.Tensor], cfg: ToyConfig, info: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}
    meta = {"config": json.dumps(cfg.to_dict()), "train": json.dumps(info), "format": "toyworld-v1"}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def joint_state(te: ToyTextEncoder, unet: ToyUNet) -> dict[str, torch.Tensor]:
    state = {f"text_encoder.{k}": v for k, v in te.state_dict().items()}
    state.update({f"unet.{k}": v for k, v in unet.state_dict().items()})
    return state


def export_checkpoint(ckpt_path: Path, out: Path) -> dict:
    """Writes the EMA weights of a training checkpoint as the shipped .safetensors; returns the train info."""
    ck = torch.load(ckpt_path, map_location="cpu")
    cfg = ToyConfig.from_dict(ck["config"])
    te, unet = build_models(cfg)
    te.load_state_dict(ck["text_encoder"])
    unet.load_state_dict(ck["unet"])
    params = list(te.parameters()) + list(unet.parameters())
    with torch.no_grad():
        for p, e in zip(params, ck["ema"]):
            p.copy_(e)
    args = ck.get("args", {})
    info = {"steps": ck["step"], "minutes": round(ck["minutes"], 1), "schedule": SCHEDULE_NAME}
    for key in ("seed", "batch", "lr", "attn_weight", "ema", "anneal_from"):
        if key in args:
            info[key] = float(args[key]) if key in ("lr", "attn_weight", "ema") else int(args[key])
    export_safetensors(out, joint_state(te, unet), cfg, info)
    return info


def learning_rate(
    base: float, step: int, warmup: int, anneal_from: int = 0, max_steps: int = 0, warmup_from: int = 0
) -> float:
    """Linear warm-up over the ``warmup`` steps from ``warmup_from``, then constant; with ``anneal_from`` a cosine
    decay to 5% at ``max_steps``.

    A constant rate left the samples noisy (the ε error floor of a large step size); annealing the resumed
    segment is the cheap way to a cleaner model without retraining from scratch.
    """
    lr = base * min(1.0, max(0, step - warmup_from + 1) / warmup)
    if anneal_from and max_steps > anneal_from and step >= anneal_from:
        frac = min(1.0, (step - anneal_from) / (max_steps - anneal_from))
        lr *= 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac))
    return lr


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=90.0, help="wall-time budget of this invocation")
    ap.add_argument("--max-steps", type=int, default=0, help="stop at this total step count (0 = no limit)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "lib_ext/toyworld/weights/toyworld.safetensors")
    ap.add_argument("--ckpt", type=Path, default=REPO_ROOT / "work/toyworld_ckpt.pt")
    ap.add_argument("--log", type=Path, default=None, help="loss CSV (default: next to the checkpoint)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument(
        "--anneal-from",
        type=int,
        default=0,
        help="cosine-anneal lr from this step down to 5%% at --max-steps (0 = constant lr)",
    )
    ap.add_argument("--attn-weight", type=float, default=0.05)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export-only", action="store_true", help="write --out from the checkpoint's EMA and stop")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log_path = args.log or args.ckpt.with_suffix(".csv")
    if args.export_only:
        print(json.dumps(export_checkpoint(args.ckpt, args.out)))
        return

    tok = ToyTokenizer()
    cfg = default_config(tok)
    torch.manual_seed(args.seed)
    te, unet = build_models(cfg)
    params = list(te.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    rng = np.random.default_rng(args.seed)
    step, minutes_before = 0, 0.0

    if args.resume and args.ckpt.exists():
        ck = torch.load(args.ckpt, map_location="cpu")
        if ck["config"] != cfg.to_dict():
            raise SystemExit("checkpoint config differs from this code's model config")
        te.load_state_dict(ck["text_encoder"])
        unet.load_state_dict(ck["unet"])
        opt.load_state_dict(ck["opt"])
        for e, v in zip(ema, ck["ema"]):
            e.copy_(v)
        rng.bit_generator.state = ck["numpy_rng"]
        torch.set_rng_state(ck["torch_rng"])
        step, minutes_before = ck["step"], ck["minutes"]
        print(f"resumed at step {step} after {minutes_before:.1f} min", flush=True)
    elif not args.resume and log_path.exists():
        log_path.unlink()

    print(f"params: text {count_params(te)}, unet {count_params(unet)}", flush=True)
    ac = alphas_cumprod()
    set_store_probs(unet, args.attn_weight > 0)
    te.train()
    unet.train()
    args.ckpt.parent.mkdir(parents=True, exist_ok=True)
    if not log_path.exists():
        log_path.write_text("step,minutes,loss,mse,attn_kl,lr\n")

    t_start = time.time()
    last_ckpt = t_start
    acc = np.zeros(3)
    acc_n = 0

    def elapsed() -> float:
        return minutes_before + (time.time() - t_start) / 60.0

    def save_ckpt() -> None:
        ck = {
            "config": cfg.to_dict(),
            "text_encoder": te.state_dict(),
            "unet": unet.state_dict(),
            "opt": opt.state_dict(),
            "ema": [e.clone() for e in ema],
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "minutes": elapsed(),
            "args": {k: str(v) for k, v in vars(args).items()},
        }
        tmp = args.ckpt.with_suffix(".tmp")
        torch.save(ck, tmp)
        os.replace(tmp, args.ckpt)

    while True:
        if args.max_steps and step >= args.max_steps:
            break
        if (time.time() - t_start) / 60.0 >= args.minutes:
            break
        batch = make_batch(rng, args.batch, tok)
        t = torch.randint(0, len(ac), (args.batch,))
        noise = torch.randn_like(batch.images)
        a = ac[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * batch.images + (1 - a).sqrt() * noise
        lr = learning_rate(args.lr, step, args.warmup, args.anneal_from, args.max_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        eps = unet(x_t, t, te(batch.ids))
        mse = F.mse_loss(eps, noise)
        attn = attention_loss(unet, batch) if args.attn_weight > 0 else torch.zeros(())
        loss = mse + args.attn_weight * attn
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        acc += (loss.item(), mse.item(), attn.item())
        acc_n += 1
        if step % 25 == 0:
            m = acc / acc_n
            with open(log_path, "a", newline="") as log_f:
                csv.writer(log_f).writerow(
                    [step, f"{elapsed():.2f}", f"{m[0]:.5f}", f"{m[1]:.5f}", f"{m[2]:.5f}", f"{lr:.2e}"]
                )
            print(f"step {step} min {elapsed():.1f} loss {m[0]:.4f} mse {m[1]:.4f} attn {m[2]:.4f}", flush=True)
            acc[:] = 0
            acc_n = 0
        if time.time() - last_ckpt >= args.ckpt_minutes * 60:
            save_ckpt()
            last_ckpt = time.time()

    save_ckpt()
    # Export the EMA weights.
    live = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    info = {
        "schedule": SCHEDULE_NAME,
        "steps": step,
        "minutes": round(elapsed(), 1),
        "seed": args.seed,
        "batch": args.batch,
        "lr": args.lr,
        "anneal_from": args.anneal_from,
        "attn_weight": args.attn_weight,
        "ema": args.ema,
    }
    export_safetensors(args.out, joint_state(te, unet), cfg, info)
    with torch.no_grad():
        for p, v in zip(params, live):
            p.copy_(v)
    print(f"wrote {args.out} after {step} steps, {elapsed():.1f} min", flush=True)


if __name__ == "__main__":
    main()
