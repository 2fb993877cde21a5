"""Does self-attention refinement make the word heatmaps more accurate? (issue 5: ship it only if it does.)

Refinement as in DiffSegmenter-style post-processing: the self-attention probabilities S (queries × keys, cond rows,
mean over heads, summed over the self-attention layers at one resolution and over steps, each row normalised to 1)
propagate a word's cross-attention map m to the pixels that attend to where m is high: m' = S·m (one hop) or S·S·m
(two hops); `blend` multiplies the original map by the one-hop map. Every variant is min-max normalised and
thresholded at τ = 0.4, then scored by IoU against the judge's mask of the object the word names (as the toy-world
bench does), on random 1–2 object captions (Euler, 20 steps, CFG 6).

The toy model has self-attention at 16×16 and 8×8 only (not at 32×32), so S is taken at 16×16 and the maps are
compared at 32×32. Last-line JSON: `miou_plain`, `miou_refined_one_hop`, `miou_refined_two_hops`, `miou_blend`,
`words_scored`. Weights: $PROMPTSCOPE_TOYWORLD_WEIGHTS, else the shipped weights.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from lib_ext.toyworld import model_eval as ME
from lib_ext.toyworld.judge import judge, parse_caption
from lib_ext.toyworld.weights import load_toyworld

TAU = 0.4
SELF_SIDE = 16
CAPTION_SEED = 999


class SelfAttentionSum(ME.StoredProbs):
    """Running sum of the cond rows' head-averaged self-attention at SELF_SIDE², read after each UNet call."""

    def __init__(self, unet: torch.nn.Module, n_cond: int) -> None:
        super().__init__([m.attn1 for m in unet.modules() if getattr(m, "attn1", None) is not None])
        self.n_cond = n_cond
        self.total: torch.Tensor | None = None

    def collect(self) -> None:
        for m in self.modules:
            p, m.last_probs = m.last_probs, None
            if p is None or p.shape[2] != SELF_SIDE * SELF_SIDE:
                continue
            s = p[: self.n_cond].float().mean(1)
            self.total = s if self.total is None else self.total + s

    def row_normalised(self) -> torch.Tensor:
        assert self.total is not None, "no self-attention layer at the refinement resolution"
        return self.total / self.total.sum(-1, keepdim=True)


def _mask(m: torch.Tensor) -> np.ndarray:
    m = (m - m.min()) / (m.max() - m.min() + 1e-8)
    return (m >= TAU).numpy()


def _up(m16: torch.Tensor, size: int) -> torch.Tensor:
    up = F.interpolate(m16.view(1, 1, SELF_SIDE, SELF_SIDE), size=(size, size), mode="bicubic", align_corners=False)
    return up[0, 0].clamp_min(0)


def main(quick: bool = False) -> dict:
    torch.set_num_threads(int(os.environ.get("PROMPTSCOPE_BENCH_THREADS", "1")))
    t0 = time.perf_counter()
    path = os.environ.get("PROMPTSCOPE_TOYWORLD_WEIGHTS")
    te, unet, tok, cfg = load_toyworld(path)
    size = cfg.image_size
    n = 10 if quick else 60
    captions = ME.random_eval_captions(n, CAPTION_SEED)
    scores: dict[str, list[float]] = {"plain": [], "one_hop": [], "two_hops": [], "blend": []}
    batch = 10
    original_collect = ME.AttentionCapture.collect
    for a in range(0, n, batch):
        chunk = captions[a : a + batch]
        selfs = SelfAttentionSum(unet, len(chunk))

        def collect(cap: ME.AttentionCapture, selfs: SelfAttentionSum = selfs) -> None:
            original_collect(cap)
            selfs.collect()

        ME.AttentionCapture.collect = collect  # read both captures after each UNet call of the reference sampler
        try:
            with selfs:
                seeds = list(range(CAPTION_SEED + a, CAPTION_SEED + a + len(chunk)))
                images, total = ME.sample_euler_cfg(te, unet, tok, chunk, seeds, 20, 6.0, capture=True)
        finally:
            ME.AttentionCapture.collect = original_collect
        s = selfs.row_normalised()
        for k, (caption, image) in enumerate(zip(chunk, images)):
            objects = judge(image)
            words = tok.tokens(caption)
            for color, shape in parse_caption(caption):
                same = [o for o in objects if o.color == color and o.shape == shape]
                if not same:
                    continue
                truth = max(same, key=lambda o: o.area).mask
                for word in (color, shape):
                    if word is None:
                        continue
                    m = total[k][1 + words.index(word)].clamp_min(0)
                    m16 = F.interpolate(m[None, None], size=(SELF_SIDE, SELF_SIDE), mode="area").flatten()
                    one = _up(s[k] @ m16, size)
                    variants = {"plain": m, "one_hop": one, "two_hops": _up(s[k] @ (s[k] @ m16), size)}
                    variants["blend"] = m * one
                    for name, v in variants.items():
                        scores[name].append(ME.iou(_mask(v), truth))
    keys = {"plain": "miou_plain", "one_hop": "miou_refined_one_hop", "two_hops": "miou_refined_two_hops"}
    keys["blend"] = "miou_blend"
    result: dict = {keys[k]: float(np.mean(v)) if v else None for k, v in scores.items()}
    result.update({"words_scored": len(scores["plain"]), "n_captions": n, "tau": TAU, "self_attention_side": SELF_SIDE})
    result["seconds"] = round(time.perf_counter() - t0, 1)
    for key, value in result.items():
        print(f"{key:<28}{value}")
    return result
