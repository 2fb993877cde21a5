"""Beta–Bernoulli posteriors per arm: discounted counts, empirical-Bayes prior, intervals, P(best).

The "find the best" verdict is not a posterior rule: see verdict.py.

Only like (1) and dislike (0) ratings are observations; pending and skipped images never reach this module
(Nishio's bug, where unreviewed images counted as bad, punished the best arms).

Drift: with a half-life h, a rating made Δt seconds ago weighs γ = 2^(−Δt/h). Summing weighted ratings is the
discounted-TS recursion S̃ ← γS̃ + r (Raj & Kalyani 2017) on wall-clock time, but recomputed from the stored
events, so an undo or a changed half-life needs no stored running state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .betafn import beta_ppf


@dataclass(frozen=True)
class Observation:
    """One current like/dislike of one image of an arm; `time` is the rating time in epoch seconds."""

    arm_id: int
    liked: bool
    time: float


@dataclass(frozen=True)
class ArmCounts:
    """Raw and (possibly) discounted like/dislike counts of one arm."""

    likes: int = 0
    dislikes: int = 0
    successes: float = 0.0  # discounted likes
    failures: float = 0.0  # discounted dislikes

    @property
    def n(self) -> int:
        return self.likes + self.dislikes

    @property
    def weight(self) -> float:
        return self.successes + self.failures


@dataclass(frozen=True)
class Prior:
    alpha: float = 1.0
    beta: float = 1.0


UNIFORM_PRIOR = Prior(1.0, 1.0)


def discount_factor(age_seconds: float | np.ndarray, half_life_seconds: float | None) -> float | np.ndarray:
    """γ = 2^(−age/half-life); 1 without a half-life. Future times (clock skew) count as age 0."""
    if half_life_seconds is None:
        return np.ones_like(age_seconds, dtype=np.float64) if isinstance(age_seconds, np.ndarray) else 1.0
    if not half_life_seconds > 0:
        raise ValueError(f"half-life must be > 0 seconds, got {half_life_seconds!r}")
    age = np.maximum(np.asarray(age_seconds, dtype=np.float64), 0.0)
    out = np.exp2(-age / half_life_seconds)
    return out if isinstance(age_seconds, np.ndarray) else float(out)


def count_arms(
    observations: Iterable[Observation],
    arm_ids: Iterable[int],
    now: float,
    half_life_seconds: float | None = None,
) -> dict[int, ArmCounts]:
    """Counts per arm (every id in `arm_ids` appears, with zeros if it has no ratings)."""
    acc: dict[int, list[float]] = {a: [0, 0, 0.0, 0.0] for a in arm_ids}
    for ob in observations:
        row = acc.setdefault(ob.arm_id, [0, 0, 0.0, 0.0])
        g = discount_factor(now - ob.time, half_life_seconds)
        if ob.liked:
            row[0] += 1
            row[2] += g
        else:
            row[1] += 1
            row[3] += g
    return {a: ArmCounts(int(r[0]), int(r[1]), float(r[2]), float(r[3])) for a, r in acc.items()}


def empirical_bayes_prior(
    counts: Iterable[ArmCounts],
    kappa_cap: float = 10.0,
    kappa_min: float = 2.0,
    min_weight: float = 1.0,
    floor: float = 0.5,
) -> Prior:
    """Moment-matched Beta prior from the arms' observed like rates.

    m = mean(p̂), v = var(p̂) − mean(m(1−m)/n) (the binomial noise in p̂ is removed, otherwise a few noisy
    arms look heterogeneous), κ = m(1−m)/v − 1 clipped to [kappa_min, kappa_cap] (the cap keeps new arms
    explorable: a prior worth more than ~10 ratings would bury an arm that deserves a look), α0 = mκ,
    β0 = (1−m)κ, each at least `floor`. Fewer than two arms with data → uniform Beta(1, 1).
    """
    cs = list(counts)
    a, b = empirical_bayes_prior_batch(
        np.array([[c.successes for c in cs]]), np.array([[c.failures for c in cs]]), kappa_cap, kappa_min,
        min_weight, floor,
    )  # fmt: skip
    return Prior(float(a[0]), float(b[0]))


def empirical_bayes_prior_batch(
    successes: np.ndarray,
    failures: np.ndarray,
    kappa_cap: float = 10.0,
    kappa_min: float = 2.0,
    min_weight: float = 1.0,
    floor: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """`empirical_bayes_prior` for R runs at once: counts of shape (R, K) → (α0, β0), each of shape (R,)."""
    s = np.atleast_2d(np.asarray(successes, dtype=np.float64))
    w = s + np.atleast_2d(np.asarray(failures, dtype=np.float64))
    used = w >= min_weight
    m_used = used.sum(axis=1)
    p = np.where(used, s / np.where(used, w, 1.0), 0.0)
    cnt = np.maximum(m_used, 1)
    mean = p.sum(axis=1) / cnt
    m = np.clip(mean, 1e-3, 1 - 1e-3)
    var = np.where(used, (p - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(m_used - 1, 1)
    noise = np.where(used, m[:, None] * (1 - m[:, None]) / np.where(used, w, 1.0), 0.0).sum(axis=1) / cnt
    v = var - noise
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(v <= 0, kappa_cap, m * (1 - m) / np.where(v > 0, v, 1.0) - 1.0)
    kappa = np.clip(kappa, kappa_min, kappa_cap)
    alpha = np.maximum(m * kappa, floor)
    beta = np.maximum((1 - m) * kappa, floor)
    few = m_used < 2
    return np.where(few, UNIFORM_PRIOR.alpha, alpha), np.where(few, UNIFORM_PRIOR.beta, beta)


@dataclass(frozen=True)
class Posterior:
    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Equal-tailed credible interval."""
        if not 0 < level < 1:
            raise ValueError(f"credible level must be in (0, 1), got {level!r}")
        tail = (1 - level) / 2
        return beta_ppf(tail, self.alpha, self.beta), beta_ppf(1 - tail, self.alpha, self.beta)


