"""Forge Neo glue (promptscope_forge): cost and exactness of the patches, on the Neo test double and on a real Neo.

Keys `sd1`, `sdxl`: `tests/host/fake_neo` (Neo's UnetPatcher / CFG path, re-implemented from its signatures) on the
A1111 double's tiny SD1-like and SDXL-like models. Key `real_neo`: the same figures measured through a real Forge
Neo's HTTP API when PROMPTSCOPE_WEBUI names a Neo checkout, as for the live tier (see bench/_forge_neo_real.py);
otherwise it says why it was skipped. On the double:
- unet_calls_per_step / rows_per_call for 0, 1, 2 concepts (expected: 1 call, 2·B + B·concepts rows);
- feature_off_identical: guidance off + heatmaps on gives the bit-identical image (torch.equal);
- guided_max_abs_diff: first guided step vs lib_ext's `combine` recomputed from rows computed one by one;
- capture_time_ratio: wall time with the heatmap capture on / off (median of repeats).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
HOST_TESTS = REPO / "tests" / "host"


def _mount() -> Any:
    for path in (str(HOST_TESTS / "fake_webui"), str(HOST_TESTS), str(REPO)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import neo_double

    neo_double.mount()
    import modules
    import modules.paths
    import modules.processing
    import modules.prompt_parser
    import modules.sd_models
    import modules.shared

    modules.paths.data_path = tempfile.mkdtemp(prefix="bench-forge-neo-")
    modules.shared.reset()
    import promptscope_a1111  # noqa: F401  (mounts lib_ext as promptscope_lib_ext, as in the WebUI)

    return modules, neo_double


def _calls_per_step(m: Any, nd: Any, model: Any, n_concepts: int, steps: int) -> dict[str, Any]:
    from backend.sampling.sampling_function import UNET_CALLS
    from promptscope_lib_ext.guidance.feature import GuidanceFeature

    prompt = "a cat" + "".join([" AND_PERP a dog :0.8", " AND_SALT a hat :0.5"][:n_concepts])
    UNET_CALLS.clear()
    nd.generate(m, model, [prompt, prompt.replace("cat", "fox")], (GuidanceFeature(),), steps=steps)
    return {
        "unet_calls_per_step": len(UNET_CALLS) / steps,
        "rows_per_call": sorted({rows for _k, rows in UNET_CALLS}),
        "images": 2,
    }


def _guided_diff(m: Any, nd: Any, model: Any) -> float:
    guided, expected, _rows = nd.guided_and_recomputed(m, model, ["a cat AND_PERP a dog :0.8 AND_SALT a hat :0.5"])
    return float((guided - expected).abs().max())


def main(quick: bool = False) -> dict[str, Any]:
    torch.set_num_threads(1)
    m, nd = _mount()
    from promptscope_lib_ext.guidance.feature import GuidanceFeature
    from promptscope_lib_ext.heatmaps.feature import HeatmapFeature

    steps = 3 if quick else 6
    repeats = 3 if quick else 7
    result: dict[str, Any] = {"host": "fake_neo double (tests/host/fake_neo)", "steps": steps}
    for kind in ("sd1", "sdxl"):
        model = nd.NeoModel(m.sd_models.load_model(kind))
        per = {str(n): _calls_per_step(m, nd, model, n, steps) for n in (0, 1, 2)}
        prompts = ["a cat AND a dog :0.5", "a red fox"]
        base, _ = nd.generate(m, model, prompts, steps=steps)
        on, _ = nd.generate(m, model, prompts, (GuidanceFeature(enabled=False), HeatmapFeature()), steps=steps)
        timings: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(repeats):
            for name, features in (("off", ()), ("on", (HeatmapFeature(),))):
                t0 = time.perf_counter()
                nd.generate(m, model, prompts, features, steps=steps)
                timings[name].append(time.perf_counter() - t0)
        result[kind] = {
            "concepts": per,
            "feature_off_identical": bool(torch.equal(base, on)),
            "capture_time_ratio": statistics.median(timings["on"]) / statistics.median(timings["off"]),
            "guided_max_abs_diff": _guided_diff(m, nd, model),
        }
        print(f"{kind}: {result[kind]}")
    from bench import _forge_neo_real

    config = _forge_neo_real.neo_config()
    if isinstance(config, str):
        result["real_neo"] = {"skipped": config}
    else:
        result["real_neo"] = _forge_neo_real.run(config, quick)
    print(f"real_neo: {result['real_neo']}")
    return result
