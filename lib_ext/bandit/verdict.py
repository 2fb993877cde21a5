"""An honest "find the best prompt" verdict: a GLR (Chernoff) stopping rule with an indifference zone ε.

Why not "stop when P(best) ≥ 95 %": checked after every rating with no minimum, a posterior probability reads noise
as certainty (three equal prompts were told "best found" in about one run in four). The GLR rule asks, for each
claim, how much evidence the ratings give against every way the claim could be false, and stops only when that
evidence passes a threshold that grows with the number of arms and (slowly) with the number of ratings, which
pays for checking after every rating (Garivier & Kaufmann 2016; Kaufmann & Koolen 2021).

Evidence that arm i's like-rate exceeds arm j's + x (x = 0 or −ε; the alternative is μ_j ≥ μ_i − x) is the GLR
statistic

    Z_x(i, j) = inf over {v − u ≥ x'} of N_i·kl(μ̂_i, u) + N_j·kl(μ̂_j, v)     (x' = −x),

0 when the empirical rates already agree with the alternative. Verdicts (δ = 1 − confidence, ε ≥ 0):

- "best": the empirical leader î beats every other arm: Z_0(î, j) > c for all j. Ratings are counted, not the
  prior, so the verdict means the same with either prior.
- "tie": the arms not shown to be worse than î are two or more, and each of them is shown to be within ε of every
  other arm (Z_ε(a, m) > c, the alternative being μ_m > μ_a + ε): "these are as good as each other, pick either".
  When prompts are really equal, this is what the rule reaches (in about c / (ε²/(4·p(1−p))) ratings per arm),
  never a crowned winner.
- "continue", with an estimate of how many more ratings it needs at the current allocation.

Threshold c(N_i, N_j) = log((K − 1)/δ) + 2·log(1 + log N_i) + 2·log(1 + log N_j): the union over the K − 1 arms
that could be wrongly beaten, plus the price of looking after every rating (the per-arm iterated-logarithm terms of
Kaufmann & Koolen's mixture-martingale threshold, without its constant inflation). It is checked, not assumed:
`python -m bench seed_bandit` measures the wrong-verdict rate on exact ties, near-ties and the bench scenarios.

Everything is vectorised over a leading run axis (shape (R, K)), so the bench runs hundreds of simulated users in
lock step through the same code the service calls with R = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

VERDICTS = ("none", "continue", "best", "tie")
DEFAULT_EPSILON = 0.03
DEFAULT_CONFIDENCE = 0.95
_CLIP = 1e-9
_BISECT = 36  # halvings of a bracket inside [0, 1]: below 1e-10


def kl_bernoulli(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """kl(Bern(p) ‖ Bern(q)), elementwise, with 0·log 0 = 0 and q clipped into (0, 1)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.clip(np.asarray(q, dtype=np.float64), _CLIP, 1 - _CLIP)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / q), 0.0)
        b = np.where(p < 1, (1 - p) * np.log(np.where(p < 1, 1 - p, 1.0) / (1 - q)), 0.0)
    return a + b


