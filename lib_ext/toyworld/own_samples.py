"""Pairs of the SD1 checkpoint's own pictures, one drawn right and one wrong for one prompt: `train_ldm --dpo-pairs`.

    python -m lib_ext.toyworld.own_samples --weights <file> --out work/dpo/misses.npz --minutes 40 [--resume]

Draws captions of one or two objects (as the benches do, from its own seed, so no bench caption is trained on), writes
each in one of the prompt forms the WebUI sees — plain; filler words pushing it past token 75; filler, `BREAK`,
caption; one word emphasised `(word:w)`; synonyms (several CLIP tokens each) — samples a batch of one form with the
toy host (20 steps of Euler a, DPM++ 2M or Heun, each at its CFG scale) and keeps every picture the judge finds
wrong. Each of those prompts is drawn again with other seeds (up to `RETRIES` times) until the judge finds a picture
right: that is the preferred half. Both halves are the model's own samples, so what tells them apart is the layout
the judge reads, not the sampler's texture that any rendering of the world lacks. Stored: both final latents, the
caption, prompt and sampler (a miss with no right picture after the retries is counted, not kept). Batch k uses its
own generator (seed, k) and image seeds, so `--resume` carries on.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from .judge import caption_matches, judge
from .scenes import caption_for, random_specs
from .train_ldm import _SYNONYMS_OF, EMPHASIS_WEIGHTS  # the training captions' synonyms and weights
from .vocab import COLORS, FILLER_WORDS, SHAPES

FORMS = ("plain", "past_75", "break", "emphasis", "synonyms")
# Each sampler at the CFG scale the benches judge it at (`bench webui_quality`'s SAMPLER_CFG)
SAMPLERS = {"Euler a": 2.0, "DPM++ 2M": 5.0, "Heun": 3.0}
STEPS = 20
IMAGE_SEED = 700_000  # far from every bench's image seeds
RETRY_SEED = 1_000_000  # the retries' seeds lie this far on per round, clear of every first draw's
RETRIES = 3


def prompt_in_form(rng: np.random.Generator, caption: str, form: str) -> str:
    """`caption` written as the WebUI user of that case would: the words the judge reads stay the caption's."""
    words = caption.split()
    if form == "plain":
        return caption
    if form == "past_75":  # every filler word is one CLIP token: 76–90 of them put the caption in the second chunk
        return " ".join(rng.choice(FILLER_WORDS, size=int(rng.integers(76, 91)))) + " " + caption
    if form == "break":
        return " ".join(rng.choice(FILLER_WORDS, size=int(rng.integers(1, 31)))) + " BREAK " + caption
    if form == "emphasis":
        k = int(rng.choice([i for i, w in enumerate(words) if w in COLORS or w in SHAPES]))
        words[k] = f"({words[k]}:{float(rng.choice(EMPHASIS_WEIGHTS))})"
        return " ".join(words)
    if form == "synonyms":
        return " ".join(str(rng.choice(_SYNONYMS_OF[w])) if w in _SYNONYMS_OF else w for w in words)
    raise ValueError(f"unknown prompt form {form!r}; known: {', '.join(FORMS)}")


@dataclass
class OwnPairs:
    """What `own_samples` writes: per prompt, its picture drawn wrong and one drawn right; and how much was drawn."""

    losers: np.ndarray  # (N, 4, 32, 32) float16: the sampler's final latent judged wrong, clamped to [-1, 1]
    winners: np.ndarray  # (N, 4, 32, 32) float16: a final latent of the same prompt judged right
    captions: list[str]
    prompts: list[str]
    samplers: list[str]
    batches: int  # batches drawn so far (the next batch's index)
    drawn: int  # first pictures judged so far
    unpaired: int = 0  # misses whose prompt was never drawn right in the retries

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            losers=self.losers,
            winners=self.winners,
            captions=np.array(self.captions, dtype=str),
            prompts=np.array(self.prompts, dtype=str),
            samplers=np.array(self.samplers, dtype=str),
            counts=np.array([self.batches, self.drawn, self.unpaired]),
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> OwnPairs:
        with np.load(path) as f:
            losers, winners = f["losers"], f["winners"]
            if losers.ndim != 4 or losers.shape[1] != 4 or winners.shape != losers.shape:
                raise ValueError(f"{path}: latents of shapes {losers.shape} / {winners.shape}, expected (N, 4, H, W)")
            captions, prompts = [str(s) for s in f["captions"]], [str(s) for s in f["prompts"]]
            samplers = [str(s) for s in f["samplers"]]
            if not len(captions) == len(prompts) == len(samplers) == len(losers):
                raise ValueError(f"{path}: {len(losers)} pairs but {len(captions)} captions, {len(prompts)} prompts")
            batches, drawn, unpaired = (int(v) for v in f["counts"])
        return cls(losers, winners, captions, prompts, samplers, batches, drawn, unpaired)

    @classmethod
    def empty(cls, size: int = 32) -> OwnPairs:
        return cls(np.zeros((0, 4, size, size), np.float16), np.zeros((0, 4, size, size), np.float16), [], [], [], 0, 0)

    def add(self, losers: torch.Tensor, winners: torch.Tensor, captions: list[str], prompts: list[str], sampler: str):
        self.losers = np.concatenate([self.losers, losers.numpy().astype(np.float16)])
        self.winners = np.concatenate([self.winners, winners.numpy().astype(np.float16)])
        self.captions += captions
        self.prompts += prompts
        self.samplers += [sampler] * len(captions)


