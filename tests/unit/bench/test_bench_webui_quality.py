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


def test_wilson_interval_holds_the_observed_share_and_narrows_with_more_captions():
    assert wq.wilson_interval(0, 10)[0] == 0.0
    assert abs(wq.wilson_interval(0, 10)[1] - 1.96**2 / (10 + 1.96**2)) < 1e-9  # the closed form at p = 0
    assert wq.wilson_interval(10, 10)[1] == 1.0
    low24, high24 = wq.wilson_interval(23, 24)
    low48, high48 = wq.wilson_interval(46, 48)
    assert low24 < 23 / 24 < high24 and low48 < 46 / 48 < high48
    assert high48 - low48 < high24 - low24
    assert low24 < 0.85  # 23 of 24 does not show an accuracy of 0.95 on its own


def test_bench_options_read_the_caption_count_and_hosts_and_refuse_bad_values():
    import pytest

    assert wq.bench_options({}, quick=False) == (wq.N_FULL, True)
    assert wq.bench_options({}, quick=True) == (wq.N_QUICK, True)
    assert wq.bench_options({"PROMPTSCOPE_BENCH_CAPTIONS": "48", "PROMPTSCOPE_BENCH_HOSTS": "toyhost"}, False) == (
        48,
        False,
    )
    for bad in (
        {"PROMPTSCOPE_BENCH_CAPTIONS": "0"},
        {"PROMPTSCOPE_BENCH_CAPTIONS": "x"},
        {"PROMPTSCOPE_BENCH_HOSTS": "a"},
    ):
        with pytest.raises(SystemExit, match="PROMPTSCOPE_BENCH_"):
            wq.bench_options(bad, quick=False)
    assert wq.captions(6)[:3] == wq.captions(3)  # a larger run extends a smaller one


def test_toyhost_only_runs_without_a_webui_and_reports_only_toyhost_keys(monkeypatch):
    recorders: list[_Recorder] = []

    def fake_toy(weights):
        recorders.append(_Recorder())
        return recorders[-1]

    def no_webui(weights):
        raise AssertionError("the WebUI was started")

    monkeypatch.setattr(wq, "ToyBackend", fake_toy)
    monkeypatch.setattr(wq, "WebUIBackend", no_webui)
    monkeypatch.setenv("PROMPTSCOPE_BENCH_HOSTS", "toyhost")
    monkeypatch.setenv("PROMPTSCOPE_BENCH_CAPTIONS", "2")
    result = wq.main(quick=True)
    assert result["n_captions"] == 2
    assert not any(k.startswith("webui_") for k in result)
    assert result["toyhost_plain_caption_accuracy"] == 0.0
    assert result["max_abs_delta"] is None
    assert sum(len(c[0]) for c in recorders[0].calls if c[2] == "Euler a" and not c[4]) >= 2 * 5
