"""Can semantic guidance recolour a toy-world object in place at all? The palette decides, not the model.

No trained model here: the Bayes-optimal denoiser of a finite world (every position of one circle or one square of
fixed size, in every palette colour, on the background) — E[x0 | x_t] is a softmax over the scenes of
−‖x_t − scene‖² / 2σ². "circle" is that denoiser over the circles, the unconditional one over all scenes, a colour
concept over the scenes of that colour. Per seed: the base image ("circle", DPM++ 2M, 20 steps, CFG 4) and the edit
("circle AND_TOPK <the next colour> :w", the library's own `combine` in SEGA mode at a warm-up). Both end on one
scene of the set; the edit succeeds when its colour is the concept, and keeps the place when it is the base's shape
at the base's position.

Two palettes: `v1` (saturated colours on grey, the toy world's first version) and `shipped` (lib_ext/toyworld/
vocab.py). Keys: per palette, `<palette>_settle_position_step` / `_settle_colour_step` (first step from which the x0
estimate's nearest scene keeps the final position / colour for ≥ 90% of seeds), a `<palette>_tradeoff` table, and
`<palette>_best_both` = the best min(success, same_place) over the warm-ups and weights tried.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lib_ext.guidance import GuidanceSettings, GuidanceState, GuidanceStep, SegaParams, StepCount, combine, parse_root
from lib_ext.toyworld import sampling
from lib_ext.toyworld.scenes import shape_mask
from lib_ext.toyworld.schedule import alphas_cumprod
from lib_ext.toyworld.vocab import BACKGROUND_RGB, COLORS, IMAGE_SIZE

V1_PALETTE = {
    "background": (128, 128, 128),
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (30, 60, 230),
    "yellow": (235, 215, 30),
}
SHIPPED_PALETTE = {"background": BACKGROUND_RGB, **COLORS}
SHAPES = ("circle", "square")
SIZE = 10.0
STEPS, CFG_SCALE = 20, 4.0
SEEDS = list(range(100, 124))
WARMUPS = (0.0, 0.2, 0.3, 0.4, 0.5)
WEIGHTS = (1.0, 3.0)


class World:
    """The finite scene set of one palette, as model-space rows (K, 3·H·W)."""

    def __init__(self, palette: dict[str, tuple[int, int, int]]) -> None:
        lo, hi = int(SIZE // 2) + 1, IMAGE_SIZE - int(SIZE // 2) - 1
        scenes, self.meta = [], []
        for shape in SHAPES:
            for cy in range(lo, hi):
                for cx in range(lo, hi):
                    mask = shape_mask(shape, cx, cy, SIZE)
                    for color in (c for c in palette if c != "background"):
                        img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
                        img[:] = palette["background"]
                        img[mask] = palette[color]
                        scenes.append((img / 127.5 - 1.0).transpose(2, 0, 1).reshape(-1))
                        self.meta.append((shape, cx, cy, color))
        self.scenes = torch.from_numpy(np.stack(scenes))
        self.sq = (self.scenes * self.scenes).sum(1)
        self.colors = [c for c in palette if c != "background"]

    def select(self, shape: str | None = None, color: str | None = None) -> torch.Tensor:
        return torch.tensor([(shape in (None, m[0])) and (color in (None, m[3])) for m in self.meta])

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """E[x0 | x] over the allowed scenes, per row of x (B, D); sigma (B,)."""
        d2 = (x * x).sum(1, keepdim=True) - 2.0 * x @ self.scenes.T + self.sq[None]
        logits = -d2 / (2.0 * sigma[:, None] ** 2)
        logits = logits.masked_fill(~allowed[None], float("-inf"))
        return torch.softmax(logits, dim=1) @ self.scenes

    def nearest(self, x: torch.Tensor) -> list[tuple]:
        d2 = (x * x).sum(1, keepdim=True) - 2.0 * x @ self.scenes.T + self.sq[None]
        return [self.meta[j] for j in d2.argmin(1).tolist()]


def sample(world: World, concepts: list[str] | None, settings: GuidanceSettings | None, weight: float,
           trajectory: list | None = None) -> torch.Tensor:  # fmt: skip
    """One batch over SEEDS; with concepts, each image's prompt is "circle AND_TOPK <concept> :weight"."""
    shape = (3, IMAGE_SIZE, IMAGE_SIZE)
    den = sampling.DiscreteEpsDenoiser(torch.nn.Identity(), alphas_cumprod())
    sigmas = den.get_sigmas(STEPS)
    n = len(SEEDS)
    x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in SEEDS]) * sigmas[0]
    base, everything = world.select(shape="circle"), world.select()
    trees = [parse_root(f"circle AND_TOPK {c} :{weight}") for c in concepts] if concepts else None
    state, calls = GuidanceState(), [0]
    by_color = {k: world.select(color=k) for k in set(concepts or ())}  # once, not per step and image

    def model(xin: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        flat = xin.reshape(n, -1)
        u, c = world.denoise(flat, sigma, everything), world.denoise(flat, sigma, base)
        if trees is None:
            out = u + CFG_SCALE * (c - u)
        else:
            rows = [c] + [world.denoise(flat[i : i + 1], sigma[i : i + 1], by_color[k]) for i, k in
                          enumerate(concepts)]  # fmt: skip
            concept_rows = torch.cat(rows[1:])
            x_out = torch.cat([c, concept_rows, u]).reshape(3 * n, *shape)
            conds = [[(i, 1.0), (n + i, weight)] for i in range(n)]
            step = GuidanceStep(x_out, torch.cat([xin] * 3), sigma, conds, CFG_SCALE, calls[0], STEPS, "x0")
            out = combine(step, trees, settings, state).reshape(n, -1)  # type: ignore[arg-type]
        calls[0] += 1
        if trajectory is not None:
            trajectory.append(out.clone())
        return out.reshape(n, *shape)

    with torch.no_grad():
        return sampling.sample_dpmpp_2m(model, x, sigmas).reshape(n, -1)


def settle_steps(world: World, trajectory: list[torch.Tensor], final: list[tuple]) -> tuple[int, int]:
    """First steps from which ≥ 90% of the x0 estimates' nearest scenes keep the final position / colour."""
    nearest = [world.nearest(t) for t in trajectory]
    pos_ok = [np.mean([a[:3] == b[:3] for a, b in zip(n, final)]) >= 0.9 for n in nearest]
    col_ok = [np.mean([a[3] == b[3] for a, b in zip(n, final)]) >= 0.9 for n in nearest]

    def first_stable(ok: list[bool]) -> int:
        for i in range(len(ok)):
            if all(ok[i:]):
                return i
        return len(ok)

    return first_stable(pos_ok), first_stable(col_ok)


def edit_scores(world: World, final: list[tuple], warmup: float, weight: float) -> tuple[float, float]:
    """(success, same place) of "circle AND_TOPK <the colour after the base image's> :weight" at this warm-up, against
    the base images' scenes `final`."""
    order = world.colors
    concepts = [order[(order.index(f[3]) + 1) % len(order)] for f in final]
    sega = SegaParams(threshold=0.9, warmup=StepCount(warmup, relative=True), momentum=0.1, beta=0.4)
    edited = world.nearest(sample(world, concepts, GuidanceSettings(mode="sega", sega=sega), weight))
    success = float(np.mean([e[3] == c for e, c in zip(edited, concepts)]))
    same = float(np.mean([e[:3] == f[:3] for e, f in zip(edited, final)]))
    return success, same


def run_palette(name: str, palette: dict, quick: bool) -> dict:
    world = World(palette)
    trajectory: list[torch.Tensor] = []
    final = world.nearest(sample(world, None, None, 0.0, trajectory))
    pos_step, col_step = settle_steps(world, trajectory, final)
    table, best = [], 0.0
    for warm in WARMUPS[::2] if quick else WARMUPS:
        for w in WEIGHTS[:1] if quick else WEIGHTS:
            success, same = edit_scores(world, final, warm, w)
            table.append({"warmup": warm, "weight": w, "success": success, "same_place": same})
            best = max(best, min(success, same))
            print(f"  {name:8s} warm-up {warm:4.0%} w {w:3.1f}: success {success:.2f}  same place {same:.2f}")
    print(f"  {name:8s} settles: position at step {pos_step}, colour at step {col_step} (of {STEPS})")
    return {
        f"{name}_settle_position_step": pos_step,
        f"{name}_settle_colour_step": col_step,
        f"{name}_tradeoff": table,
        f"{name}_best_both": best,
    }


def main(quick: bool = False) -> dict:
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    result: dict = {"seeds": len(SEEDS), "steps": STEPS, "cfg_scale": CFG_SCALE, "threshold": 0.9}
    print(f"ideal-denoiser palette check: {len(SEEDS)} seeds, DPM++ 2M {STEPS} steps, CFG {CFG_SCALE}, SEGA q 0.9")
    for name, palette in (("v1", V1_PALETTE), ("shipped", SHIPPED_PALETTE)):
        result.update(run_palette(name, palette, quick))
    result["seconds"] = time.perf_counter() - t0
    return result