def sample(host, prompts: list[str], seed: int, sampler: str) -> torch.Tensor:
    """Final latents (B, 4, 32, 32), clamped as the saved image is."""
    p = host.txt2img(prompts, seed=seed, steps=STEPS, cfg_scale=SAMPLERS[sampler], sampler_name=sampler)
    rgb = p.samples.float().clamp(-1, 1)
    return torch.cat([rgb, torch.zeros_like(rgb[:, :1])], dim=1)


def is_right(latent: torch.Tensor, caption: str) -> bool:
    return caption_matches(judge(picture(latent)), caption)


def draw_batch(host, index: int, seed: int, batch: int) -> tuple[OwnPairs, str, str]:
    """Batch `index`: its pairs (in a fresh `OwnPairs`, counts zero but `unpaired`), form and sampler."""
    rng = np.random.default_rng([seed, index])
    form = str(rng.choice(FORMS))
    sampler = str(rng.choice(list(SAMPLERS)))
    captions = [caption_for(random_specs(rng, (1, 2))) for _ in range(batch)]
    prompts = [prompt_in_form(rng, c, form) for c in captions]
    image_seed = IMAGE_SEED + 10_000 * seed + batch * index
    first = sample(host, prompts, image_seed, sampler)
    wrong = [k for k, c in enumerate(captions) if not is_right(first[k], c)]
    found: dict[int, torch.Tensor] = {}
    for attempt in range(1, RETRIES + 1):
        todo = [k for k in wrong if k not in found]
        if not todo:
            break
        again = sample(host, [prompts[k] for k in todo], image_seed + RETRY_SEED * attempt, sampler)
        found.update({k: again[j] for j, k in enumerate(todo) if is_right(again[j], captions[k])})
    out = OwnPairs.empty(first.shape[-1])
    paired = [k for k in wrong if k in found]
    if paired:
        out.add(first[paired], torch.stack([found[k] for k in paired]), [captions[k] for k in paired],
                [prompts[k] for k in paired], sampler)  # fmt: skip
    out.unpaired = len(wrong) - len(paired)
    return out, form, sampler


def picture(latent: torch.Tensor) -> np.ndarray:
    """The image the host saves, at latent resolution (A1111's truncating 8-bit conversion)."""
    x = ((latent[:3].float() + 1.0) / 2.0).clamp(0, 1)
    return (255.0 * x.permute(1, 2, 0).numpy()).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True, help="the SD1 checkpoint whose misses to collect")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--max-batches", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true", help="append to --out, carrying on after its last batch")
    args = ap.parse_args(argv)
    if args.batch < 1:
        ap.error(f"--batch is at least 1 (got {args.batch})")
    from .host import ToyHost

    torch.set_num_threads(args.threads)
    host = ToyHost.load_sd1(args.weights)
    misses = OwnPairs.load(args.out) if args.resume and args.out.exists() else OwnPairs.empty()
    t0 = time.time()
    while (time.time() - t0) / 60 < args.minutes and not (args.max_batches and misses.batches >= args.max_batches):
        new, form, sampler = draw_batch(host, misses.batches, args.seed, args.batch)
        misses.add(torch.from_numpy(new.losers), torch.from_numpy(new.winners), new.captions, new.prompts, sampler)
        misses.unpaired += new.unpaired
        misses.batches += 1
        misses.drawn += args.batch
        misses.save(args.out)
        wrong = len(new.captions) + new.unpaired
        print(f"batch {misses.batches} {form} / {sampler}: {wrong} wrong; {len(misses.captions)} pairs, "
              f"{misses.unpaired} unpaired of {misses.drawn} so far", flush=True)  # fmt: skip
    summary = {"pairs": len(misses.captions), "unpaired": misses.unpaired, "drawn": misses.drawn}
    print(json.dumps({**summary, "batches": misses.batches}))


if __name__ == "__main__":
    main()