def glr(mu_i: np.ndarray, n_i: np.ndarray, mu_j: np.ndarray, n_j: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Evidence against "μ_j ≥ μ_i + eps" (eps ≥ 0): inf over v − u ≥ eps of n_i·kl(μ̂_i, u) + n_j·kl(μ̂_j, v).

    The infimum lies on v = u + eps (or is 0 when μ̂_j ≥ μ̂_i + eps). For eps = 0 it is the weighted mean; otherwise
    the convex one-dimensional problem is solved by bisection on its derivative over [μ̂_j − eps, μ̂_i].
    """
    mu_i, n_i, mu_j, n_j = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (mu_i, n_i, mu_j, n_j)))
    active = (mu_i + eps > mu_j) & (n_i + n_j > 0)
    if eps == 0.0:
        u = np.where(active, (n_i * mu_i + n_j * mu_j) / np.maximum(n_i + n_j, 1e-300), mu_i)
        out = n_i * kl_bernoulli(mu_i, u) + n_j * kl_bernoulli(mu_j, u)
        return np.where(active, out, 0.0)
    lo = np.clip(mu_j - eps, _CLIP, 1 - eps - _CLIP)
    hi = np.clip(mu_i, _CLIP, 1 - eps - _CLIP)
    hi = np.maximum(hi, lo)
    for _ in range(_BISECT):
        u = 0.5 * (lo + hi)
        v = u + eps
        slope = n_i * (u - mu_i) / (u * (1 - u)) + n_j * (v - mu_j) / (v * (1 - v))
        up = slope > 0
        hi = np.where(up, u, hi)
        lo = np.where(up, lo, u)
    u = 0.5 * (lo + hi)
    out = n_i * kl_bernoulli(mu_i, u) + n_j * kl_bernoulli(mu_j, u + eps)
    return np.where(active, out, 0.0)


def threshold(n_i: np.ndarray, n_j: np.ndarray, n_arms: int, delta: float) -> np.ndarray:
    """c(N_i, N_j) = log((K − 1)/δ) + 2·log(1 + log N_i) + 2·log(1 + log N_j) (log N taken as 0 below 1)."""
    base = math.log(max(n_arms - 1, 1) / delta)
    li = np.log1p(np.log(np.maximum(np.asarray(n_i, dtype=np.float64), 1.0)))
    lj = np.log1p(np.log(np.maximum(np.asarray(n_j, dtype=np.float64), 1.0)))
    return base + 2.0 * li + 2.0 * lj


@dataclass(frozen=True)
class BatchVerdict:
    """Verdicts of R runs at once; `kind` codes index VERDICTS. `group[r, a]`: arm a is named by run r's verdict
    (the leader alone for "best"; every arm in the tie for "tie"; the arms not yet shown worse while continuing)."""

    kind: np.ndarray  # (R,) int
    leader: np.ndarray  # (R,) int, −1 without ratings
    group: np.ndarray  # (R, K) bool
    more_ratings: np.ndarray  # (R,) float: estimated further ratings (0 when stopped, inf when unknown)


def _leader(mu: np.ndarray, n: np.ndarray) -> np.ndarray:
    # The empirical best among rated arms; equal rates go to the arm with more ratings (more evidence).
    score = np.where(n > 0, mu + 1e-9 * np.minimum(n, 1e6) / 1e6, -np.inf)
    return score.argmax(axis=1)


def _needed_scale(z: np.ndarray, n_a: np.ndarray, n_b: np.ndarray, n_arms: int, delta: float) -> np.ndarray:
    """How much every count must grow (same empirical rates) for z to pass its threshold: s with s·z ≥ c(s·N)."""
    some = z > 1e-12  # below this the evidence is rounding noise (an arm without ratings)
    safe_z = np.where(some, z, 1.0)
    s = np.where(some, threshold(n_a, n_b, n_arms, delta) / safe_z, np.inf)
    for _ in range(3):  # c grows like log log N: a few fixed-point steps settle it
        finite = np.isfinite(s)
        grow = np.where(finite, s, 1.0)
        s = np.where(finite, threshold(n_a * grow, n_b * grow, n_arms, delta) / safe_z, s)
    return np.maximum(s, 1.0)


def batch_verdict(
    successes: np.ndarray,
    failures: np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    epsilon: float = DEFAULT_EPSILON,
    estimate: bool = False,
) -> BatchVerdict:
    """The verdict of each run from its (possibly discounted) like/dislike counts, shape (R, K)."""
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
    if not (0 <= epsilon < 1 and math.isfinite(epsilon)):
        raise ValueError(f"indifference zone epsilon must be in [0, 1), got {epsilon!r}")
    s = np.atleast_2d(np.asarray(successes, dtype=np.float64))
    f = np.atleast_2d(np.asarray(failures, dtype=np.float64))
    r_runs, k = s.shape
    delta = 1.0 - confidence
    n = s + f
    mu = np.where(n > 0, s / np.maximum(n, 1e-300), 0.5)
    rows = np.arange(r_runs)
    lead = _leader(mu, n)
    no_data = ~np.isfinite(np.where(n > 0, mu, -np.inf).max(axis=1))
    if k == 1:
        one = np.where(no_data, 0, 2)
        return BatchVerdict(one, np.where(no_data, -1, 0), ~no_data[:, None], np.where(no_data, np.inf, 0.0))
    mu_l, n_l = mu[rows, lead][:, None], n[rows, lead][:, None]
    is_lead = np.arange(k)[None, :] == lead[:, None]
    z0 = glr(mu_l, n_l, mu, n)
    c0 = threshold(n_l, n, k, delta)
    worse = (z0 > c0) & ~is_lead
    best = worse.sum(axis=1) == k - 1
    in_group = ~worse
    # ε-goodness of every arm a against every other arm m: evidence against μ_m > μ_a + ε.
    need_tie = (~best) & (in_group.sum(axis=1) >= 2)
    zeps = np.zeros((r_runs, k, k))
    ceps = np.zeros((r_runs, k, k))
    eye = np.eye(k, dtype=bool)[None]
    if need_tie.any() and epsilon > 0:
        idx = np.flatnonzero(need_tie)
        ma, na = mu[idx][:, :, None], n[idx][:, :, None]
        mm, nm = mu[idx][:, None, :], n[idx][:, None, :]
        c = threshold(na, nm, k, delta)
        # Cheap upper bound first (two feasible points of the infimum); the bisection only where it may pass.
        ub = np.minimum(
            np.where(ma + epsilon <= 1, nm * kl_bernoulli(mm, np.minimum(ma + epsilon, 1.0)), np.inf),
            np.where(mm - epsilon >= 0, na * kl_bernoulli(ma, np.maximum(mm - epsilon, 0.0)), np.inf),
        )
        ub = np.where(ma + epsilon > mm, ub, 0.0)
        rows_ok = ((ub > c) | eye).all(axis=2) | ~in_group[idx]
        maybe = rows_ok.all(axis=1)
        if maybe.any():
            sub = idx[maybe]
            zeps[sub] = glr(ma[maybe], na[maybe], mm[maybe], nm[maybe], epsilon)
            ceps[sub] = c[maybe]
    good = ((zeps > ceps) | eye).all(axis=2)  # (R, K): arm a is within ε of every other arm
    tie = need_tie & (good | ~in_group).all(axis=1) & (epsilon > 0)
    kind = np.where(no_data, 0, np.where(best, 2, np.where(tie, 3, 1)))
    group = np.where(best[:, None], is_lead, in_group) & ~no_data[:, None]
    more = np.where(kind >= 2, 0.0, np.inf)
    if estimate:
        more = np.where(kind == 1, _more_ratings(mu, n, lead, z0, is_lead, in_group, k, delta, epsilon), more)
    return BatchVerdict(kind, np.where(no_data, -1, lead), group, more)


def _more_ratings(mu, n, lead, z0, is_lead, in_group, k, delta, epsilon) -> np.ndarray:
    """Further ratings until a verdict if the empirical rates held and counts grew in proportion (an estimate
    for the user: the smaller of the routes to "best" and to "tie"; inf where neither is in sight)."""
    rows = np.arange(len(lead))
    n_l = n[rows, lead][:, None]
    total = n.sum(axis=1)
    to_best = np.where(is_lead, 1.0, _needed_scale(z0, n_l, n, k, delta)).max(axis=1)
    if epsilon > 0:
        z = glr(mu[:, :, None], n[:, :, None], mu[:, None, :], n[:, None, :], epsilon)
        scale = _needed_scale(z, n[:, :, None], n[:, None, :], k, delta)
        scale = np.where(np.eye(k, dtype=bool)[None] | ~in_group[:, :, None], 1.0, scale)
        to_tie = scale.max(axis=(1, 2))
        to_tie = np.where(in_group.sum(axis=1) >= 2, to_tie, np.inf)
    else:
        to_tie = np.full(len(lead), np.inf)
    s = np.minimum(to_best, to_tie)
    unrated = (n <= 0).any(axis=1)  # an arm without ratings: nothing to extrapolate from
    known = np.isfinite(s) & ~unrated
    return np.where(known, np.ceil(total * (np.where(known, s, 1.0) - 1.0)), np.inf)


@dataclass(frozen=True)
class Verdict:
    """One session's verdict. `arms` are indices into the arrays passed in (the leader first)."""

    kind: str
    leader: int
    arms: tuple[int, ...]
    more_ratings: float | None  # None when stopped; inf when no estimate is possible yet
    confidence: float
    epsilon: float

    @property
    def stop(self) -> bool:
        return self.kind in ("best", "tie")


def verdict(
    successes: np.ndarray,
    failures: np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    epsilon: float = DEFAULT_EPSILON,
) -> Verdict:
    """The verdict for one session's active arms (1-D counts)."""
    s = np.asarray(successes, dtype=np.float64).reshape(1, -1)
    f = np.asarray(failures, dtype=np.float64).reshape(1, -1)
    if s.shape[1] == 0:
        return Verdict("none", -1, (), math.inf, confidence, epsilon)
    b = batch_verdict(s, f, confidence, epsilon, estimate=True)
    kind = VERDICTS[int(b.kind[0])]
    lead = int(b.leader[0])
    others = [int(a) for a in np.flatnonzero(b.group[0]) if a != lead]
    arms = ((lead,) if lead >= 0 else ()) + tuple(others)
    more = None if kind in ("best", "tie") else float(b.more_ratings[0])
    return Verdict(kind, lead, arms, more, confidence, epsilon)
