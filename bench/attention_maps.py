"""Attention-heatmap bench (issue 5): accuracy on the toy world, capture cost and map memory on SD1.5 shapes.

- ``miou_shape`` / ``miou_color``: toy-world generations (Euler, 20 steps, CFG 7, random 1–2 object captions) through
  the standalone host with :class:`lib_ext.heatmaps.feature.HeatmapFeature`; per colour / shape word, its map
  (min-max normalised, DAAM's τ = 0.4) against the mask of the object the judge found for the word's phrase
  (union when a word names several); mean over the words whose objects were all found. The word maps leave the UNet
  middle block out, as DAAM; ``miou_*_with_middle_block`` score the same generations with it summed in (the toy UNet's
  middle block sits at 4×, as SDXL's; SD1.5's is 8× and dropped in both).
- ``capture_time_ratio``: wall time of UNet forwards with capture / without on the SD1.5-shaped random UNet
  (``bench/sd15_unet.py``, SDP attention, CFG batch of 2, 64×64 latent), alternated, median of each (full run only;
  ``--quick`` gives None). ``attn2_capture_extra_seconds_per_step``: the capture's own cost per step, timed on the
  16 attn2 modules alone (both runs; noisy on a busy machine), and ``capture_hook_seconds_per_step``: the time spent
  inside the capture's post-forward hooks, where its computation happens.
- ``map_bytes_per_image_20_steps`` / ``_50_steps``: peak bytes the capture holds for one image's maps, running the
  16 attn2 modules of that UNet at their native resolutions for a 64×64 latent (32×32 with ``--quick``:
  ``map_latent``), 20 and 50 steps.
- ``per_step_baseline_bytes``: the same for a capture that keeps every step's per-layer upsampled maps (as the
  existing extension does), measured over 2 steps and scaled to 50 steps (it grows linearly).

Weights: $PROMPTSCOPE_TOYWORLD_WEIGHTS, else the shipped toy-world weights, else a random model (the mIoU numbers
are then meaningless; the JSON says which in ``weights``).
"""

from __future__ import annotations

import math
import os
import statistics
import time

import numpy as np
import torch

from lib_ext.heatmaps.aggregate import iou, threshold_mask
from lib_ext.heatmaps.capture import Capture, CaptureOptions, upsample_maps
from lib_ext.heatmaps.feature import HeatmapFeature, HeatmapSettings
from lib_ext.seam import RowRole
from lib_ext.toyworld.judge import judge, parse_caption
from lib_ext.toyworld.scenes import caption_for, random_specs
from lib_ext.toyworld.vocab import COLORS, SHAPES

TAU = 0.4
STEPS = 20
CFG_SCALE = 7.0
SAMPLER = "Euler"
N_CAPTIONS, N_CAPTIONS_QUICK = 120, 6
BATCH = 6
CAPTION_SEED = 5150
IMAGE_SEED = 7000
TIMING_REPEATS = 3


# ---------------------------------------------------------------------------------------------- accuracy
def _word_truth(objects, caption: str) -> dict[str, np.ndarray | None]:
    """Per colour/shape word of the caption: the union of the masks of the objects it names (None: one missing)."""
    truth: dict[str, np.ndarray | None] = {}
    for color, shape in parse_caption(caption):
        same = [o for o in objects if o.color == color and o.shape == shape]
        obj = max(same, key=lambda o: o.area) if same else None
        for word in (color, shape):
            if word is None:
                continue
            if obj is None:
                truth[word] = None
            elif word not in truth or truth[word] is not None:
                prev = truth.get(word)
                truth[word] = obj.mask.copy() if prev is None else prev | obj.mask
    return truth


