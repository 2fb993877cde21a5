"""Semantic-guidance bench: does `AND_TOPK <colour> :w` turn the toy world's object that colour and keep it in place?

Two kinds of trial, every shape, fixed seeds, DPM++ 2M, 20 steps, CFG 4, through the standalone host (A1111
semantics: one batched UNet call per step; the guidance feature rewrites the prompt and combines):
- "add" (the headline keys): the base caption names the shape only ("circle"); the model picks a colour; the
  concept is a different colour (the next one after the drawn colour). This is SEGA's use: add what the prompt
  leaves open ("a portrait AND_TOPK glasses").
- "recolour" (keys prefixed `recolour_`): the base caption names a colour ("a red circle") and the concept
  contradicts it; the concept must override the prompt's own word.
Per trial: base = the caption; edit = "caption AND_TOPK <concept> :w"; rewrite (baseline) = "a <concept> <shape>".
The object of an image is the largest one the judge finds. A trial counts when the base image's object has the
caption's shape (and colour, for "recolour").
The headline keys are for mode sega at the UI's SEGA defaults (the mode meant to keep the composition); mode
neutral (the UI's default mode: neutral-prompt's numbers, so its users' prompts carry over) is reported beside them.
- concept_success: fraction of counted trials whose edited object has the concept's colour (the shape is what
  composition_iou measures).
- composition_iou_median / rewrite_iou_median: median IoU of the object's mask in the base image and in the edit
  (rewrite) image (0 when no object is found).
- neutral_concept_success / neutral_composition_iou_median: the same in mode neutral (neutral-prompt's AND_TOPK).
- concept_added_success: the other reading of a lone colour word, which this model learned from one-object partial
  captions ("blue" = an image with a blue object): an object of the concept's colour appears AND the base object
  stays (same colour and shape, mask IoU ≥ 0.5 with the base image's).
- removal_success: for "a <concept> <shape>" (counted when its object is drawn so), "... AND_TOPK <concept> :-w"
  leaves an object that is not of the concept's colour (mode sega; `neutral_removal_success` beside it).
- extra_unet_rows_per_concept: cond rows the host adds per concept per image (and whether UNet calls per step stay 1).
- combine_overhead_ratio: one combine step (one image, one concept: 3 rows) over one forward of an SD1.5-shaped
  UNet (random weights, 64×64 latent) on the same 3 rows; --quick times the UNet on 1 row of a 32×32 latent (an
  upper bound).
- quantile_vs_kthvalue_ratio: SEGA's per-channel threshold by torch.quantile vs by kthvalue (same entries kept).
- the full run adds `tradeoff` ("add" trials): success, IoU and concept_added per (mode, weight, threshold,
  warm-up), to choose the defaults.

Weights: $PROMPTSCOPE_TOYWORLD_WEIGHTS, else the shipped weights, else an untrained model (numbers meaningless).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from lib_ext.guidance import GuidanceSettings, SegaParams, StepCount
from lib_ext.guidance.bench_parts import quantile_vs_kthvalue, time_combine
from lib_ext.guidance.feature import GuidanceFeature
from lib_ext.toyworld.host import ToyHost
from lib_ext.toyworld.judge import DetectedObject, judge
from lib_ext.toyworld.vocab import COLORS, SHAPES

STEPS = 20
SAMPLER = "DPM++ 2M"
CFG_SCALE = 4.0  # the toy model draws its captions best at CFG 3–4 (model card)
BATCH = 8
IMAGE_SEED = 4000
ADD_SEED = 4500
DEFAULT_WEIGHT = 1.0  # the weight the prompt helper writes (`AND_TOPK red :1`)
NEUTRAL_SETTINGS = GuidanceSettings()  # the UI's default mode: neutral-prompt's numbers
SEGA_DEFAULTS = GuidanceSettings(mode="sega")  # mode sega with the UI's SEGA defaults: the headline


@dataclass(frozen=True)
class Trial:
    seed: int
    shape: str
    color: str | None  # None: the base caption leaves the colour open ("add" trials)
    concept: str

    # "add" trials use the partial-caption form the model was trained on ("circle", "blue circle")
    @property
    def caption(self) -> str:
        return f"a {self.color} {self.shape}" if self.color else self.shape

    @property
    def concept_caption(self) -> str:
        return f"a {self.concept} {self.shape}" if self.color else f"{self.concept} {self.shape}"


def make_trials(quick: bool, kind: str = "recolour") -> list[Trial]:
    """Every shape; "recolour": two (quick) or four base colours, one concept colour each (rotating); "add": 2
    (quick) or 8 seeds per shape, the concept chosen once the base image shows its colour (`choose_concepts`)."""
    colors = list(COLORS)
    trials: list[Trial] = []
    if kind == "add":
        seed = ADD_SEED
        for _ in range(2 if quick else 8):
            for shape in SHAPES:
                trials.append(Trial(seed, shape, None, ""))
                seed += 1
        return trials
    for s in range(1 if quick else 2):
        for i, shape in enumerate(SHAPES):
            for j, color in enumerate(colors[:2] if quick else colors):
                others = [c for c in colors if c != color]
                trials.append(Trial(IMAGE_SEED + len(trials), shape, color, others[(i + j + s) % 3]))
    return trials


def choose_concepts(trials: list[Trial], objects: list[DetectedObject | None]) -> list[Trial]:
    """ "add" trials: the concept is the colour after the one the base image shows (any other colour if none)."""
    colors = list(COLORS)
    out = []
    for t, obj in zip(trials, objects):
        drawn = obj.color if obj is not None and obj.color in colors else colors[-1]
        out.append(Trial(t.seed, t.shape, t.color, colors[(colors.index(drawn) + 1) % len(colors)]))
    return out


def generate(host: ToyHost, prompts: list[str], seeds: list[int], settings: GuidanceSettings | None) -> list:
    """Images (H, W, 3 uint8) for prompts with consecutive seeds, in host batches of BATCH."""
    feature = [GuidanceFeature(settings)] if settings is not None else []
    out: list[np.ndarray] = []
    for a in range(0, len(prompts), BATCH):
        chunk = prompts[a : a + BATCH]
        if seeds[a : a + len(chunk)] != list(range(seeds[a], seeds[a] + len(chunk))):
            raise ValueError("bench trials need consecutive seeds within a batch")
        p = host.txt2img(chunk, seed=seeds[a], steps=STEPS, cfg_scale=CFG_SCALE, sampler_name=SAMPLER,
                         features=feature)  # fmt: skip
        if p.messages:
            print("  host messages:", p.messages[:3])
        out.extend(np.asarray(img) for img in p.images)
    return out


def main_object(image: np.ndarray) -> DetectedObject | None:
    objects = judge(image)
    return objects[0] if objects else None


def mask_iou(a: DetectedObject | None, b: DetectedObject | None) -> float:
    if a is None or b is None:
        return 0.0
    union = np.logical_or(a.mask, b.mask).sum()
    return float(np.logical_and(a.mask, b.mask).sum() / union) if union else 0.0


@dataclass
class Baseline:
    trials: list[Trial]
    base: list[np.ndarray]
    rewrite: list[np.ndarray]
    valid: list[bool]  # base image shows its caption
    concept_valid: list[bool]  # rewrite image shows the concept caption (removal trials)
    base_objects: list[DetectedObject | None]


def baseline(host: ToyHost, trials: list[Trial]) -> Baseline:
    seeds = [t.seed for t in trials]
    base = generate(host, [t.caption for t in trials], seeds, None)
    objects = [main_object(img) for img in base]
    if any(t.color is None for t in trials):
        trials = choose_concepts(trials, objects)
    rewrite = generate(host, [t.concept_caption for t in trials], seeds, None)
    concept_objects = [main_object(img) for img in rewrite]
    return Baseline(
        trials,
        base,
        rewrite,
        [is_drawn(o, t.color, t.shape) for o, t in zip(objects, trials)],
        [is_drawn(o, t.concept, t.shape) for o, t in zip(concept_objects, trials)],
        objects,
    )


def is_drawn(obj: DetectedObject | None, color: str | None, shape: str) -> bool:
    """The object has the shape, and the colour when one is asked (None: any colour)."""
    return obj is not None and obj.shape == shape and (color is None or obj.color == color)


def edit_scores(host: ToyHost, b: Baseline, settings: GuidanceSettings, weight: float) -> dict[str, float]:
    # every trial is generated (the host's batches take consecutive seeds); the counted ones are scored
    edits = generate(host, [f"{t.caption} AND_TOPK {t.concept} :{weight}" for t in b.trials],
                     [t.seed for t in b.trials], settings)  # fmt: skip
    idx = [i for i, v in enumerate(b.valid) if v]
    found = {i: judge(edits[i]) for i in idx}
    objects = {i: found[i][0] if found[i] else None for i in idx}
    success = [objects[i] is not None and objects[i].color == b.trials[i].concept for i in idx]
    ious = [mask_iou(b.base_objects[i], objects[i]) for i in idx]
    added = [concept_added(found[i], b.base_objects[i], b.trials[i]) for i in idx]
    return {
        "n": len(idx),
        "success": sum(success) / len(success) if success else float("nan"),
        "iou_median": statistics.median(ious) if ious else float("nan"),
        "added": sum(added) / len(added) if added else float("nan"),
    }


def concept_added(objects: list[DetectedObject], base: DetectedObject | None, t: Trial) -> bool:
    """The other reading of a lone colour word: an object of the concept's colour is present AND the base
    object is still there, unchanged in colour and shape, its mask overlapping the base image's (IoU ≥ 0.5)."""
    has_concept = any(o.color == t.concept for o in objects)
    kept = any(is_drawn(o, base.color if base else t.color, t.shape) and mask_iou(base, o) >= 0.5 for o in objects)
    return has_concept and kept


