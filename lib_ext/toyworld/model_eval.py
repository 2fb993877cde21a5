"""Training-side evaluation of the toy model: a plain Euler + CFG sampler with a reference attention capture,
caption accuracy through the judge, and word-heatmap mIoU. Used by the model card and the training checks; the
standalone host has its own samplers (sampling.py / cfg.py) with A1111's full semantics.

Reference capture (the issue's definition): fp32 softmax of the conditional rows of every attn2, summed over heads,
layers and steps, each layer's map upsampled (bicubic, like DAAM) to the image size; a word's map is min-max
normalised and thresholded at τ = 0.4.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .model import ToyTextEncoder, ToyUNet
from .scenes import caption_for, random_specs
from .schedule import sigmas as schedule_sigmas
from .tokenizer import ToyTokenizer
from .vocab import COLORS, SHAPES

TAU = 0.4


@torch.no_grad()
def encode(te: ToyTextEncoder, tok: ToyTokenizer, prompts: list[str]) -> torch.Tensor:
    ids = torch.tensor([tok(p) for p in prompts])
    return te(ids)


def karras_free_sigmas(steps: int) -> torch.Tensor:
    """CompVisDenoiser.get_sigmas(steps): t = linspace(999, 0, steps), log-sigma interpolation, then a final 0."""
    log_sigmas = schedule_sigmas().log()
    t = torch.linspace(len(log_sigmas) - 1, 0, steps)
    low, high = t.floor().long(), t.ceil().long()
    w = t.frac()
    s = ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()
    return torch.cat([s, s.new_zeros(1)])


def sigma_to_t(sigma: torch.Tensor) -> torch.Tensor:
    log_sigmas = schedule_sigmas().log()
    log_sigma = sigma.log()
    dists = log_sigma - log_sigmas[:, None]
    low = dists.ge(0).cumsum(0).argmax(0).clamp(max=len(log_sigmas) - 2)
    high = low + 1
    lo, hi = log_sigmas[low], log_sigmas[high]
    w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
    return (1 - w) * low + w * high


class StoredProbs:
    """Asks the toy model's attention modules to keep their last probabilities while the context is open."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.modules = modules

    def __enter__(self) -> StoredProbs:
        for m in self.modules:
            m.store_probs = True
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self.modules:
            m.store_probs = False
            m.last_probs = None


class AttentionCapture(StoredProbs):
    """Running sum over steps and layers of the conditional rows' cross-attention, upsampled to size×size."""

    def __init__(self, unet: ToyUNet, n_cond: int, size: int) -> None:
        super().__init__([m for _, m in unet.cross_attention_modules()])
        self.n_cond = n_cond
        self.size = size
        self.total: torch.Tensor | None = None

    def collect(self) -> None:
        for m in self.modules:
            p = m.last_probs[: self.n_cond].float().sum(1)  # (B, HW, 77), summed over heads
            res = int(round(p.shape[1] ** 0.5))
            maps = p.transpose(1, 2).reshape(p.shape[0], p.shape[2], res, res)
            maps = F.interpolate(maps, size=(self.size, self.size), mode="bicubic", align_corners=False)
            self.total = maps if self.total is None else self.total + maps
            m.last_probs = None


@torch.no_grad()
def sample_euler_cfg(
    te: ToyTextEncoder,
    unet: ToyUNet,
    tok: ToyTokenizer,
    prompts: list[str],
    seeds: list[int],
    steps: int = 20,
    cfg_scale: float = 6.0,
    capture: bool = False,
) -> tuple[np.ndarray, torch.Tensor | None]:
    """uint8 images (B, H, W, 3) and, if capture, the summed attention maps (B, 77, H, W)."""
    size = unet.cfg.image_size
    n = len(prompts)
    x = torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(s)) for s in seeds])
    sig = karras_free_sigmas(steps)
    x = x * sig[0]
    ctx = torch.cat([encode(te, tok, prompts), encode(te, tok, [""] * n)])
    cap = AttentionCapture(unet, n, size) if capture else None
    if cap:
        cap.__enter__()
    try:
        for i in range(steps):
            s = sig[i]
            c_in = 1.0 / (s * s + 1).sqrt()
            t = sigma_to_t(s.view(1)).expand(2 * n)
            eps = unet(torch.cat([x, x]) * c_in, t, ctx)
            if cap:
                cap.collect()
            eps_c, eps_u = eps[:n], eps[n:]
            e = eps_u + cfg_scale * (eps_c - eps_u)
            denoised = x - s * e
            d = (x - denoised) / s
            x = x + d * (sig[i + 1] - s)
    finally:
        if cap:
            cap.__exit__()
    img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return img, (cap.total if cap else None)