def accuracy(n_captions: int) -> dict:
    from lib_ext.toyworld.host import ToyHost

    path = os.environ.get("PROMPTSCOPE_TOYWORLD_WEIGHTS")
    host = ToyHost.load(path, allow_random=path is None)
    source = path or host.model_name
    rng = np.random.default_rng(CAPTION_SEED)
    captions = [caption_for(random_specs(rng, (1, 2))) for _ in range(n_captions)]
    scores: dict[str, list[float]] = {"color": [], "shape": [], "color_mid": [], "shape_mid": []}
    asked = 0
    for start in range(0, len(captions), BATCH):
        chunk = captions[start : start + BATCH]
        feature = HeatmapFeature(HeatmapSettings())
        with_mid = HeatmapFeature(HeatmapSettings(middle_block=True))  # the same images: features only observe
        processed = host.txt2img(
            chunk,
            seed=IMAGE_SEED + start,
            steps=STEPS,
            cfg_scale=CFG_SCALE,
            sampler_name=SAMPLER,
            features=[feature, with_mid],
        )
        mid_results = {r.image: r for r in with_mid.take_results()}
        for result in feature.take_results():
            caption = chunk[result.image]
            image = np.asarray(processed.images[result.image].convert("RGB"))
            truth = _word_truth(judge(image), caption)
            heat = {w.word: w.heat for w in result.words}
            heat_mid = {w.word: w.heat for w in mid_results[result.image].words}
            for word, mask in truth.items():
                asked += 1
                if mask is None or heat.get(word) is None:
                    continue
                kind = "color" if word in COLORS else "shape" if word in SHAPES else None
                if kind is not None:
                    scores[kind].append(iou(threshold_mask(heat[word], TAU), torch.from_numpy(mask)))
                    scores[f"{kind}_mid"].append(iou(threshold_mask(heat_mid[word], TAU), torch.from_numpy(mask)))

    def mean(xs: list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    return {
        "miou_shape": mean(scores["shape"]),
        "miou_color": mean(scores["color"]),
        "miou_shape_with_middle_block": mean(scores["shape_mid"]),
        "miou_color_with_middle_block": mean(scores["color_mid"]),
        "words_scored": len(scores["shape"]) + len(scores["color"]),
        "words_asked": asked,
        "n_generations": len(captions),
        "weights": source,
    }


# ---------------------------------------------------------------------------------------------- cost
# SD1.5's 16 attn2 modules in UNet order: (query dim, downsampling factor).
SD15_ATTN2 = [(320, 1)] * 2 + [(640, 2)] * 2 + [(1280, 4)] * 2 + [(1280, 8)] + [(1280, 4)] * 3 + [(640, 2)] * 3
SD15_ATTN2 += [(320, 1)] * 3


def _sd15_unet():
    from bench.sd15_unet import HEADS, build

    unet = build()
    sites = [(n, m) for n, m in unet.named_modules() if n.endswith("attn2")]
    for _name, module in sites:
        module.heads = HEADS  # the bench model keeps its head count in a constant
    return unet, sites


def _sd15_attention_sites(latent: int):
    """The 16 attn2 modules of SD1.5 alone (bench/sd15_unet's Attention), each with its native query count."""
    from bench.sd15_unet import CONTEXT_DIM, HEADS, Attention

    torch.manual_seed(0)
    out = []
    for i, (dim, factor) in enumerate(SD15_ATTN2):
        module = Attention(dim, CONTEXT_DIM).eval()
        module.heads = HEADS
        out.append((f"attn2[{i}]", module, (latent // factor) ** 2))
    return out


def capture_time_ratio(unet, sites, repeats: int, size: int) -> dict:
    """Whole-UNet forwards (CFG batch of 2) with and without capture, alternated; ratio of the medians."""
    rows = [RowRole(0, 0, False), RowRole(0, -1, True)]
    x = torch.randn(2, 4, size, size)
    t = torch.full((2,), 500)
    context = torch.randn(2, 77, 768)
    capture = Capture(lambda: rows)
    plain, captured = [], []
    with torch.inference_mode():
        unet(x, t, context)  # warm-up
        for _ in range(repeats):
            for attached in (False, True):
                if attached:
                    capture.attach(sites, unet=unet)
                t0 = time.perf_counter()
                unet(x, t, context)
                (captured if attached else plain).append(time.perf_counter() - t0)
                capture.detach()
    return {
        "capture_time_ratio": statistics.median(captured) / statistics.median(plain),
        "forward_seconds": statistics.median(plain),
        "timing_latent": size,
        "capture_errors": capture.errors,
    }


def attn2_overhead(latent: int = 64, repeats: int = 3) -> dict:
    """Seconds one step's 16 attn2 calls take with and without capture (CFG batch of 2, 64×64 latent)."""
    sites = _sd15_attention_sites(latent)
    rows = [RowRole(0, 0, False), RowRole(0, -1, True)]
    context = torch.randn(2, 77, 768)
    inputs = [torch.randn(2, n, m.to_q.in_features) for _name, m, n in sites]
    capture = Capture(lambda: rows)
    capture.set_latent_size(latent, latent)
    in_hooks = [0.0]
    after = capture._after

    def timed_after(*args):  # the capture's own work happens in this hook: time it directly, free of load noise
        t0 = time.perf_counter()
        after(*args)
        in_hooks[0] += time.perf_counter() - t0

    capture._after = timed_after  # bound into the hooks at attach time
    times: dict[bool, list[float]] = {False: [], True: []}
    with torch.inference_mode():
        for _ in range(repeats):
            for attached in (False, True):
                if attached:
                    capture.attach([(name, m) for name, m, _n in sites])
                t0 = time.perf_counter()
                for (_name, module, _n), hidden in zip(sites, inputs):
                    module(hidden, context)
                times[attached].append(time.perf_counter() - t0)
                capture.detach()
    plain, captured = statistics.median(times[False]), statistics.median(times[True])
    return {
        "attn2_seconds_per_step": plain,
        "attn2_capture_extra_seconds_per_step": captured - plain,
        "capture_hook_seconds_per_step": in_hooks[0] / repeats,
    }


class PerStepStore:
    """The baseline: every step's per-layer maps, upsampled to 64×64 and kept (cond rows, heads summed)."""

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] = []

    def add(self, maps: torch.Tensor) -> None:
        self.maps.append(maps.clone())

    def nbytes(self) -> int:
        return sum(m.numel() * m.element_size() for m in self.maps)


def map_bytes(latent: int = 64) -> dict:
    """Peak bytes held for one image's maps over 20 and 50 steps, and the per-step baseline's for 50 steps."""
    sites = _sd15_attention_sites(latent)
    rows = [RowRole(0, 0, False), RowRole(0, -1, True)]
    context = torch.randn(2, 77, 768)
    inputs = [torch.randn(2, n, m.to_q.in_features) for _name, m, n in sites]
    out = {}
    with torch.inference_mode():
        for steps in (20, 50):
            capture = Capture(lambda: rows, CaptureOptions())
            capture.set_latent_size(latent, latent)
            capture.attach([(name, m) for name, m, _n in sites])
            for step in range(steps):
                capture.set_step(step)
                for (_name, module, _n), hidden in zip(sites, inputs):
                    module(hidden, context)
            capture.detach()
            capture.collect()
            out[f"map_bytes_per_image_{steps}_steps"] = capture.peak_map_bytes()
        out["map_latent"] = latent
        baseline = PerStepStore()
        for _step in range(2):
            for (_name, module, n), hidden in zip(sites, inputs):
                q, k = module.to_q(hidden[:1]), module.to_k(context[:1])
                d = q.shape[-1] // module.heads
                qh = q.view(1, n, module.heads, d).transpose(1, 2)
                kh = k.view(1, -1, module.heads, d).transpose(1, 2)
                probs = (qh @ kh.transpose(-1, -2) * d**-0.5).softmax(-1).sum(1)
                side = math.isqrt(n)
                baseline.add(upsample_maps(probs.transpose(1, 2).reshape(1, 77, side, side), (latent, latent)))
        out["per_step_baseline_bytes"] = baseline.nbytes() // 2 * 50
    return out


def main(quick: bool = False) -> dict:
    torch.set_num_threads(int(os.environ.get("PROMPTSCOPE_BENCH_THREADS", "1")))
    result: dict = {}
    t0 = time.perf_counter()
    # Quick: maps of a 32×32 latent (4× fewer bytes and attention FLOPs); the full run uses SD1.5's 64×64.
    result.update(map_bytes(32 if quick else 64))
    result.update(attn2_overhead(repeats=1 if quick else 3))
    if quick:
        # A whole SD1.5-shaped forward takes seconds to tens of seconds on this CPU: the full run only.
        result.update({"capture_time_ratio": None, "forward_seconds": None, "timing_latent": None})
    else:
        unet, sites = _sd15_unet()
        result.update(capture_time_ratio(unet, sites, TIMING_REPEATS, 64))
        del unet, sites
    result["cost_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    result.update(accuracy(N_CAPTIONS_QUICK if quick else N_CAPTIONS))
    result["accuracy_seconds"] = round(time.perf_counter() - t0, 1)
    result.update({"tau": TAU, "steps": STEPS, "sampler": SAMPLER, "cfg_scale": CFG_SCALE, "quick": quick})
    print(f"attention maps bench ({'quick' if quick else 'full'}), toy weights: {result['weights']}")
    for key in (
        "miou_shape",
        "miou_color",
        "miou_shape_with_middle_block",
        "miou_color_with_middle_block",
        "words_scored",
        "capture_time_ratio",
        "forward_seconds",
        "attn2_seconds_per_step",
        "attn2_capture_extra_seconds_per_step",
        "capture_hook_seconds_per_step",
        "map_bytes_per_image_20_steps",
        "map_bytes_per_image_50_steps",
        "per_step_baseline_bytes",
    ):
        value = result[key]
        print(f"{key:<40}{value:>14.4f}" if isinstance(value, float) else f"{key:<40}{value!s:>14}")
    return result