def removal_success(host: ToyHost, b: Baseline, settings: GuidanceSettings, weight: float) -> tuple[float, int]:
    idx = [i for i, v in enumerate(b.concept_valid) if v]
    if not idx:
        return float("nan"), 0
    images = generate(host, [f"{t.concept_caption} AND_TOPK {t.concept} :{-weight}" for t in b.trials],
                      [t.seed for t in b.trials], settings)  # fmt: skip
    ok = []
    for i in idx:
        obj = main_object(images[i])
        ok.append(obj is not None and obj.color != b.trials[i].concept)
    return sum(ok) / len(ok), len(ok)


def rows_per_concept(host: ToyHost) -> dict[str, float]:
    """Cond rows and UNet calls of one generation with 0, 1 and 2 concepts."""
    seen: dict[int, tuple[int, int]] = {}

    class Probe:
        name = "probe"

        def begin_sampling(self, ctx) -> None:
            self.rows = ctx.layout.n_cond_rows

        def end_sampling(self, ctx, ok) -> None:
            pass

    for k in range(3):
        prompt = "a blue circle" + "".join(f" AND_TOPK {c} :0.5" for c in ["red", "green"][:k])
        probe = Probe()
        before = host.unet_calls
        host.txt2img([prompt] * 2, seed=1, steps=4, sampler_name="Euler", features=[GuidanceFeature(), probe])
        seen[k] = (probe.rows, host.unet_calls - before)
    return {
        "extra_unet_rows_per_concept": (seen[2][0] - seen[0][0]) / 2 / 2,  # 2 concepts, 2 images
        "unet_calls_per_step_0_1_2_concepts": [seen[k][1] / 4 for k in range(3)],
    }


