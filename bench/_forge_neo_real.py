"""`bench forge_neo` on a real Forge Neo: the checkout the live tier uses (PROMPTSCOPE_WEBUI, PROMPTSCOPE_WEBUI_PYTHON,
PROMPTSCOPE_WEBUI_ARGS; see tests/live/conftest.py), started twice through tests/live/webui_harness.py and measured
through its HTTP API only:

- capture_time_ratio: the same txt2img request with the heatmaps on / off, interleaved, median of the repeats.
  Sampling time is the probe's clock from `process_before_every_sampling` to `post_sample` (the UNet calls where
  the capture acts); request_time_ratio is the whole HTTP request (it also renders and encodes the overlay grid).
- unet_calls_per_step with 0/1/2 concepts (batch of 2): the probe extension counts forwards of Neo's UNet module.
- guided_max_abs_diff: the probe records every UNet call's rows (a function wrapper inside PromptScope's) and each
  step's denoised result after every CFG hook; lib_ext's `combine` is recomputed here from those rows.
- feature_off_identical: PNG bytes of a request with PromptScope installed but off (no args, and args saying off)
  equal those of the same request to a second Neo started without PromptScope.
"""

from __future__ import annotations

import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.live.conftest import BANDIT_DIR_ENV, PROBE_DIR, PROBE_LINK_NAME, PROBE_TITLE, SCRIPT_TITLES
from tests.live.webui_harness import (
    ENV_CHECKOUT,
    WebUIClient,
    WebUIConfig,
    WebUIServer,
    decode_image,
    is_forge_neo,
    scratch_settings,
)

GUIDANCE = SCRIPT_TITLES["guidance"]
HEATMAPS = SCRIPT_TITLES["heatmaps"]
PROMPT = "a red cube on a table"
CONCEPTS = (" AND_PERP a blue ball :0.8", " AND_SALT a green hat :0.5")
# A1111's infotext "Key: value" pairs (values quoted when they hold a comma).
_INFOTEXT_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def neo_config() -> WebUIConfig | str:
    """The Neo checkout to measure, or why there is none."""
    config = WebUIConfig.from_env()
    if config is None:
        return f"set {ENV_CHECKOUT} (and the live tier's other variables) to a Forge Neo checkout"
    if not is_forge_neo(config.checkout):
        return f"{config.checkout} is not Forge Neo (modules_forge/forge_version.py)"
    return config


def _infotext_params(text: str) -> dict[str, str]:
    last = text.strip().splitlines()[-1]
    return {k.strip(): v.strip().strip('"') for k, v in _INFOTEXT_PAIR.findall(last)}


