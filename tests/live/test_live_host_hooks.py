"""What the real host does around a generation, recorded by the probe extension (tests/live/probe_extension):
the order of script hooks and denoiser callbacks, the batch layout the denoiser sees, the hires second pass, and
which hooks are skipped when sampling raises or is interrupted. The adapter relies on each of these."""

from __future__ import annotations

from typing import Any

import pytest

from tests.live.conftest import Probe

pytestmark = pytest.mark.live


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def first(events: list[dict[str, Any]], name: str) -> int:
    return names(events).index(name)


def test_hook_order_and_batch_layout(probe: Probe) -> None:
    answer, events, error = probe.txt2img(prompt="a red cube", batch_size=2, steps=2)
    assert answer is not None, error
    seq = names(events)
    print("\n[live] hook order:", " > ".join(dict.fromkeys(seq)))
    order = [
        "before_process",
        "process",
        "before_process_batch",
        "after_extra_networks_activate",
        "process_batch",
        "process_before_every_sampling",
        "cfg_denoiser",
        "post_sample",
        "postprocess_batch",
        "postprocess_batch_list",
        "postprocess_image",
        "postprocess",
    ]
    assert [first(events, n) for n in order] == sorted(first(events, n) for n in order), seq
    assert seq.count("postprocess_image") == 2 and seq.count("postprocess") == 1
    den = [e for e in events if e["event"] == "cfg_denoiser"]
    # params.sampling_step is shared.state.sampling_step, which the k-diffusion sampler's per-step callback sets
    # AFTER each step: it lags the denoiser call by one (0, 0, 1, ...). The denoiser's own `step` counts calls.
    assert [e["call"] for e in den] == [0, 1], den
    assert [e["step"] for e in den] == [0, 0] and all(e["total"] == 2 for e in den), den
    # Two images x one sub-prompt each: the denoiser's x holds 2 cond rows then 2 uncond rows.
    assert den[0]["x"][0] == 4 and den[0]["denoiser"] == "CFGDenoiserKDiffusion", den[0]
    # SD1: the conds are one tensor [rows, 77 * chunks, 768]; SDXL: a dict of crossattn [rows, 77k, D] and
    # vector [rows, V] (A1111's DictWithShape).
    cond = den[0]["text_cond"]
    if isinstance(cond, dict):
        assert set(cond) == {"crossattn", "vector"} and cond["crossattn"][0] == cond["vector"][0] == 2, cond
    else:
        assert cond[0] == 2 and cond[1] % 77 == 0 and cond[2] == 768, cond
    assert seq.count("cfg_denoised") == 2 and seq.count("cfg_after_cfg") == 2


def test_hires_fix_calls_sampling_hook_twice(probe: Probe) -> None:
    answer, events, error = probe.txt2img(
        prompt="a red cube",
        steps=2,
        enable_hr=True,
        hr_scale=2,
        hr_upscaler="Latent",
        hr_second_pass_steps=1,
        denoising_strength=0.5,
    )
    assert answer is not None, error
    seq = names(events)
    sampling = [e for e in events if e["event"] == "process_before_every_sampling"]
    assert [e["hr"] for e in sampling] == [False, True], seq
    assert [(e["width"], e["height"]) for e in sampling] == [(64, 64), (64, 64)]  # p.width stays the first size
    assert first(events, "before_hr") < seq.index("process_before_every_sampling", first(events, "before_hr"))
    hr_steps = [e for e in events if e["event"] == "cfg_denoiser" and e["hr"]]
    assert hr_steps and hr_steps[0]["x"][2:] == [16, 16], hr_steps  # 128x128 image -> 16x16 latent
    assert hr_steps[0]["call"] == 0, hr_steps  # the second pass has a sampler (and denoiser) of its own
    assert seq[-1] == "postprocess"


def test_timestep_sampler_uses_the_timesteps_denoiser(probe: Probe) -> None:
    answer, events, error = probe.txt2img(prompt="a red cube", steps=2, sampler_name="DDIM")
    assert answer is not None, error
    den = [e for e in events if e["event"] == "cfg_denoiser"]
    assert {e["denoiser"] for e in den} == {"CFGDenoiserTimesteps"}, den
    # A1111's DDIM takes timesteps range(0, 1000, 1000 // N) and calls the model at all but one of them: N - 1
    # calls when N divides 1000 (2, 20, 25, 50 steps), N otherwise. total_sampling_steps still says N, so a
    # feature must not wait for a "last step" that may never come.
    assert [e["call"] for e in den] == [0] and den[0]["x"][0] == 2, den
    assert den[0]["total"] == 2, den
    assert names(events)[-1] == "postprocess"


def test_exception_in_sampling_skips_postprocess(probe: Probe) -> None:
    answer, events, error = probe.txt2img(action="raise_in_sampling", prompt="a red cube", steps=3)
    assert answer is None and "HTTP 500" in error and "live-probe: deliberate failure" in error, error
    seq = names(events)
    # The UNet raised during the denoiser's second call.
    assert [e["call"] for e in events if e["event"] == "cfg_denoiser"] == [0, 1], seq
    for skipped in ("post_sample", "postprocess_batch", "postprocess_image", "postprocess"):
        assert skipped not in seq, seq
    # The server is still usable afterwards.
    answer, events, error = probe.txt2img(prompt="a red cube", steps=2)
    assert answer is not None and names(events)[-1] == "postprocess", error


def test_interrupt_in_sampling_still_runs_postprocess(probe: Probe) -> None:
    answer, events, error = probe.txt2img(action="interrupt_in_sampling", prompt="a red cube", steps=3)
    assert answer is not None, error
    seq = names(events)
    assert [e["call"] for e in events if e["event"] == "cfg_denoiser"] == [0], seq
    assert seq[-1] == "postprocess" and events[-1]["interrupted"] is True, events[-1]
    assert len(answer["images"]) == 1


def test_override_settings_of_a_default_setting_leak_into_later_jobs(probe: Probe) -> None:
    # process_images() stores the old values of overridden settings only for keys in opts.data (settings saved in
    # config.json at least once), so a setting still at its default keeps the override after the job. Anything
    # that runs jobs with override_settings (the bandit tab, X/Y/Z) must set every setting it relies on itself.
    try:
        answer, events, error = probe.txt2img(steps=1, override_settings={"batch_cond_uncond": False})
        assert answer is not None, error
        answer, events, error = probe.txt2img(steps=1)
        assert answer is not None, error
        assert events[first(events, "before_process")]["batch_cond_uncond"] is False, events[:2]
    finally:
        probe.txt2img(steps=1, override_settings={"batch_cond_uncond": True})