def word_heatmap(total: torch.Tensor, token_index: int) -> np.ndarray:
    """Min-max normalised map of one token (total: (77, H, W))."""
    m = total[token_index].clamp_min(0)
    m = (m - m.min()) / (m.max() - m.min() + 1e-8)
    return m.numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@dataclass
class EvalResult:
    caption_accuracy: float
    reference_miou: float
    miou_shape: float
    miou_color: float
    chance_all_ones: float
    chance_other_object: float
    n_captions: int
    n_words: int
    seconds: float


def random_eval_captions(n: int, seed: int = 1234) -> list[str]:
    rng = np.random.default_rng(seed)
    return [caption_for(random_specs(rng, (1, 2))) for _ in range(n)]


def evaluate(
    te: ToyTextEncoder,
    unet: ToyUNet,
    tok: ToyTokenizer,
    n: int = 200,
    steps: int = 20,
    cfg_scale: float = 6.0,
    batch: int = 20,
    seed: int = 1234,
) -> tuple[EvalResult, list[np.ndarray], list[str]]:
    """Caption accuracy (judge) and word mIoU on n random 1–2 object captions; also returns images and captions."""
    from .judge import caption_matches, judge, parse_caption

    t0 = time.time()
    captions = random_eval_captions(n, seed)
    images: list[np.ndarray] = []
    correct = 0
    ious: dict[str, list[float]] = {"shape": [], "color": []}
    chance_ones: list[float] = []
    chance_other: list[float] = []
    for start in range(0, n, batch):
        caps = captions[start : start + batch]
        seeds = list(range(seed + start, seed + start + len(caps)))
        imgs, total = sample_euler_cfg(te, unet, tok, caps, seeds, steps, cfg_scale, capture=True)
        for k, (cap, img) in enumerate(zip(caps, imgs)):
            images.append(img)
            objs = judge(img)
            correct += caption_matches(objs, cap)
            words = tok.tokens(cap)
            phrases = parse_caption(cap)
            # Ground truth per phrase: the detected object of that colour and shape (if the judge found it).
            found = {}
            for color, shape in phrases:
                match = [o for o in objs if o.color == color and o.shape == shape]
                if match:
                    found[(color, shape)] = max(match, key=lambda o: o.area).mask
            current_color = None
            pending: list[int] = []
            phrase_of_word: list[tuple[str | None, str] | None] = [None] * len(words)
            for wi, w in enumerate(words):
                if w in COLORS:
                    current_color = w
                    pending.append(wi)
                elif w in SHAPES:
                    for pi in [*pending, wi]:
                        phrase_of_word[pi] = (current_color, w)
                    pending, current_color = [], None
            for wi, w in enumerate(words):
                ph = phrase_of_word[wi]
                if ph is None or ph not in found:
                    continue
                gt = found[ph]
                pred = word_heatmap(total[k], 1 + wi) >= TAU
                ious["color" if w in COLORS else "shape"].append(iou(pred, gt))
                chance_ones.append(iou(np.ones_like(gt), gt))
                # the word's map against the other object's mask: near 0 when the word points at its own object
                chance_other.extend(iou(pred, m) for key, m in found.items() if key != ph)
    all_ious = ious["shape"] + ious["color"]
    res = EvalResult(
        caption_accuracy=correct / n,
        reference_miou=float(np.mean(all_ious)) if all_ious else 0.0,
        miou_shape=float(np.mean(ious["shape"])) if ious["shape"] else 0.0,
        miou_color=float(np.mean(ious["color"])) if ious["color"] else 0.0,
        chance_all_ones=float(np.mean(chance_ones)) if chance_ones else 0.0,
        chance_other_object=float(np.mean(chance_other)) if chance_other else 0.0,
        n_captions=n,
        n_words=len(all_ious),
        seconds=time.time() - t0,
    )
    return res, images, captions


