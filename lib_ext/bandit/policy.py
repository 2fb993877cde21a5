"""Which arms (and seeds, and slot options) the next round generates.

- "more_good": batched Thompson sampling: one joint posterior draw per image of the round, the image goes to
  that draw's argmax, so arm a gets k·P(a is best) images in expectation (near-optimal with batches: Kalkanli &
  Ozgur 2021; one draw per free worker also fits asynchronous generation: Kandasamy et al. 2018).
- "find_best": top-two Thompson sampling (Russo 2016), β = ½: draw θ, leader I = argmax; with probability β play
  I, else redraw until the argmax J ≠ I and play J.
- "uniform": the X/Y/Z-grid baseline, each image to the arm with the fewest images so far (ties at random).

Seeds are uniform in [0, 2^32) from the caller's numpy Generator. With `shared_seeds` (common random numbers)
the j-th image of every arm in a round uses the same seed, which gives paired comparisons and fixed-seed series
that are easier to review.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .templates import SlotModel

MODES = ("more_good", "find_best", "uniform")
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class PolicyArm:
    """An arm as the policy sees it; template arms carry their slot model."""

    arm_id: int
    slot_model: SlotModel | None = None


@dataclass(frozen=True)
class ArmBelief:
    """Posterior Beta(alpha, beta) of an arm's like-rate and how many images it has (rated or not)."""

    alpha: float = 1.0
    beta: float = 1.0
    n_images: int = 0


@dataclass(frozen=True)
class PlannedImage:
    arm_id: int
    seed: int
    slot_choices: tuple[int, ...] = field(default_factory=tuple)


def thompson_arms(alphas: Sequence[float], betas: Sequence[float], k: int, rng: np.random.Generator) -> np.ndarray:
    """Batched TS: indices of the argmax of k independent joint posterior draws."""
    a = np.asarray(alphas, dtype=np.float64)
    return rng.beta(a, np.asarray(betas, dtype=np.float64), size=(k, len(a))).argmax(axis=1)


def top_two_arms(
    alphas: Sequence[float],
    betas: Sequence[float],
    k: int,
    rng: np.random.Generator,
    beta: float = 0.5,
    max_redraws: int = 1024,
) -> np.ndarray:
    """Top-two TS, one independent decision per image.

    The challenger redraw loop is done in blocks; if the leader wins all `max_redraws` redraws (P(best) ≈ 1), the
    challenger is the runner-up of the last draw, which is what the redraws converge to in that regime anyway.
    """
    a = np.asarray(alphas, dtype=np.float64)
    b = np.asarray(betas, dtype=np.float64)
    n = len(a)
    out = np.empty(k, dtype=np.int64)
    for j in range(k):
        leader = int(rng.beta(a, b).argmax())
        if n == 1 or rng.random() < beta:
            out[j] = leader
            continue
        challenger, tried = -1, 0
        while challenger < 0 and tried < max_redraws:
            block = min(256, max_redraws - tried)
            draws = rng.beta(a, b, size=(block, n))
            winners = draws.argmax(axis=1)
            other = np.flatnonzero(winners != leader)
            if other.size:
                challenger = int(winners[other[0]])
            tried += block
        if challenger < 0:
            last = draws[-1].copy()
            last[leader] = -np.inf
            challenger = int(last.argmax())
        out[j] = challenger
    return out


def uniform_arms(n_images: Sequence[int], k: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced sweep: each image to an arm with the fewest images so far, ties broken at random."""
    counts = np.asarray(n_images, dtype=np.int64).copy()
    out = np.empty(k, dtype=np.int64)
    for j in range(k):
        least = np.flatnonzero(counts == counts.min())
        out[j] = least[rng.integers(len(least))]
        counts[out[j]] += 1
    return out


def draw_seeds(rng: np.random.Generator, n: int) -> list[int]:
    """n seeds uniform in [0, 2^32)."""
    return [int(s) for s in rng.integers(0, SEED_LIMIT, size=n, dtype=np.uint64)]


def choose_arms(
    beliefs: Sequence[ArmBelief], k: int, mode: str, rng: np.random.Generator, top_two_beta: float = 0.5
) -> np.ndarray:
    """Indices into `beliefs` for the k images of a round."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    alphas = [b.alpha for b in beliefs]
    betas = [b.beta for b in beliefs]
    if mode == "more_good":
        return thompson_arms(alphas, betas, k, rng)
    if mode == "find_best":
        return top_two_arms(alphas, betas, k, rng, top_two_beta)
    return uniform_arms([b.n_images for b in beliefs], k, rng)


def plan_round(
    arms: Sequence[PolicyArm | int],
    stats: Mapping[int, ArmBelief],
    k: int,
    mode: str,
    rng: np.random.Generator,
    shared_seeds: bool = False,
) -> list[PlannedImage]:
    """Plan the k images of one round over the given (active) arms.

    `stats` maps arm id → ArmBelief; an arm without an entry has the uniform prior and no images. Template
    arms get slot choices by Thompson sampling from their slot model (by template weights in "uniform" mode).
    With `shared_seeds` the planned images are ordered seed by seed (a fixed-seed series across arms).
    """
    if not arms:
        raise ValueError("no active arms to plan a round for: add an arm or un-retire one")
    if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        raise ValueError(f"round size k must be a positive integer, got {k!r}")
    parms = [a if isinstance(a, PolicyArm) else PolicyArm(int(a)) for a in arms]
    beliefs = [stats.get(a.arm_id, ArmBelief()) for a in parms]
    picks = choose_arms(beliefs, k, mode, rng)

    per_arm = np.bincount(picks, minlength=len(parms))
    shared = draw_seeds(rng, int(per_arm.max())) if shared_seeds else None
    used = np.zeros(len(parms), dtype=np.int64)
    planned: list[tuple[int, int, PlannedImage]] = []
    for order, idx in enumerate(picks.tolist()):
        arm = parms[idx]
        j = int(used[idx])
        used[idx] += 1
        seed = shared[j] if shared is not None else draw_seeds(rng, 1)[0]
        choices: tuple[int, ...] = ()
        if arm.slot_model is not None:
            sm = arm.slot_model
            choices = sm.random_choices(rng) if mode == "uniform" else sm.thompson_choices(rng)
        planned.append(((j, idx) if shared is not None else (order, 0), order, PlannedImage(arm.arm_id, seed, choices)))
    planned.sort(key=lambda t: (t[0], t[1]))
    return [p for _, _, p in planned]
