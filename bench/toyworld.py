"""Toy-world bench: does the model draw what it is asked, and does its cross-attention point at it?

- caption_accuracy: on random one- and two-object captions ("a red circle and a blue square"), generated with
  Euler, 20 steps, CFG (A1111's batched cond/uncond layout, empty negative prompt), the fraction where the judge
  finds exactly the asked shapes in the asked colours.
- reference_miou: a plain reference capture of cross-attention (forward hooks on every attn2's to_q and to_k;
  fp32 softmax(QKᵀ/√d) of the conditional rows, summed over heads, each map bilinearly upsampled to 32×32, summed
  over layers and steps). Per colour/shape word: normalised by its max, thresholded at τ = 0.4, IoU with the mask
  of the object the judge found for the word's phrase; mean over the words whose object was found.
- chance baselines beside it: an all-ones mask (`chance_miou`) and each word's heatmap against the OTHER object of
  a two-object caption (`other_object_miou`).
- teacher_forced_miou: the same capture on noised ground-truth scenes (t = 200, 500, 800), against their true
  masks: attention fidelity without depending on what the model draws (chance: teacher_forced_chance_miou).
- model_mb (weights file), seconds_per_image (20 steps, batch 1, Euler, CFG, no capture), train_minutes.

$PROMPTSCOPE_TOYWORLD_GRID=path.png also writes the first 40 images as a grid (captions in path.txt).

Weights: $PROMPTSCOPE_TOYWORLD_WEIGHTS, else the shipped lib_ext/toyworld/weights/toyworld.safetensors, else a
randomly initialised model (numbers are then meaningless, but the bench runs end to end).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lib_ext.toyworld import sampling
from lib_ext.toyworld.cfg import CFGDenoiser
from lib_ext.toyworld.host import BEST_CFG, BEST_SAMPLER
from lib_ext.toyworld.judge import DetectedObject, caption_matches, judge
from lib_ext.toyworld.scenes import caption_for, random_scene, random_specs
from lib_ext.toyworld.schedule import alphas_cumprod
from lib_ext.toyworld.vocab import COLORS, IMAGE_SIZE, SHAPES

STEPS = 20
SAMPLER, CFG_SCALE = BEST_SAMPLER, BEST_CFG  # the best of 8 settings on 120 held-out captions (model card)
TAU = 0.4
N_CAPTIONS, N_CAPTIONS_QUICK = 200, 24
N_TIMING, N_TIMING_QUICK = 5, 1
N_TEACHER, N_TEACHER_QUICK = 64, 16  # ground-truth scenes for the teacher-forced attention check
BATCH = 8  # images per sampling batch in the accuracy run (2·BATCH UNet rows)
CAPTION_SEED = 20240  # captions and image seeds are fixed, so runs are comparable
IMAGE_SEED = 1000


# ------------------------------------------------------------------------------------- reference capture
class ReferenceCapture:
    """Forward hooks on every attn2.to_q / attn2.to_k; accumulates the conditional rows' attention maps.

    `maps[i, token]` is image i's (32×32) map of a token, summed over heads, layers and every UNet call since the
    last `reset`. The first `n_cond_rows` rows of each UNet batch are taken as the conditional rows (A1111's
    CFGDenoiser layout with one sub-prompt per image).
    """

    def __init__(self, unet: torch.nn.Module, n_cond_rows: int, size: int = IMAGE_SIZE) -> None:
        self.n_cond_rows = n_cond_rows
        self.size = size
        self.maps: torch.Tensor | None = None
        self.calls = 0
        self._pending: dict[int, dict[str, torch.Tensor]] = {}
        self._handles = []
        modules = [(n, m) for n, m in unet.named_modules() if n.endswith("attn2") and hasattr(m, "to_q")]
        if not modules:
            raise ValueError("no attn2 modules with to_q/to_k in this UNet")
        for _name, attn in modules:
            self._handles.append(attn.to_q.register_forward_hook(self._hook(attn, "q")))
            self._handles.append(attn.to_k.register_forward_hook(self._hook(attn, "k")))
        self.n_layers = len(modules)

    def _hook(self, attn: torch.nn.Module, which: str):
        def hook(_module, _inputs, output):
            slot = self._pending.setdefault(id(attn), {})
            slot[which] = output[: self.n_cond_rows].detach()
            if "q" in slot and "k" in slot:
                del self._pending[id(attn)]
                self._add(attn, slot["q"], slot["k"])

        return hook

    def _add(self, attn: torch.nn.Module, q: torch.Tensor, k: torch.Tensor) -> None:
        heads = int(attn.heads)
        b, n, inner = q.shape
        d = inner // heads
        qh = q.float().view(b, n, heads, d).transpose(1, 2)
        kh = k.float().view(b, k.shape[1], heads, d).transpose(1, 2)
        probs = (qh @ kh.transpose(-1, -2) / math.sqrt(d)).softmax(dim=-1).sum(dim=1)  # (b, n, tokens)
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} query positions is not a square feature map")
        grid = probs.transpose(1, 2).reshape(b, -1, side, side)  # (b, tokens, h, w), row-major like the model
        if side != self.size:
            grid = F.interpolate(grid, size=(self.size, self.size), mode="bilinear", align_corners=False)
        self.maps = grid if self.maps is None else self.maps + grid
        self.calls += 1

    def reset(self) -> None:
        self.maps, self.calls, self._pending = None, 0, {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# ------------------------------------------------------------------------------------------- scoring
@dataclass
class Phrase:
    color: str
    color_word: int  # index in caption.split()
    shape: str
    shape_word: int


def phrases(caption: str) -> list[Phrase]:
    """Colour+shape phrases with their word indices ("a red circle and a blue square" → red@1 circle@2, ...)."""
    out, color, color_at = [], None, -1
    for i, word in enumerate(caption.lower().split()):
        if word in COLORS:
            color, color_at = word, i
        elif word in SHAPES and color is not None:
            out.append(Phrase(color, color_at, word, i))
            color = None
    return out


def heat_mask(heat: torch.Tensor, tau: float = TAU) -> np.ndarray:
    """A word's map normalised to [0, 1] by its max, thresholded at τ."""
    heat = heat.float()
    peak = heat.max()
    if peak <= 0:
        return np.zeros(tuple(heat.shape), dtype=bool)
    return (heat / peak > tau).cpu().numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _found(objects: Sequence[DetectedObject], color: str, shape: str) -> DetectedObject | None:
    same = [o for o in objects if o.color == color and o.shape == shape]
    return max(same, key=lambda o: o.area) if same else None