def overhead(quick: bool) -> dict[str, float]:
    from bench.sd15_unet import build, forward_seconds

    torch.set_flush_denormal(True)
    t0 = time.perf_counter()
    unet = build()
    rows = 1 if quick else 3
    size = 32 if quick else 64  # quick: a 4× cheaper forward, so the ratio is an upper bound
    t_unet = forward_seconds(unet, rows, repeats=1 if quick else 2, size=size)
    del unet
    t_combine = time_combine(batch=1, mode="sega", repeats=20)
    t_neutral = time_combine(batch=1, mode="neutral", repeats=20)
    q = quantile_vs_kthvalue(batch=2, repeats=10 if quick else 30)
    return {
        "combine_overhead_ratio": max(t_combine, t_neutral) / t_unet,
        "combine_ms_sega": t_combine * 1e3,
        "combine_ms_neutral": t_neutral * 1e3,
        "sd15_unet_forward_s": t_unet,
        "sd15_unet_rows": rows,
        "sd15_unet_latent": size,
        "quantile_vs_kthvalue_ratio": q["quantile_vs_kthvalue_ratio"],
        "quantile_same_entries": q["same_entries_kept"],
        "overhead_seconds": time.perf_counter() - t0,
    }


def sweep_configs() -> list[tuple[str, GuidanceSettings, float]]:
    out = []
    for w in (0.5, 1.0, 2.0):
        out.append((f"neutral topk=0.05 w={w}", GuidanceSettings(), w))
    # The warm-up decides (an edit acting from the first steps moves the object); the threshold matters less.
    for warm in (0.0, 0.2, 0.3, 0.4, 0.5, 0.6):
        for w in (1.0, 2.0, 4.0):
            sega = SegaParams(threshold=0.9, warmup=StepCount(warm, relative=True), momentum=0.1, beta=0.4)
            out.append((f"sega q=0.9 warmup={warm:.0%} w={w}", GuidanceSettings(mode="sega", sega=sega), w))
    for warm in (0.3, 0.4, 0.5):
        sega = SegaParams(threshold=0.0, warmup=StepCount(warm, relative=True), momentum=0.1, beta=0.4)
        out.append((f"sega q=0.0 warmup={warm:.0%} w=1.0", GuidanceSettings(mode="sega", sega=sega), 1.0))
    return out


