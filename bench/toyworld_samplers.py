"""Which sampler and CFG scale does the toy model draw its captions best with? (chooses bench toyworld's setting)

Caption accuracy (the judge finds exactly the asked shapes in the asked colours) per (sampler, CFG, steps) on
HELD-OUT captions: random one- and two-object captions from another seed than `bench toyworld`'s, so the setting is
not chosen on the captions it is then reported on. Generation as in `bench toyworld` (A1111 semantics, per-image
seeds, empty negative prompt). Last-line JSON: `accuracy` {"sampler:cfg:steps": fraction}, `best`, `n_captions`.
Weights: $PROMPTSCOPE_TOYWORLD_WEIGHTS, else the shipped weights.
"""

from __future__ import annotations

import os
import time

import torch

from bench import toyworld as T
from lib_ext.toyworld.judge import caption_matches, judge

HELD_OUT_SEED = 777
SETTINGS = [
    ("Euler", 3.0, 20),
    ("Euler", 4.0, 20),
    ("Euler a", 2.0, 20),
    ("Euler a", 2.5, 20),
    ("Euler a", 3.0, 20),
    ("Euler a", 4.0, 20),
    ("DPM++ 2M", 3.0, 20),
    ("DPM++ 2M", 4.0, 20),
]


def accuracy(model: T.ToyModel, captions: list[str], sampler: str, cfg: float, steps: int, batch: int = 20) -> float:
    ok = 0
    for a in range(0, len(captions), batch):
        chunk = captions[a : a + batch]
        seeds = [T.IMAGE_SEED + a + i for i in range(len(chunk))]
        images = T.to_uint8(T.generate(model, chunk, seeds, steps, cfg, sampler))
        ok += sum(caption_matches(judge(im), c) for im, c in zip(images, chunk))
    return ok / len(captions)


def main(quick: bool = False) -> dict:
    torch.set_num_threads(int(os.environ.get("PROMPTSCOPE_BENCH_THREADS", "1")))
    t0 = time.perf_counter()
    model = T.load_model()
    captions = T.bench_captions(20 if quick else 120, seed=HELD_OUT_SEED)
    settings = [SETTINGS[0], SETTINGS[4]] if quick else SETTINGS
    result: dict = {"accuracy": {}, "n_captions": len(captions), "weights": model.source}
    for sampler, cfg, steps in settings:
        key = f"{sampler}:{cfg:g}:{steps}"
        result["accuracy"][key] = accuracy(model, captions, sampler, cfg, steps)
        print(f"{key:<20}{result['accuracy'][key]:.3f}", flush=True)
    result["best"] = max(result["accuracy"], key=result["accuracy"].get)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