@dataclass
class Scores:
    matched: list[bool] = field(default_factory=list)
    word_iou: dict[str, list[float]] = field(default_factory=lambda: {"color": [], "shape": []})
    ones_iou: list[float] = field(default_factory=list)
    other_iou: list[float] = field(default_factory=list)
    words_asked: int = 0

    def add(self, caption: str, image: np.ndarray, maps: torch.Tensor) -> None:
        """maps: (tokens, H, W) for this image; token = word index + 1 (start token first)."""
        objects = judge(image)
        self.matched.append(caption_matches(objects, caption))
        ps = phrases(caption)
        found = [_found(objects, p.color, p.shape) for p in ps]
        for k, (p, obj) in enumerate(zip(ps, found)):
            self.words_asked += 2
            if obj is None:
                continue
            for kind, word in (("color", p.color_word), ("shape", p.shape_word)):
                m = heat_mask(maps[word + 1])
                self.word_iou[kind].append(iou(m, obj.mask))
                self.ones_iou.append(iou(np.ones_like(obj.mask), obj.mask))
                others = [o for j, o in enumerate(found) if j != k and o is not None]
                for other in others:
                    self.other_iou.append(iou(m, other.mask))

    def summary(self) -> dict[str, float | int | None]:
        def mean(xs: list[float]) -> float | None:
            return float(np.mean(xs)) if xs else None

        both = self.word_iou["color"] + self.word_iou["shape"]
        return {
            "caption_accuracy": mean([float(m) for m in self.matched]),
            "reference_miou": mean(both),
            "reference_miou_color": mean(self.word_iou["color"]),
            "reference_miou_shape": mean(self.word_iou["shape"]),
            "chance_miou": mean(self.ones_iou),
            "other_object_miou": mean(self.other_iou),
            "words_scored": len(both),
            "words_asked": self.words_asked,
        }


