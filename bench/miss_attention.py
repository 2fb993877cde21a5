"""Where each word's attention went in the pictures `bench webui_quality` draws wrong (toy host, same seeds).

    PROMPTSCOPE_TOYWORLD_SD1=<file> python -m bench miss_attention [--quick]
    PROMPTSCOPE_BENCH_MISSES=multi_token:14,plain:6 python -m bench miss_attention

For each caption that the judge finds drawn wrong, in every case of `webui_quality` (24 captions a case, 4 with
`--quick`, `PROMPTSCOPE_BENCH_CAPTIONS` as there), or only for the `case:index` pairs of `PROMPTSCOPE_BENCH_MISSES`:
the objects the judge found and, per prompt word, the share of that word's raw map (resized to the picture, negatives
dropped) on each object. An object the caption names once but drawn twice is a duplicate; it is *split* when every
colour and shape word of its phrase puts at least `SPLIT` of its map on each of two copies: the sampler built both
copies from the word, so a loss on the model's attention has a handle on it at sampling time.

Returns `misses`, `duplicates`, `duplicates_split`, and the `weights` judged.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from bench import webui_quality as wq
from lib_ext.toyworld.judge import DetectedObject, caption_matches, judge, parse_caption

SPLIT = 0.15


def map_shares(out: wq.Output, found: list[DetectedObject]) -> dict[str, list[float]]:
    """Per prompt word: the share of its map's mass on each found object (in `found`'s order)."""
    shares: dict[str, list[float]] = {}
    for word, raw in out.maps.items():
        heat = wq.map_at_picture(raw, out.picture).clamp_min(0)
        total = float(heat.sum())
        shares[word] = [float(heat[torch.from_numpy(d.mask)].sum()) / total if total > 0 else 0.0 for d in found]
    return shares


def duplicates(found: list[DetectedObject], caption: str) -> list[tuple[str, str]]:
    """(colour, shape) of each object the caption names once that the picture holds twice or more."""
    wanted = Counter(parse_caption(caption))
    have = Counter((d.color, d.shape) for d in found)
    return [key for key, n in have.items() if n >= 2 and wanted.get(key, 0) == 1]


def is_split(key: tuple[str, str], found: list[DetectedObject], shares: dict[str, list[float]]) -> bool:
    """Every word of the duplicated phrase (a synonym stands for its word) holds ≥ SPLIT on two of its copies."""
    copies = [i for i, d in enumerate(found) if (d.color, d.shape) == key]
    words = [w for w in shares if wq.canonical(w) in key]
    if not words:
        return False
    return all(sum(shares[w][i] >= SPLIT for i in copies) >= 2 for w in words)


def chosen_pairs(raw: str) -> list[tuple[str, int]]:
    """`case:index,…` → [(case, index)]; a clear error for an unknown case or a bad index."""
    names = {c.name for c in wq.CASES}
    pairs = []
    for item in filter(None, (s.strip() for s in raw.split(","))):
        case, _, index = item.partition(":")
        if case not in names or not index.isdigit():
            raise SystemExit(
                f"PROMPTSCOPE_BENCH_MISSES wants case:index pairs (cases: {', '.join(sorted(names))}), got {item!r}"
            )
        pairs.append((case, int(index)))
    return pairs


def report(backend: Any, case: wq.Case, caps: list[str], indices: list[int], only_misses: bool) -> dict[str, int]:
    """Prints the shares for the given captions of one case; counts misses, duplicates and split duplicates."""
    counts = Counter(misses=0, duplicates=0, duplicates_split=0)
    for start in sorted({i - i % case.batch for i in indices}):
        chunk = caps[start : start + case.batch]
        prompts = [case.words(c, start + k) for k, c in enumerate(chunk)]
        outs = backend.generate(prompts, wq.IMAGE_SEED + start, case.sampler, case.cfg, case.hires, True, False)
        for k, (caption, out) in enumerate(zip(chunk, outs, strict=True)):
            if start + k not in indices:
                continue
            found = judge(out.picture)
            right = caption_matches(found, caption)
            if right and only_misses:
                continue
            counts["misses"] += not right
            drawn = ", ".join(f"{d.color} {d.shape}" for d in found) or "nothing"
            print(f"  {case.name} #{start + k} {prompts[k]!r}: {'right' if right else 'drew ' + drawn}", flush=True)
            shares = map_shares(out, found)
            for word, row in shares.items():
                print(f"    {word:>12} " + " ".join(f"{s:.2f}" for s in row), flush=True)
            for key in duplicates(found, caption):
                counts["duplicates"] += 1
                split = is_split(key, found, shares)
                counts["duplicates_split"] += split
                print(f"    {key[0]} {key[1]} drawn twice: {'attention on both copies' if split else 'not split'}")
    return dict(counts)


def main(quick: bool = False) -> dict:
    from lib_ext.toyworld.ldm_weights import DEFAULT_LDM_WEIGHTS

    torch.set_num_threads(int(os.environ.get("PROMPTSCOPE_BENCH_THREADS", "2")))
    weights = Path(os.environ.get("PROMPTSCOPE_TOYWORLD_SD1") or DEFAULT_LDM_WEIGHTS)
    n, _ = wq.bench_options(os.environ, quick)
    pairs = chosen_pairs(os.environ.get("PROMPTSCOPE_BENCH_MISSES", ""))
    caps = wq.captions(max([n] + [i + 1 for _, i in pairs]))
    backend = wq.ToyBackend(weights)
    t0 = time.time()
    total = Counter(misses=0, duplicates=0, duplicates_split=0)
    for case in wq.CASES:
        indices = [i for c, i in pairs if c == case.name] if pairs else list(range(n))
        if indices:
            total.update(report(backend, case, caps, indices, only_misses=not pairs))
    return {"weights": str(weights), **total, "seconds": round(time.time() - t0)}
