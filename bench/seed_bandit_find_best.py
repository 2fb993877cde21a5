"""Find-the-best simulations for `bench seed_bandit`: many simulated users in lock step through the library's
own policies (`policy.top_two_glr_arms`, `policy.uniform_arms_batch`), priors (`posterior.empirical_bayes_prior_batch`)
and verdict (`verdict.batch_verdict`), so hundreds of runs per scenario take seconds, not hours.

Every run rates one image at a time and the verdict is checked after every rating, as the tab refreshes it; images
are planned in rounds of k at the round's start (generation comes in rounds, ratings one by one). A run ends at
its first "best" or "tie" verdict or at the budget.

`python -m bench seed_bandit_find_best` prints the sampling-rule sweep on the tuning scenarios (how the policy and
FIND_BEST_BETA were chosen); the held-out scenarios are `bench seed_bandit`'s own, which were not used for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lib_ext.bandit.policy import FIND_BEST_BETA, top_two_glr_arms, uniform_arms_batch
from lib_ext.bandit.posterior import empirical_bayes_prior_batch
from lib_ext.bandit.verdict import DEFAULT_CONFIDENCE, DEFAULT_EPSILON, batch_verdict

POLICIES = ("t3c", "ttts", "uniform")


@dataclass(frozen=True)
class Runs:
    """Outcome of R runs: ratings at the verdict (budget where none came), verdict kind code (0/1 none), the arms
    the verdict names, and (arm shown P(best), arm index, run) triples where a shown P(best) was ≥ 0.5."""

    ratings: np.ndarray
    kind: np.ndarray
    group: np.ndarray
    p_best_shown: np.ndarray  # (M, 2): shown P(best), arm index


def _priors(s: np.ndarray, f: np.ndarray, prior: str) -> tuple[np.ndarray, np.ndarray]:
    if prior == "empirical":
        a0, b0 = empirical_bayes_prior_batch(s, f)
    else:
        a0, b0 = np.ones(len(s)), np.ones(len(s))
    return a0[:, None] + s, b0[:, None] + f


def _ttts(alphas: np.ndarray, betas: np.ndarray, k: int, rng: np.random.Generator, beta: float) -> np.ndarray:
    """Russo's top-two Thompson sampling, vectorised: the challenger is the first of 64 redraws whose argmax is not
    the leader (the runner-up of the last redraw if all 64 agree, as `policy.top_two_arms` does)."""
    r_runs, n_arms = alphas.shape
    leader = rng.beta(alphas[:, None, :], betas[:, None, :], size=(r_runs, k, n_arms)).argmax(axis=2)
    redraw = rng.beta(alphas[:, None, None, :], betas[:, None, None, :], size=(r_runs, k, 64, n_arms))
    winners = redraw.argmax(axis=3)
    other = winners != leader[:, :, None]
    first = other.argmax(axis=2)
    challenger = np.take_along_axis(winners, first[:, :, None], axis=2)[:, :, 0]
    last = redraw[:, :, -1, :].copy()
    np.put_along_axis(last, leader[:, :, None], -np.inf, axis=2)
    challenger = np.where(other.any(axis=2), challenger, last.argmax(axis=2))
    return np.where(rng.random((r_runs, k)) < beta, leader, challenger)


def _plan(policy, s, f, n_img, prior, k, rng, beta) -> np.ndarray:
    if policy == "uniform":
        return uniform_arms_batch(n_img, k, rng)
    alphas, betas = _priors(s, f, prior)
    if policy == "t3c":
        return top_two_glr_arms(alphas, betas, s, f, k, rng, beta)
    return _ttts(alphas, betas, k, rng, beta)


def _shown_p_best(s, f, prior, rng, draws: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The tab's P(best) of every run's most probable arm (posterior under the run's prior, Monte Carlo)."""
    alphas, betas = _priors(s, f, prior)
    wins = rng.beta(alphas[:, None, :], betas[:, None, :], size=(len(s), draws, s.shape[1])).argmax(axis=2)
    pb = np.stack([(wins == a).mean(axis=1) for a in range(s.shape[1])], axis=1)
    top = pb.argmax(axis=1)
    return pb[np.arange(len(s)), top], top