# ------------------------------------------------------------------------------------------- generation
def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def bench_captions(n: int, seed: int = CAPTION_SEED) -> list[str]:
    rng = np.random.default_rng(seed)
    return [caption_for(random_specs(rng, (1, 2))) for _ in range(n)]


@dataclass
class ToyModel:
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    tokenizer: object
    source: str
    model_mb: float | None
    train_minutes: float | None

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = torch.tensor([self.tokenizer(p) for p in prompts])
        with torch.no_grad():
            return self.text_encoder(ids)


def generate(
    model: ToyModel,
    captions: Sequence[str],
    seeds: Sequence[int],
    steps: int = STEPS,
    cfg_scale: float = CFG_SCALE,
    sampler: str = SAMPLER,
) -> torch.Tensor:
    """Images (B, 3, H, W) in model space for one batch, A1111-style: per-image seeds, empty negative prompt."""
    den = sampling.DiscreteEpsDenoiser(model.unet, alphas_cumprod())
    cfg_model = CFGDenoiser(den)
    extra = {"cond": model.encode(captions), "uncond": model.encode([""] * len(captions)), "cond_scale": cfg_scale}
    size = int(getattr(getattr(model.unet, "cfg", None), "image_size", IMAGE_SIZE))
    rng = sampling.ImageRNG((3, size, size), seeds)
    with torch.no_grad():
        return sampling.sample(sampler, cfg_model, rng, steps, extra_args=extra, sigma_denoiser=den)


def evaluate(
    model: ToyModel, captions: Sequence[str], steps: int = STEPS, batch: int = BATCH, images_out: list | None = None
) -> dict:
    """caption accuracy and reference-capture mIoU over the captions (image i has seed IMAGE_SEED + i); the
    images are appended to `images_out` when given."""
    scores = Scores()
    for start in range(0, len(captions), batch):
        chunk = list(captions[start : start + batch])
        capture = ReferenceCapture(model.unet, n_cond_rows=len(chunk))
        try:
            images = to_uint8(generate(model, chunk, [IMAGE_SEED + start + i for i in range(len(chunk))], steps))
        finally:
            capture.remove()
        for i, caption in enumerate(chunk):
            scores.add(caption, images[i], capture.maps[i])
        if images_out is not None:
            images_out.extend(images)
    return scores.summary()


def teacher_forced_miou(model: ToyModel, n_scenes: int, timesteps: Sequence[int] = (200, 500, 800)) -> dict:
    """Attention on noised ground-truth scenes (one UNet call per timestep, captions as conditioning): the same
    capture and scoring as `reference_miou`, but with known masks and no dependence on what the model draws."""
    rng = np.random.default_rng(CAPTION_SEED + 1)
    gen = torch.Generator().manual_seed(CAPTION_SEED + 1)
    scene_list = [random_scene(rng, (1, 2)) for _ in range(n_scenes)]
    x0 = torch.from_numpy(np.stack([s.image for s in scene_list])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    context = model.encode([s.caption for s in scene_list])
    ac = alphas_cumprod()
    ious, ones = [], []
    for t in timesteps:
        a = ac[t]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen)
        capture = ReferenceCapture(model.unet, n_cond_rows=n_scenes)
        try:
            with torch.no_grad():
                model.unet(x_t, torch.full((n_scenes,), float(t)), context)
        finally:
            capture.remove()
        for i, scene in enumerate(scene_list):
            for word_index, _word, mask in scene.word_masks:
                ious.append(iou(heat_mask(capture.maps[i, word_index + 1]), mask))
                ones.append(float(mask.mean()))
    return {"teacher_forced_miou": float(np.mean(ious)), "teacher_forced_chance_miou": float(np.mean(ones))}


