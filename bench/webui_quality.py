"""The toy world measured through the real WebUI and through the toy host, on the same SD1 checkpoint and seeds.

    PROMPTSCOPE_WEBUI=/path/to/stable-diffusion-webui python -m bench webui_quality [--quick]
    PROMPTSCOPE_BENCH_HOSTS=toyhost PROMPTSCOPE_BENCH_CAPTIONS=48 python -m bench webui_quality

`PROMPTSCOPE_BENCH_CAPTIONS` sets the captions per case (the first N of the same list, so a larger run extends a
smaller one); `PROMPTSCOPE_BENCH_HOSTS=toyhost` runs the toy host alone (no WebUI: to judge a checkpoint while
training it; only `toyhost_*` keys, `max_abs_delta` null).

The checkout is one `tools/prepare_webui.py` prepared (it puts lib_ext/toyworld/weights/toyworld-sd1.safetensors
and its yaml in models/Stable-diffusion and the tiny CLIP config in the Hugging Face cache). The WebUI is started
with that checkpoint (the live tier's harness: CPU, offline, 127.0.0.1, scratch output folders) and driven through
`/sdapi/v1/txt2img` with PromptScope's `alwayson_scripts`; the toy host (`ToyHost.load_sd1`) runs the same prompts,
seeds and settings in this process. Keys `webui_<case>_<metric>` and `toyhost_<case>_<metric>`, and
`max_abs_delta` over every pair.

Cases (20 steps, Euler a unless named, each sampler at its CFG in `SAMPLER_CFG`; 256×256):
- plain; batch2 (two different captions in one batch of 2: the WebUI gets them through the live tier's probe
  extension, which sets one prompt per image as Dynamic Prompts does); past_75 (76 filler tokens first, so the
  object words are in the second 75-token chunk); break (`filler BREAK caption`); emphasis (the first colour word
  as `(word:1.3)`); multi_token (every colour or shape with a synonym takes it: vermilion / 赤 for red, cerulean
  for blue, roundel for circle — several CLIP tokens each, 赤 three byte-level pieces); hires (Latent upscaler
  ×1.5, denoising 0.5, the second pass's maps and image at 48×48 latents); dpmpp_2m; heun.
Metrics per case: `caption_accuracy` (the judge finds exactly the caption's objects in the picture, read at latent
resolution: the mean of each 8×8 pixel block); `miou_shape` / `miou_color` (each colour/shape word's raw map —
the WebUI's exported `.safetensors`, the toy host's feature result — resized to the picture, min-max normalised,
DAAM's τ 0.4, against the mask of the object the judge found for its phrase; a synonym's map stands for its word).
Semantic guidance (`sega_*`): SEGA's "add" trials of `bench semantic_guidance` (shape-only caption, `AND_TOPK
<another colour> :1`, mode sega at the UI's defaults, DPM++ 2M, CFG 4): `concept_success`, `composition_iou` (median
mask IoU of the object before and after), `rewrite_iou` (the same with the colour written into the caption).
"""

from __future__ import annotations

import base64
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.attention_maps import _word_truth as word_truth
from bench.semantic_guidance import main_object, mask_iou  # the SEGA trials are that bench's, scored alike
from lib_ext.heatmaps.aggregate import iou, threshold_mask
from lib_ext.toyworld.judge import DetectedObject, caption_matches, judge
from lib_ext.toyworld.scenes import caption_for, random_specs
from lib_ext.toyworld.vocab import COLORS, SHAPES, SYNONYMS

STEPS = 20
# Each sampler's CFG scale: the 14,000-step SD1 checkpoint's best for that sampler on held-out captions
# (PROMPTSCOPE_TOYWORLD_SD1=… python -m bench toyworld_samplers), so no case is scored off its sampler's best scale;
# kept for the DPO soup that replaced it, so the two files' figures compare at one setting.
SAMPLER_CFG = {"Euler a": 2.0, "DPM++ 2M": 5.0, "Heun": 3.0}
SIZE = 256
TAU = 0.4
CAPTION_SEED = 9100
IMAGE_SEED = 12000
N_FULL, N_QUICK = 24, 4
SEGA_FULL, SEGA_QUICK = 18, 3
SEGA_SEED = 4500
SEGA_SAMPLER, SEGA_CFG = "DPM++ 2M", 4.0
FILLER = "image of the background with"  # one CLIP token per word
HEATMAPS_TITLE = "PromptScope: Attention heatmaps"
GUIDANCE_TITLE = "PromptScope: Semantic guidance"
PROBE_TITLE = "Live probe"
_SYNONYM_FOR = {word: [s for s, w in SYNONYMS.items() if w == word] for word in set(SYNONYMS.values())}