def posterior(counts: ArmCounts, prior: Prior = UNIFORM_PRIOR) -> Posterior:
    return Posterior(prior.alpha + counts.successes, prior.beta + counts.failures)


def sample_thetas(alphas: np.ndarray, betas: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """`draws` joint posterior draws, shape (draws, n_arms)."""
    a = np.asarray(alphas, dtype=np.float64)
    return rng.beta(a, np.asarray(betas, dtype=np.float64), size=(draws, len(a)))


def p_best(alphas: Sequence[float], betas: Sequence[float], rng: np.random.Generator, draws: int = 20000) -> np.ndarray:
    """Monte Carlo P(arm is best): the fraction of joint posterior draws each arm wins."""
    k = len(alphas)
    if k == 0:
        return np.zeros(0)
    if k == 1:
        return np.ones(1)
    wins = np.zeros(k, dtype=np.int64)
    done = 0
    chunk = max(1, 200_000 // k)  # bounded memory
    while done < draws:
        m = min(chunk, draws - done)
        wins += np.bincount(sample_thetas(alphas, betas, m, rng).argmax(axis=1), minlength=k)
        done += m
    return wins / draws


@dataclass(frozen=True)
class ArmStats:
    arm_id: int
    n: int
    likes: int
    dislikes: int
    alpha: float
    beta: float
    mean: float
    ci_low: float
    ci_high: float
    p_best: float | None  # None for arms outside the comparison (retired)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def summarize(
    counts: Mapping[int, ArmCounts],
    prior: Prior,
    active: Iterable[int],
    rng: np.random.Generator,
    draws: int = 20000,
    level: float = 0.95,
    p_best_of: Mapping[int, float] | None = None,
) -> list[ArmStats]:
    """Per-arm statistics; P(best) is computed among the `active` arms only (or taken from `p_best_of`)."""
    active_ids = [a for a in active if a in counts]
    posts = {a: posterior(c, prior) for a, c in counts.items()}
    if p_best_of is None:
        pb = p_best([posts[a].alpha for a in active_ids], [posts[a].beta for a in active_ids], rng, draws)
        p_best_of = dict(zip(active_ids, pb.tolist()))
    pb_of = {a: p_best_of[a] for a in active_ids}
    out = []
    for a, c in counts.items():
        post = posts[a]
        lo, hi = post.interval(level)
        out.append(ArmStats(a, c.n, c.likes, c.dislikes, post.alpha, post.beta, post.mean, lo, hi, pb_of.get(a)))
    return out