def seconds_per_image(model: ToyModel, n: int) -> float:
    """Median wall time of one batch-1 generation (encode, 20 Euler steps with CFG, decode)."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        to_uint8(generate(model, ["a red circle and a blue square"], [IMAGE_SEED + i]))
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


# ------------------------------------------------------------------------------------------- model
def _train_minutes(meta: dict, weights: Path) -> float | None:
    """From the weights' metadata ("train": {"minutes": ...}), else the model card next to the weights."""
    try:
        minutes = json.loads(meta.get("train", "{}")).get("minutes")
        if minutes is not None:
            return float(minutes)
    except (ValueError, AttributeError):
        pass
    for card in (weights.with_suffix(".md"), weights.parent / "MODEL_CARD.md", weights.parent / "README.md"):
        if card.exists():
            found = re.search(r"(\d+(?:\.\d+)?)\s*min", card.read_text(encoding="utf-8"))
            if found:
                return float(found.group(1))
    return None


def load_model() -> ToyModel:
    from lib_ext.toyworld import weights as toy_weights

    path_env = os.environ.get("PROMPTSCOPE_TOYWORLD_WEIGHTS")
    path = Path(path_env) if path_env else toy_weights.DEFAULT_WEIGHTS
    if path.exists():
        te, unet, tok, _cfg = toy_weights.load_toyworld(path)
        meta = toy_weights.read_metadata(path)
        return ToyModel(te, unet, tok, str(path), path.stat().st_size / 1e6, _train_minutes(meta, path))
    if path_env:
        raise FileNotFoundError(f"PROMPTSCOPE_TOYWORLD_WEIGHTS={path_env} does not exist")
    from lib_ext.toyworld.model import ToyConfig, ToyTextEncoder, ToyUNet
    from lib_ext.toyworld.tokenizer import ToyTokenizer

    tok = ToyTokenizer()
    torch.manual_seed(0)
    cfg = ToyConfig(vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id)
    te, unet = ToyTextEncoder(cfg).eval(), ToyUNet(cfg).eval()
    n_params = sum(p.numel() for p in [*te.parameters(), *unet.parameters()])
    return ToyModel(te, unet, tok, "random-init (no weights found)", n_params * 2 / 1e6, None)


# ------------------------------------------------------------------------------------------- main
def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def main(quick: bool = False) -> dict:
    # One intra-op thread unless told otherwise: batch-1 generation gains nothing from a second thread here, and on
    # a busy 2-core machine two OpenMP threads spin against other processes and run ~8x slower.
    torch.set_num_threads(int(os.environ.get("PROMPTSCOPE_BENCH_THREADS", "1")))
    model = load_model()
    n_captions = N_CAPTIONS_QUICK if quick else N_CAPTIONS
    t0 = time.perf_counter()
    captions = bench_captions(n_captions)
    images: list[np.ndarray] = []
    result = evaluate(model, captions, images_out=images)
    eval_seconds = time.perf_counter() - t0
    grid = os.environ.get("PROMPTSCOPE_TOYWORLD_GRID")  # the model card's sample grid: the first 40 images
    if grid:
        from lib_ext.toyworld.model_eval import save_grid

        save_grid(images[:40], Path(grid))
        Path(grid).with_suffix(".txt").write_text("\n".join(captions[:40]) + "\n", encoding="utf-8")
    result.update(teacher_forced_miou(model, N_TEACHER_QUICK if quick else N_TEACHER))
    result.update(
        {
            "model_mb": model.model_mb,
            "seconds_per_image": seconds_per_image(model, N_TIMING_QUICK if quick else N_TIMING),
            "train_minutes": model.train_minutes,
            "n_captions": n_captions,
            "steps": STEPS,
            "sampler": SAMPLER,
            "cfg_scale": CFG_SCALE,
            "tau": TAU,
            "torch_threads": torch.get_num_threads(),
            "weights": model.source,
            "eval_seconds": round(eval_seconds, 1),
        }
    )
    print(f"toy world bench ({'quick' if quick else 'full'}): weights {model.source}")
    print(f"{'metric':<24}{'value':>12}")
    for key in (
        "caption_accuracy",
        "reference_miou",
        "reference_miou_color",
        "reference_miou_shape",
        "chance_miou",
        "other_object_miou",
        "teacher_forced_miou",
        "teacher_forced_chance_miou",
        "words_scored",
        "words_asked",
        "model_mb",
        "seconds_per_image",
        "train_minutes",
    ):
        print(f"{key:<24}{_fmt(result[key]):>12}")
    return result