# ---------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    name: str
    sampler: str = "Euler a"
    batch: int = 1
    hires: bool = False
    prompt: Callable[[str, int], str] = lambda caption, i: caption

    @property
    def cfg(self) -> float:
        return SAMPLER_CFG[self.sampler]

    def words(self, caption: str, i: int) -> str:
        return self.prompt(caption, i)


def _past_75(caption: str, i: int) -> str:
    words = FILLER.split()
    return " ".join(words[k % len(words)] for k in range(76)) + " " + caption


def _emphasis(caption: str, i: int) -> str:
    out, done = [], False
    for word in caption.split():
        if not done and word in COLORS:
            out.append(f"({word}:1.3)")
            done = True
        else:
            out.append(word)
    return " ".join(out)


def _synonyms(caption: str, i: int) -> str:
    out = []
    for k, word in enumerate(caption.split()):
        options = _SYNONYM_FOR.get(word)
        out.append(options[(i + k) % len(options)] if options else word)
    return " ".join(out)


CASES = (
    Case("plain"),
    Case("batch2", batch=2),
    Case("past_75", prompt=_past_75),
    Case("break", prompt=lambda c, i: f"{FILLER} BREAK {c}"),
    Case("emphasis", prompt=_emphasis),
    Case("multi_token", prompt=_synonyms),
    Case("hires", hires=True),
    Case("dpmpp_2m", sampler="DPM++ 2M"),
    Case("heun", sampler="Heun"),
)


def canonical(word: str) -> str:
    return SYNONYMS.get(word, word)


def captions(n: int) -> list[str]:
    rng = np.random.default_rng(CAPTION_SEED)
    out = []
    for _ in range(n):
        caption = caption_for(random_specs(rng, (1, 2)))
        out.append(caption)
    return out


# ---------------------------------------------------------------------------------------------- backends
@dataclass
class Output:
    picture: np.ndarray  # (h, w, 3) uint8 at latent resolution (8×8 block means of the image)
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # prompt word → raw map


def latent_picture(image: Any) -> np.ndarray:
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = arr.shape[0] // 8, arr.shape[1] // 8
    return arr[: h * 8, : w * 8].reshape(h, 8, w, 8, 3).mean(axis=(1, 3)).round().astype(np.uint8)


class ToyBackend:
    name = "toyhost"

    def __init__(self, weights: Path) -> None:
        from lib_ext.toyworld.host import ToyHost

        self.host = ToyHost.load_sd1(weights)

    def generate(
        self, prompts: list[str], seed: int, sampler: str, cfg: float, hires: bool, heatmaps: bool, sega: bool
    ) -> list[Output]:
        from lib_ext.guidance import GuidanceSettings
        from lib_ext.guidance.feature import GuidanceFeature
        from lib_ext.heatmaps.feature import HeatmapFeature, HeatmapSettings
        from lib_ext.toyworld.host import Hires

        heat = HeatmapFeature(HeatmapSettings()) if heatmaps else None
        features: list[Any] = [heat] if heat else []
        if sega:
            features.append(GuidanceFeature(GuidanceSettings(mode="sega")))
        p = self.host.txt2img(prompts, seed=seed, steps=STEPS, cfg_scale=cfg, sampler_name=sampler,
                              features=features, hires=Hires() if hires else None)  # fmt: skip
        outs = [Output(latent_picture(img)) for img in p.images[: p.n_generated]]
        if heat is not None:
            want = "hires" if hires else "first"
            for result in heat.take_results():
                if result.pass_name == want:
                    outs[result.image].maps = {w.word: w.raw for w in result.words if w.raw is not None}
        return outs

    def close(self) -> None:
        pass