def simulate(
    p: np.ndarray,
    policy: str,
    runs: int,
    budget: int,
    seed: int | list[int],
    prior: str = "empirical",
    k: int = 8,
    beta: float = FIND_BEST_BETA,
    confidence: float = DEFAULT_CONFIDENCE,
    epsilon: float = DEFAULT_EPSILON,
    p_best_every: int = 0,
) -> Runs:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}")
    p = np.asarray(p, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n_arms = len(p)
    s = np.zeros((runs, n_arms))
    f = np.zeros((runs, n_arms))
    n_img = np.zeros((runs, n_arms), dtype=np.int64)
    ratings = np.full(runs, budget, dtype=np.int64)
    kind = np.ones(runs, dtype=np.int64)
    group = np.zeros((runs, n_arms), dtype=bool)
    shown: list[np.ndarray] = []
    alive = np.arange(runs)
    t = 0
    while t < budget and alive.size:
        picks = _plan(policy, s[alive], f[alive], n_img[alive], prior, k, rng, beta)
        for j in range(k):
            if t >= budget or not alive.size:
                break
            arm = picks[:, j]
            liked = rng.random(alive.size) < p[arm]
            s[alive, arm] += liked
            f[alive, arm] += ~liked
            n_img[alive, arm] += 1
            t += 1
            if p_best_every and t % p_best_every == 0:
                value, top = _shown_p_best(s[alive], f[alive], prior, rng)
                shown.append(np.stack([value, top], axis=1))
            v = batch_verdict(s[alive], f[alive], confidence, epsilon)
            done = v.kind >= 2
            if done.any():
                ids = alive[done]
                ratings[ids], kind[ids], group[ids] = t, v.kind[done], v.group[done]
                alive, picks = alive[~done], picks[~done]
    pb = np.concatenate(shown) if shown else np.zeros((0, 2))
    return Runs(ratings, kind, group, pb)


def wrong(runs: Runs, p: np.ndarray, epsilon: float = DEFAULT_EPSILON) -> np.ndarray:
    """Per run: its verdict names an arm more than ε worse than the best (a crowned arm or one in a tie)."""
    bad = p < p.max() - epsilon - 1e-12
    return (runs.kind >= 2) & (runs.group & bad[None, :]).any(axis=1)


def correct_stop(runs: Runs, p: np.ndarray, epsilon: float = DEFAULT_EPSILON) -> np.ndarray:
    return (runs.kind >= 2) & ~wrong(runs, p, epsilon)


# Tuning scenarios for β (never the bench's own): like-rates drawn once from a fixed seed, 3–8 arms, the best arm
# 0.08–0.3 above the runner-up.
def tuning_scenarios(n: int = 6, seed: int = 12345) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = int(rng.integers(3, 9))
        best = rng.uniform(0.2, 0.7)
        gap = rng.uniform(0.08, 0.3)
        rest = rng.uniform(0.01, max(best - gap, 0.02), size=m - 1)
        rest[0] = max(best - gap, 0.005)
        out.append(np.round(np.concatenate([[best], rest]), 3))
    return out


def ratings_ratio(p: np.ndarray, policy: str, runs: int, budget: int, seed: int, beta: float = FIND_BEST_BETA):
    """Mean ratings to a verdict, policy vs uniform sweep (same rule, same runs count), with both Runs."""
    a = simulate(p, policy, runs, budget, [seed, 0], beta=beta)
    u = simulate(p, "uniform", runs, budget, [seed, 1])
    return float(a.ratings.mean() / u.ratings.mean()), a, u


def main(quick: bool = False) -> dict:
    """Geometric-mean ratings ratio vs the uniform sweep per sampling rule: on the tuning scenarios (where the rule
    was chosen) and, for the record, on the held-out ones (`bench seed_bandit`'s scenarios)."""
    from bench.seed_bandit import SCENARIOS  # the held-out set (import here: seed_bandit imports this module)

    runs, budget = (60 if quick else 200), 20_000
    sets = {"tuning": tuning_scenarios(), "held_out": [sc.p for sc in SCENARIOS]}
    out: dict = {"tuning_scenarios": [p.tolist() for p in sets["tuning"]], "runs_per_scenario": runs}
    for policy, betas in (("t3c", ("ids", 0.4, 0.5)), ("ttts", (0.5,))):
        for beta in betas:
            for name, scen in sets.items():
                ratios = [ratings_ratio(p, policy, runs, budget, 7 + i, beta)[0] for i, p in enumerate(scen)]
                key = f"{name}_{policy}_beta_{beta}"
                out[key] = float(np.exp(np.mean(np.log(ratios))))
                print(f"{name:9s} {policy} β={beta}: geometric-mean ratio {out[key]:.3f}", flush=True)
    return out