def trial_scores(host: ToyHost, trials: list[Trial], sweep: bool) -> dict:
    """The issue's keys for one kind of trial at the default settings, plus the trade-off sweep if asked."""
    b = baseline(host, trials)
    rewrite_ious = [mask_iou(b.base_objects[i], main_object(b.rewrite[i])) for i, v in enumerate(b.valid) if v]
    rewrite_success = [b.concept_valid[i] for i in range(len(b.trials)) if b.valid[i]]
    sega = edit_scores(host, b, SEGA_DEFAULTS, DEFAULT_WEIGHT)
    removal, n_removal = removal_success(host, b, SEGA_DEFAULTS, DEFAULT_WEIGHT)
    neutral = edit_scores(host, b, NEUTRAL_SETTINGS, DEFAULT_WEIGHT)
    neutral_removal, _ = removal_success(host, b, NEUTRAL_SETTINGS, DEFAULT_WEIGHT)
    out: dict = {
        "trials": len(trials),
        "valid_trials": sum(b.valid),
        "concept_success": sega["success"],
        "composition_iou_median": sega["iou_median"],
        "concept_added_success": sega["added"],
        "rewrite_iou_median": statistics.median(rewrite_ious) if rewrite_ious else float("nan"),
        "rewrite_success": sum(rewrite_success) / len(rewrite_success) if rewrite_success else float("nan"),
        "removal_success": removal,
        "removal_trials": n_removal,
        "neutral_concept_success": neutral["success"],
        "neutral_composition_iou_median": neutral["iou_median"],
        "neutral_removal_success": neutral_removal,
    }
    if sweep:
        tradeoff = []
        for name, settings, w in sweep_configs():
            sc = edit_scores(host, b, settings, w)
            tradeoff.append({"config": name, **{k: sc[k] for k in ("success", "iou_median", "added")}})
            print(f"  {name:40s} success {sc['success']:.2f}  iou {sc['iou_median']:.2f}  added {sc['added']:.2f}")
        out["tradeoff"] = tradeoff
    return out


def main(quick: bool) -> dict:
    t_start = time.perf_counter()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    path = os.environ.get("PROMPTSCOPE_TOYWORLD_WEIGHTS")
    host = ToyHost.load(path)
    result: dict = {
        "model": host.model_name,
        "headline_mode": SEGA_DEFAULTS.mode,
        "sega_defaults": SEGA_DEFAULTS.to_dict(),
        "default_weight": DEFAULT_WEIGHT,
    }
    for kind in ("add", "recolour"):
        trials = make_trials(quick, kind)
        print(
            f"semantic guidance bench ({kind}): model {host.model_name}, {len(trials)} trials, {SAMPLER} {STEPS} steps"
        )
        scores = trial_scores(host, trials, sweep=not quick and kind == "add")  # the sweep: headline kind only
        prefix = "" if kind == "add" else "recolour_"
        result.update({f"{prefix}{k}": v for k, v in scores.items()})
    result.update(rows_per_concept(host))
    result.update(overhead(quick))
    result["seconds"] = time.perf_counter() - t_start

    print(f"{'key':34s} value")
    for k, v in result.items():
        if not k.endswith("tradeoff"):
            print(f"{k:34s} {v}")
    return result