class WebUIBackend:
    name = "webui"

    def __init__(self, checkpoint: Path) -> None:
        from tests.live.webui_harness import WebUIConfig, WebUIServer, scratch_settings

        config = WebUIConfig.from_env()
        if config is None:
            raise RuntimeError("set PROMPTSCOPE_WEBUI to an A1111 checkout prepared by tools/prepare_webui.py")
        self.tmp = Path(tempfile.mkdtemp(prefix="webui-quality-"))
        config = scratch_settings(config, self.tmp)
        args = [a for a in config.extra_args]
        installed = config.checkout / "models" / "Stable-diffusion" / checkpoint.name
        if not installed.is_file() or installed.read_bytes() != checkpoint.read_bytes():
            raise RuntimeError(f"{installed} is not {checkpoint}: run tools/prepare_webui.py on the checkout again")
        ckpt_arg = ("--ckpt", f"models/Stable-diffusion/{checkpoint.name}")
        config = type(config)(config.checkout, config.python, (*args, *ckpt_arg), config.port, config.start_timeout)
        probe = Path(__file__).resolve().parents[1] / "tests" / "live" / "probe_extension"
        self.server = WebUIServer(config, self.tmp / "webui.log", extra_extensions={"ps-live-probe": probe})
        self.server.start()
        self.exports = self.tmp / "outputs" / "txt2img-images" / "promptscope-heatmaps"  # the API's folder

    def generate(
        self, prompts: list[str], seed: int, sampler: str, cfg: float, hires: bool, heatmaps: bool, sega: bool
    ) -> list[Output]:
        from PIL import Image

        from lib_ext.heatmaps.render import load_safetensors

        alwayson: dict[str, Any] = {}
        if heatmaps:
            alwayson[HEATMAPS_TITLE] = {"args": [{"enabled": True, "export_raw": True,
                                                  "show_pass": "hires" if hires else "first"}]}  # fmt: skip
        if sega:
            alwayson[GUIDANCE_TITLE] = {"args": [{"enabled": "on", "mode": "sega"}]}
        if len(set(prompts)) > 1:
            alwayson[PROBE_TITLE] = {"args": [True, "prompts:" + json.dumps(prompts)]}
        body: dict[str, Any] = {
            "prompt": prompts[0], "negative_prompt": "", "width": SIZE, "height": SIZE, "steps": STEPS,
            "cfg_scale": cfg, "sampler_name": sampler, "seed": seed, "batch_size": len(prompts), "n_iter": 1,
            "send_images": True, "save_images": False, "alwayson_scripts": alwayson,
        }  # fmt: skip
        if hires:
            body.update(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.5)
        for f in self.exports.glob("*.safetensors") if self.exports.is_dir() else []:
            f.unlink()
        res = self.server.client.post("/sdapi/v1/txt2img", body)
        images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in res["images"][: len(prompts)]]
        outs = [Output(latent_picture(img)) for img in images]
        if heatmaps:
            pass_name = "hires" if hires else "first"
            for i in range(len(prompts)):
                found = sorted(self.exports.glob(f"*-{i:02d}-{pass_name}.safetensors"))
                if found:
                    outs[i].maps = load_safetensors(found[-1])[0]
        return outs

    def close(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------------------------------------- scoring
def map_at_picture(raw: torch.Tensor, picture: np.ndarray) -> torch.Tensor:
    """A word's raw map resized (bilinear) to the picture's latent resolution, where the judge finds its objects."""
    h, w = picture.shape[:2]
    return torch.nn.functional.interpolate(raw.float()[None, None], size=(h, w), mode="bilinear")[0, 0]


def word_ious(out: Output, caption: str, found: list[DetectedObject]) -> dict[str, list[float]]:
    """IoU per colour/shape word of the caption whose object the judge found (`found`: the judge on the picture)."""
    scores: dict[str, list[float]] = {"color": [], "shape": []}
    maps = {canonical(k): v for k, v in out.maps.items()}
    for word, mask in word_truth(found, caption).items():  # attention_maps' truth: same judge
        raw = maps.get(word)
        if mask is None or raw is None:
            continue
        heat = map_at_picture(raw, out.picture)
        kind = "color" if word in COLORS else "shape" if word in SHAPES else None
        if kind:
            scores[kind].append(iou(threshold_mask(heat, TAU), torch.from_numpy(mask)))
    return scores


def run_case(backend: Any, case: Case, caps: list[str], misses: list[str] | None = None) -> dict[str, float | None]:
    """The case's metrics; each caption drawn wrong is appended to `misses` with what the judge found instead."""
    ok, shape_ious, color_ious = [], [], []
    for start in range(0, len(caps), case.batch):
        chunk = caps[start : start + case.batch]
        prompts = [case.words(c, start + k) for k, c in enumerate(chunk)]
        outs = backend.generate(prompts, IMAGE_SEED + start, case.sampler, case.cfg, case.hires, True, False)
        for k, (caption, out) in enumerate(zip(chunk, outs)):
            found = judge(out.picture)
            ok.append(caption_matches(found, caption))
            if not ok[-1] and misses is not None:
                drawn = ", ".join(f"{d.color} {d.shape}" for d in found) or "nothing"
                misses.append(f"#{start + k} {caption!r}: drew {drawn}")
            scores = word_ious(out, caption, found)
            shape_ious += scores["shape"]
            color_ious += scores["color"]
    return {
        "caption_accuracy": float(np.mean(ok)) if ok else None,
        "miou_shape": float(np.mean(shape_ious)) if shape_ious else None,
        "miou_color": float(np.mean(color_ious)) if color_ious else None,
    }


def run_sega(backend: Any, n: int) -> dict[str, float | None]:
    """SEGA "add" trials, one image per call (seeds are per trial)."""
    colors = list(COLORS)
    success, comp, rewrite = [], [], []
    for k in range(n):
        shape, seed = SHAPES[k % len(SHAPES)], SEGA_SEED + k

        def one(prompt: str, sega: bool, seed: int = seed) -> Output:
            return backend.generate([prompt], seed, SEGA_SAMPLER, SEGA_CFG, False, False, sega)[0]

        base = main_object(one(shape, False).picture)
        if base is None or base.shape != shape:
            continue  # the trial counts when the base image draws its shape
        concept = colors[(colors.index(base.color) + 1) % len(colors)] if base.color in colors else colors[0]
        edit = main_object(one(f"{shape} AND_TOPK {concept} :1", True).picture)
        rewritten = main_object(one(f"{concept} {shape}", False).picture)
        success.append(edit is not None and edit.color == concept)
        comp.append(mask_iou(base, edit))
        rewrite.append(mask_iou(base, rewritten))
    return {
        "sega_trials": len(success),
        "sega_concept_success": float(np.mean(success)) if success else None,
        "sega_composition_iou": statistics.median(comp) if comp else None,
        "sega_rewrite_iou": statistics.median(rewrite) if rewrite else None,
    }


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: how far 24 captions pin down a caption accuracy."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def bench_options(environ: Any, quick: bool) -> tuple[int, bool]:
    """(captions per case, whether to drive the WebUI) from PROMPTSCOPE_BENCH_CAPTIONS and PROMPTSCOPE_BENCH_HOSTS."""
    n = N_QUICK if quick else N_FULL
    raw = environ.get("PROMPTSCOPE_BENCH_CAPTIONS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise SystemExit(f"PROMPTSCOPE_BENCH_CAPTIONS must be a whole number ≥ 1, got {raw!r}")
        n = int(raw)
    hosts = environ.get("PROMPTSCOPE_BENCH_HOSTS", "both").strip().lower() or "both"
    if hosts not in ("both", "toyhost"):
        raise SystemExit(f"PROMPTSCOPE_BENCH_HOSTS must be 'both' or 'toyhost', got {hosts!r}")
    return n, hosts == "both"


def measure(backend: Any, quick: bool, n_captions: int | None = None) -> dict[str, Any]:
    caps = captions(n_captions or (N_QUICK if quick else N_FULL))
    out: dict[str, Any] = {}
    for case in CASES:
        t0 = time.time()
        misses: list[str] = []
        for key, value in run_case(backend, case, caps, misses).items():
            out[f"{case.name}_{key}"] = value
        hits = len(caps) - len(misses)
        low, high = wilson_interval(hits, len(caps))
        print(f"  {backend.name} {case.name}: {time.time() - t0:.0f} s, {hits}/{len(caps)} captions "
              f"(95% interval {low:.2f}–{high:.2f}) "
              f"{ {k: v for k, v in out.items() if k.startswith(case.name + '_')} }", flush=True)  # fmt: skip
        for miss in misses:  # the model card's miss lists come from here
            print(f"    miss {miss}", flush=True)
    out.update(run_sega(backend, SEGA_QUICK if quick else SEGA_FULL))
    return out


def main(quick: bool = False) -> dict:
    from lib_ext.toyworld.ldm_weights import DEFAULT_LDM_WEIGHTS

    torch.set_num_threads(int(os.environ.get("PROMPTSCOPE_BENCH_THREADS", "2")))
    weights = Path(os.environ.get("PROMPTSCOPE_TOYWORLD_SD1") or DEFAULT_LDM_WEIGHTS)
    n_captions, with_webui = bench_options(os.environ, quick)
    t0 = time.time()
    toy = measure(ToyBackend(weights), quick, n_captions)
    web: dict[str, Any] = {}
    if with_webui:
        webui_backend = WebUIBackend(weights)
        try:
            web = measure(webui_backend, quick, n_captions)
        finally:
            webui_backend.close()
    result: dict[str, Any] = {"weights": str(weights), "n_captions": n_captions}
    deltas = []
    for key in toy:
        if with_webui:
            result[f"webui_{key}"] = web.get(key)
        result[f"toyhost_{key}"] = toy[key]
        a, b = web.get(key), toy[key]
        if isinstance(a, float) and isinstance(b, float) and not key.endswith("trials"):
            deltas.append((abs(a - b), key))
    worst = max(deltas) if deltas else (None, None)
    result["max_abs_delta"] = worst[0]
    result["max_abs_delta_key"] = worst[1]
    result["seconds"] = round(time.time() - t0)
    return result
