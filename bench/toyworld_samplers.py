"""Which sampler and CFG scale does the toy model draw its captions best with? (chooses bench toyworld's setting)

Caption accuracy (the judge finds exactly the asked shapes in the asked colours) per (sampler, CFG, steps) on
HELD-OUT captions: random one- and two-object captions from another seed than `bench toyworld`'s, so the setting is
not chosen on the captions it is then reported on. Generation as in `bench toyworld` (A1111 semantics, per-image
seeds, empty negative prompt). Last-line JSON: `accuracy` {"sampler:cfg:steps": fraction}, `best`, `n_captions`.
Weights: $PROMPTSCOPE_TOYWORLD_WEIGHTS, else the shipped weights. With $PROMPTSCOPE_TOYWORLD_SD1 naming the SD1
checkpoint (`lib_ext/toyworld/weights/toyworld-sd1.safetensors`), the same question for that checkpoint, drawn by the
toy host as the WebUI draws it (`ToyHost.load_sd1`; its own grid of settings, every sampler `bench webui_quality`
runs): `best_per_sampler` in its JSON is that bench's CFG per sampler (`SAMPLER_CFG`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

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


# The SD1 checkpoint (v-prediction, CLIP text model) is judged on its own grid, every sampler `bench webui_quality`
# runs: that bench's CFG per sampler (`SAMPLER_CFG`) is chosen from it.
SD1_SETTINGS = [
    ("Euler a", 1.5, 20),
    ("Euler a", 2.0, 20),
    ("DPM++ 2M", 3.0, 20),
    ("DPM++ 2M", 4.0, 20),
    ("DPM++ 2M", 5.0, 20),
    ("Heun", 1.5, 20),
    ("Heun", 2.0, 20),
    ("Heun", 3.0, 20),
]


def sd1_accuracy(host: object, captions: list[str], sampler: str, cfg: float, steps: int, batch: int = 8) -> float:
    """As `accuracy`, through the toy host with the SD1 checkpoint (judged at latent resolution, as
    `bench webui_quality` judges)."""
    from bench.webui_quality import latent_picture

    ok = 0
    for a in range(0, len(captions), batch):
        chunk = captions[a : a + batch]
        p = host.txt2img(chunk, seed=T.IMAGE_SEED + a, steps=steps, cfg_scale=cfg, sampler_name=sampler)
        pictures = [latent_picture(im) for im in p.images[: p.n_generated]]
        ok += sum(caption_matches(judge(pic), c) for pic, c in zip(pictures, chunk))
    return ok / len(captions)


def main_sd1(path: Path, quick: bool) -> dict:
    from lib_ext.toyworld.host import ToyHost

    t0 = time.perf_counter()
    host = ToyHost.load_sd1(path)
    captions = T.bench_captions(20 if quick else 120, seed=HELD_OUT_SEED)
    settings = SD1_SETTINGS[1:2] if quick else SD1_SETTINGS
    result: dict = {"accuracy": {}, "n_captions": len(captions), "weights": str(path)}
    for sampler, cfg, steps in settings:
        key = f"{sampler}:{cfg:g}:{steps}"
        result["accuracy"][key] = sd1_accuracy(host, captions, sampler, cfg, steps)
        print(f"{key:<20}{result['accuracy'][key]:.3f}", flush=True)
    result["best"] = max(result["accuracy"], key=result["accuracy"].get)
    result["best_per_sampler"] = best_per_sampler(result["accuracy"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def best_per_sampler(accuracy: dict[str, float]) -> dict[str, float]:
    """{sampler: CFG} with the highest accuracy; on a tie the lower CFG (closer to the unguided model's pictures)."""
    best: dict[str, tuple[float, float]] = {}
    for key, acc in accuracy.items():
        sampler, cfg, _steps = key.split(":")
        score = (acc, -float(cfg))
        if sampler not in best or score > best[sampler]:
            best[sampler] = score
    return {sampler: -score[1] for sampler, score in best.items()}


def main(quick: bool = False) -> dict:
    torch.set_num_threads(int(os.environ.get("PROMPTSCOPE_BENCH_THREADS", "1")))
    if os.environ.get("PROMPTSCOPE_TOYWORLD_SD1"):
        return main_sd1(Path(os.environ["PROMPTSCOPE_TOYWORLD_SD1"]), quick)
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