@torch.no_grad()
def teacher_forced_miou(
    te: ToyTextEncoder, unet: ToyUNet, tok: ToyTokenizer, n: int = 32, timesteps: tuple[int, ...] = (150, 400, 700)
) -> dict[str, float]:
    """Word mIoU on noised ground-truth scenes (attention summed over the given timesteps): a training diagnostic."""
    from .scenes import random_scene
    from .schedule import alphas_cumprod

    rng = np.random.default_rng(99)
    scenes = [random_scene(rng, (1, 2)) for _ in range(n)]
    x0 = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    ctx = encode(te, tok, [s.caption for s in scenes])
    ac = alphas_cumprod()
    gen = torch.Generator().manual_seed(0)
    size = x0.shape[-1]
    with AttentionCapture(unet, n, size) as cap:
        for t in timesteps:
            a = ac[t]
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen)
            unet(x_t, torch.full((n,), float(t)), ctx)
            cap.collect()
        total = cap.total
    out: dict[str, list[float]] = {"shape": [], "color": []}
    for k, sc in enumerate(scenes):
        for wi, w, m in sc.word_masks:
            pred = word_heatmap(total[k], 1 + wi) >= TAU
            out["color" if w in COLORS else "shape"].append(iou(pred, m))
    return {key: float(np.mean(v)) for key, v in out.items()}


def save_grid(images: list[np.ndarray], path: Path, cols: int = 10, scale: int = 3) -> None:
    from PIL import Image

    rows = (len(images) + cols - 1) // cols
    h, w = images[0].shape[:2]
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = im
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def plot_loss(csv_path: Path, png_path: Path, width: int = 480, height: int = 240) -> None:
    """Loss curve (MSE, and the attention KL scaled to fit) drawn with PIL on a log-y axis."""
    import csv

    from PIL import Image, ImageDraw

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    steps = np.array([float(r["step"]) for r in rows])
    series = {
        "mse": np.array([float(r["mse"]) for r in rows]),
        "attn KL": np.array([float(r["attn_kl"]) for r in rows]),
    }
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 40, width - 10, 10, height - 25
    draw.rectangle([left, top, right, bottom], outline="black")
    lo = min(float(v[v > 0].min()) for v in series.values())
    hi = max(float(v.max()) for v in series.values())
    llo, lhi = np.log10(lo), np.log10(hi)
    for dec in range(int(np.floor(llo)), int(np.ceil(lhi)) + 1):
        if llo <= dec <= lhi:
            y = bottom - (dec - llo) / (lhi - llo + 1e-9) * (bottom - top)
            draw.line([left, y, right, y], fill=(220, 220, 220))
            draw.text((2, y - 6), f"1e{dec}", fill="black")
    colors = {"mse": (30, 60, 230), "attn KL": (220, 30, 30)}
    for k, (name, v) in enumerate(series.items()):
        xs = left + (steps - steps.min()) / max(1.0, steps.max() - steps.min()) * (right - left)
        ys = bottom - (np.log10(np.clip(v, lo, None)) - llo) / (lhi - llo + 1e-9) * (bottom - top)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=colors[name], width=2)
        draw.text((left + 10 + 90 * k, top + 4), name, fill=colors[name])
    draw.text((left, bottom + 6), f"step 0 to {int(steps.max())} (log y)", fill="black")
    img.save(png_path)


def main(argv: list[str] | None = None) -> None:
    from .weights import load_toyworld

    ap = argparse.ArgumentParser(description="Evaluate toy-world weights: caption accuracy and word mIoU.")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=6.0)
    ap.add_argument("--grid", type=Path, default=None, help="write the first 40 samples as a PNG grid")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher-forced", action="store_true", help="only the quick mIoU on noised true scenes")
    ap.add_argument("--loss-csv", type=Path, default=None, help="with --loss-png: plot this training log")
    ap.add_argument("--loss-png", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.loss_csv and args.loss_png:
        plot_loss(args.loss_csv, args.loss_png)
    te, unet, tok, _ = load_toyworld(args.weights)
    if args.teacher_forced:
        print(json.dumps(teacher_forced_miou(te, unet, tok)))
        return
    res, images, captions = evaluate(te, unet, tok, args.n, args.steps, args.cfg)
    if args.grid:
        save_grid(images[:40], args.grid)
        args.grid.with_suffix(".txt").write_text("\n".join(captions[:40]) + "\n")
    print(json.dumps(res.__dict__))


if __name__ == "__main__":
    main()
