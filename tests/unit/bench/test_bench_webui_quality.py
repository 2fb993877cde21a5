"""`bench webui_quality`'s cases and per-sampler CFG, and the sampler bench that chooses that CFG (no WebUI needed)."""

from __future__ import annotations

import numpy as np

from bench import toyworld_samplers as ts
from bench import webui_quality as wq
from lib_ext.toyworld.vocab import COLORS, SYNONYMS


def test_every_case_runs_at_a_cfg_the_sampler_bench_judged_for_its_sampler():
    judged = {(sampler, cfg) for sampler, cfg, steps in ts.SD1_SETTINGS if steps == wq.STEPS}
    for case in wq.CASES:
        assert (case.sampler, case.cfg) in judged, case.name
    assert {c.sampler for c in wq.CASES} == set(wq.SAMPLER_CFG)


def test_best_per_sampler_takes_the_highest_accuracy_and_the_lower_cfg_on_a_tie():
    acc = {"Euler a:1.5:20": 0.95, "Euler a:2:20": 0.95, "Heun:1.5:20": 0.9, "Heun:3:20": 0.93, "DPM++ 2M:4:20": 0.8}
    assert ts.best_per_sampler(acc) == {"Euler a": 1.5, "Heun": 3.0, "DPM++ 2M": 4.0}


class _Recorder:
    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int, str, float, bool]] = []

    def generate(self, prompts, seed, sampler, cfg, hires, heatmaps, sega):
        self.calls.append((prompts, seed, sampler, cfg, hires))
        return [wq.Output(np.zeros((32, 32, 3), dtype=np.uint8)) for _ in prompts]


def test_run_case_sends_each_case_its_samplers_cfg_and_per_image_seeds():
    caps = wq.captions(4)
    for case in wq.CASES:
        rec = _Recorder()
        result = wq.run_case(rec, case, caps)
        assert {c[2:4] for c in rec.calls} == {(case.sampler, wq.SAMPLER_CFG[case.sampler])}
        assert [c[1] for c in rec.calls] == [wq.IMAGE_SEED + k for k in range(0, 4, case.batch)]
        assert all(c[4] == case.hires for c in rec.calls)
        assert result["caption_accuracy"] == 0.0  # a black picture draws no caption
        assert result["miou_shape"] is None  # and no object to score a map on


def test_case_prompts_keep_the_caption_and_change_only_what_the_case_names():
    caption = "a red circle and a blue square"
    by_name = {c.name: c for c in wq.CASES}
    assert by_name["past_75"].words(caption, 0).split()[-len(caption.split()) :] == caption.split()
    assert len(by_name["past_75"].words(caption, 0).split()) == 76 + len(caption.split())
    assert by_name["emphasis"].words(caption, 0) == "a (red:1.3) circle and a blue square"
    synonyms = by_name["multi_token"].words(caption, 0).split()
    assert [SYNONYMS.get(w, w) for w in synonyms] == caption.split()
    assert all(w in SYNONYMS for w in synonyms if SYNONYMS.get(w, w) in ("red", "blue", "circle"))
    assert any(w in COLORS for w in by_name["plain"].words(caption, 0).split())


def test_run_case_lists_each_caption_drawn_wrong_with_what_was_drawn():
    caps = wq.captions(3)
    misses: list[str] = []
    wq.run_case(_Recorder(), wq.CASES[0], caps, misses)
    assert misses == [f"#{i} {c!r}: drew nothing" for i, c in enumerate(caps)]