def _events(log: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


class _Run:
    """One Neo server with PromptScope and the probe: requests with the probe on, its events and dumps."""

    def __init__(self, server: WebUIServer, probe_log: Path, dump: Path, size: int) -> None:
        self.client: WebUIClient = server.client
        self.probe_log = probe_log
        self.dump = dump
        self.size = size

    def txt2img(self, prompt: str, action: str = "", alwayson: dict[str, list[Any]] | None = None, **kw: Any):
        self.probe_log.unlink(missing_ok=True)
        shutil.rmtree(self.dump, ignore_errors=True)
        self.dump.mkdir(parents=True)
        t0 = time.perf_counter()
        res = self.client.txt2img(prompt, alwayson={PROBE_TITLE: [True, action], **(alwayson or {})},
                                  width=self.size, height=self.size, **kw)  # fmt: skip
        seconds = time.perf_counter() - t0
        return res, _events(self.probe_log), seconds


def _sampling_seconds(events: list[dict[str, Any]]) -> float:
    start = next(e["t"] for e in events if e["event"] == "process_before_every_sampling")
    end = next(e["t"] for e in events if e["event"] == "post_sample")
    return end - start


def _capture_ratio(run: _Run, repeats: int, steps: int) -> dict[str, Any]:
    times: dict[str, dict[str, list[float]]] = {"off": {"sampling": [], "request": []},
                                                 "on": {"sampling": [], "request": []}}  # fmt: skip
    identical = True
    for _ in range(repeats):
        images = {}
        for name, alwayson in (("off", {}), ("on", {HEATMAPS: [True, "cube, table"]})):
            res, events, seconds = run.txt2img(PROMPT, alwayson=alwayson, steps=steps)
            times[name]["sampling"].append(_sampling_seconds(events))
            times[name]["request"].append(seconds)
            images[name] = res["images"]
        assert len(images["on"]) == 2, "the heatmaps gave no overlay grid"
        identical &= decode_image(images["on"][0]) == decode_image(images["off"][0])
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    return {
        "capture_time_ratio": med["on"]["sampling"] / med["off"]["sampling"],
        "request_time_ratio": med["on"]["request"] / med["off"]["request"],
        "sampling_seconds_off": med["off"]["sampling"],
        "sampling_seconds_on": med["on"]["sampling"],
        "repeats": repeats,
        "capture_on_image_identical": identical,
    }


def _calls_per_step(run: _Run, steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (0, 1, 2):
        prompt = PROMPT + "".join(CONCEPTS[:n])
        res, events, _s = run.txt2img(prompt, "forge_rows", {GUIDANCE: [True]}, steps=steps, batch_size=2)
        comments = res["info"].get("comments") or ""
        assert "PromptScope" not in comments, comments
        forwards = [e["rows"] for e in events if e["event"] == "unet_forward"]
        out[str(n)] = {"unet_calls_per_step": len(forwards) / steps, "rows_per_call": sorted(set(forwards)),
                       "images": 2}  # fmt: skip
    return out


def _guided_vs_combine(run: _Run, steps: int, cfg_scale: float = 5.0) -> dict[str, Any]:
    """Every step of a guided image: Neo's denoised result vs lib_ext's combine of the rows Neo's UNet gave."""
    from lib_ext.guidance.combine import combine
    from lib_ext.guidance.feature import prepare_prompts
    from lib_ext.guidance.settings import GuidanceSettings
    from lib_ext.guidance.state import GuidanceState
    from lib_ext.guidance.step import GuidanceStep
    from lib_ext.prompt_multicond import split_and

    prompt = PROMPT + "".join(CONCEPTS)
    res, events, _s = run.txt2img(prompt, "forge_rows", {GUIDANCE: [True]}, steps=steps, cfg_scale=cfg_scale)
    infotext = res["info"]["infotexts"][0]
    settings = GuidanceSettings.from_infotext(_infotext_params(infotext))
    assert settings is not None, infotext
    total = next((e["total_calls"] for e in events if e["event"] == "cfg_denoiser" and e.get("total_calls")), steps)
    prepared = prepare_prompts([prompt])
    weights = [w for _t, w in split_and(prepared.host_prompts[0])]
    state = GuidanceState()
    diffs, vs_cfg, pending, dtypes = [], [], [], set()
    for path in sorted(run.dump.glob("*.npz")):
        data = {k: v for k, v in np.load(path).items()}
        if path.stem.endswith("-unet"):
            pending.append(data)
            continue
        kinds_rows: list[tuple[int, np.ndarray]] = []
        for call in pending:
            dtypes.add(str(call["dtype"]))
            kinds = [int(k) for k in call["cond_or_uncond"]]
            per = call["out"].shape[0] // len(kinds)
            kinds_rows += [(k, call["out"][i * per : (i + 1) * per]) for i, k in enumerate(kinds)]
            x, sigma = torch.from_numpy(call["input"][:per]), torch.from_numpy(call["timestep"][:per])
        conds = [torch.from_numpy(r) for k, r in kinds_rows if k == 0]
        uncond = [torch.from_numpy(r) for k, r in kinds_rows if k == 1]
        pending = []
        rows = torch.cat([*conds, *uncond])
        step = GuidanceStep(x_out=rows, x_in=x.repeat(rows.shape[0], 1, 1, 1), sigma=sigma,
                            conds_list=[[(j, w) for j, w in enumerate(weights)]], cond_scale=cfg_scale,
                            step=int(data["step"]), total_steps=int(total), prediction="x0")  # fmt: skip
        expected = combine(step, prepared.trees, settings, state)
        guided = torch.from_numpy(data["denoised"])
        diffs.append(float((guided - expected).abs().max()))
        plain_cfg = uncond[0] + cfg_scale * (conds[0] - uncond[0])  # the concepts' effect: not a vacuous equality
        vs_cfg.append(float((guided - plain_cfg).abs().max()))
    assert diffs, "the probe dumped no step"
    return {"guided_max_abs_diff": max(diffs), "guided_steps_compared": len(diffs), "rows_per_step": len(weights) + 1,
            "guided_vs_plain_cfg_max_abs_diff": max(vs_cfg), "guidance_settings": settings.to_infotext(),
            "row_dtypes": sorted(dtypes)}  # fmt: skip


def _plain_png(client: WebUIClient, size: int, steps: int, **alwayson: Any) -> bytes:
    res = client.txt2img(PROMPT, alwayson=alwayson or None, width=size, height=size, steps=steps)
    return decode_image(res["images"][0])


def run(config: WebUIConfig, quick: bool) -> dict[str, Any]:
    repeats = 3 if quick else 7
    steps = 2 if quick else 4
    size = 64 if quick else 128
    result: dict[str, Any] = {"host": f"Forge Neo ({config.checkout.name}), HTTP API", "steps": steps,
                              "size": size, "sampler": "Euler", "cfg_scale": 5.0}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-forge-neo-real-") as tmp_name:
        tmp = Path(tmp_name)
        probe_log, dump = tmp / "probe.jsonl", tmp / "dump"
        cfg = scratch_settings(config, tmp / "settings")
        env = {"PROMPTSCOPE_PROBE_LOG": str(probe_log), "PROMPTSCOPE_PROBE_DUMP": str(dump),
               BANDIT_DIR_ENV: str(tmp / "bandit")}  # fmt: skip
        t0 = time.perf_counter()
        with WebUIServer(cfg, tmp / "neo.log", extra_extensions={PROBE_LINK_NAME: PROBE_DIR}, extra_env=env) as server:
            run_ = _Run(server, probe_log, dump, size)
            run_.txt2img(PROMPT, steps=steps)  # loads the model; not timed
            off_png = _plain_png(server.client, size, steps)
            off_args_png = _plain_png(server.client, size, steps, **{GUIDANCE: [False], HEATMAPS: [False]})
            result.update(_capture_ratio(run_, repeats, steps))
            print(f"capture: {result['capture_time_ratio']:.3f} (request {result['request_time_ratio']:.3f})")
            result["concepts"] = _calls_per_step(run_, steps)
            calls = {v["unet_calls_per_step"] for v in result["concepts"].values()}
            result["unet_calls_per_step_equal"] = len(calls) == 1
            print(f"UNet calls per step: {result['concepts']}")
            result.update(_guided_vs_combine(run_, steps=3 if quick else 6))
            n = result["guided_steps_compared"]
            print(f"guided vs combine: {result['guided_max_abs_diff']:.3g} over {n} steps")
        with WebUIServer(cfg, tmp / "neo-plain.log", promptscope=False) as plain:
            plain_png = _plain_png(plain.client, size, steps)
        result["feature_off_identical"] = off_png == plain_png and off_args_png == plain_png
        result["seconds"] = time.perf_counter() - t0
        print(f"feature off identical to Neo without PromptScope: {result['feature_off_identical']}")
    return result
