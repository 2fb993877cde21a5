"""Seed-sweep bandit bench: simulated raters with known per-arm like-probabilities, and the store under load.

Rater model (why "high-variance" means something with like/dislike): each image of arm a has a quality
q ~ N(μ_a, σ_a) (the seed decides where in the distribution it lands); the rater likes it iff q > τ. So the
like-probability is p_a = 1 − Φ((τ − μ_a)/σ_a), known exactly. A reliable prompt (small σ) wins for a casual
rater (low τ); a high-variance one (large σ) wins for a picky rater (high τ) — Nishio's A / E / C story.

Metrics (last-line JSON):
- likes_ratio_vs_uniform: likes in N ratings (rounds of k) with batched Thompson sampling / with a uniform sweep
  (the X/Y/Z-grid way), geometric mean over scenarios of the ratio of mean likes. Goal ≥ 1.3.
- ratings_to_best_ratio_vs_uniform: ratings until the GLR verdict (`lib_ext/bandit/verdict.py`, confidence 0.95,
  ε 0.03, checked after every rating for both policies, as the tab's verdict is; rounds of k = 8 planned at their
  start), find-best policy (T3C with information-directed β) / uniform sweep, geometric mean over the four
  scenarios of the ratio of mean ratings, 800 runs each, with a bootstrap 95 % CI. Goal ≤ 0.5.
  ratio_vs_bound_max: per scenario, that ratio over the asymptotic ratio of the OPTIMAL allocation (Garivier &
  Kaufmann 2016); goal ≤ 1.1. best_arm_correct_fraction: runs whose verdict named the true best arm.
- wrong_stop_rate_max: over a calibration suite (exact ties of 2, 3 and 10 arms, near-ties around ε, the four
  scenarios), 400 runs each, up to 1,000 ratings, with the EB prior, the uniform prior and the uniform sweep: the
  fraction of runs whose verdict names an arm more than ε worse than the best (as the best, or in a tie). Goal
  ≤ 0.05. crowned_in_exact_tie_rate_max: "best" verdicts among exactly equal arms.
  p_best_calibration / p_best_reliability: the tab's P(best) (posterior, Monte Carlo) of each run's most probable
  arm every 20 ratings, binned: the fraction of shown values ≥ 0.9 whose arm really is best (equal best counts).
  tie_reach: equal arms reach "as good as each other" in finite ratings (fraction and median within 40,000).
- rating_ms_p95: server time of one rating as the user meets it, the larger p95 of the tab's handler (commit +
  next image + caption) and of the HTTP API (`POST …/rating` through FastAPI), on a session of 5 arms with real
  512 px PNGs (300 images with --quick, 1,500 without; bench/seed_bandit_tab.py). Goal ≤ 20.
  rating_ms_p95_service: BanditService.rate alone (validation + SQLite commit, synchronous=FULL, WAL).
- lost_ratings_after_kill: a writer subprocess rates through BanditService.rate and prints each event id after
  rate() returned; it is killed with SIGKILL mid-loop; reported ids missing from the store afterwards. Must be 0.

Policies are the library's (`policy.choose_arms`, `policy.top_two_glr_arms`, `policy.uniform_arms_batch`) on the
library's posteriors (empirical-Bayes prior, as the service uses by default) and verdict; the simulation only
replaces image generation and the human (bench/seed_bandit_find_best.py runs many simulated users in lock step).
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib_ext.bandit.policy import FIND_BEST_BETA, ArmBelief, choose_arms
from lib_ext.bandit.posterior import ArmCounts, empirical_bayes_prior
from lib_ext.bandit.service import BanditService, ImageResult
from lib_ext.bandit.verdict import DEFAULT_CONFIDENCE, DEFAULT_EPSILON

from . import seed_bandit_find_best as sv

REPO = Path(__file__).resolve().parents[1]


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class Scenario:
    name: str
    arms: tuple[str, ...]
    mu: tuple[float, ...]
    sigma: tuple[float, ...]
    tau: float

    @property
    def p(self) -> np.ndarray:
        return np.array([1.0 - _phi((self.tau - m) / s) for m, s in zip(self.mu, self.sigma)])


_NISHIO = dict(arms=("A", "B", "C", "D", "E"), mu=(0.6, 0.45, 0.1, 0.4, 0.4), sigma=(0.15, 0.3, 0.3, 0.4, 1.0))
SCENARIOS = (
    Scenario("A reliable, E high-variance, C bad; casual rater", tau=0.5, **_NISHIO),
    Scenario("A reliable, E high-variance, C bad; picky rater", tau=0.9, **_NISHIO),
    Scenario(
        "ten prompts, one good",
        tuple("PQRSTUVWXY"),
        (0.9, 0.6, 0.5, 0.5, 0.4, 0.4, 0.3, 0.3, 0.2, 0.2),
        (0.5,) * 10,
        1.0,
    ),
    Scenario("two close leaders", tuple("FGHIJ"), (0.55, 0.45, 0.2, 0.1, 0.0), (0.3,) * 5, 0.55),
)


def _kl(p: float, q: float) -> float:
    p, q = min(max(p, 1e-12), 1 - 1e-12), min(max(q, 1e-12), 1 - 1e-12)
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def _allocation_value(w: np.ndarray, mu: np.ndarray) -> float:
    """min over challengers a of inf_x w_b KL(μ_b, x) + w_a KL(μ_a, x) (x = the weighted mean for Bernoulli)."""
    b = int(mu.argmax())
    out = math.inf
    for a in range(len(mu)):
        if a != b:
            x = (w[b] * mu[b] + w[a] * mu[a]) / (w[b] + w[a])
            out = min(out, w[b] * _kl(mu[b], x) + w[a] * _kl(mu[a], x))
    return out


def asymptotic_ratios(mu: np.ndarray, iters: int = 3000) -> dict[str, float]:
    """Best achievable ratings-to-best ratio vs uniform as confidence → 1 (Garivier & Kaufmann 2016: the
    sample complexity is T*·log(1/δ), T*⁻¹ = max_w allocation value): with the optimal allocation, and with the
    best allocation that gives the leader β = ½ (what top-two TS converges to). Found by seeded random search."""
    rng = np.random.default_rng(0)
    k, b = len(mu), int(mu.argmax())
    uniform = _allocation_value(np.full(k, 1 / k), mu)
    best = {}
    for name, leader_share in (("optimal", None), ("beta_half", 0.5)):
        w = np.full(k, 1 / k) if leader_share is None else np.where(np.arange(k) == b, 0.5, 0.5 / (k - 1))
        v, step = _allocation_value(w, mu), 0.3
        for it in range(iters):
            z = w * np.exp(step * rng.standard_normal(k))
            if leader_share is None:
                z /= z.sum()
            else:
                others = np.arange(k) != b
                z[others] *= (1 - leader_share) / z[others].sum()
                z[b] = leader_share
            vz = _allocation_value(z, mu)
            if vz > v:
                w, v = z, vz
            if it % 1000 == 999:
                step /= 2
        best[name] = uniform / v
    return best


def _beliefs(s: np.ndarray, f: np.ndarray, n_img: np.ndarray) -> list[ArmBelief]:
    prior = empirical_bayes_prior([ArmCounts(int(a), int(b), float(a), float(b)) for a, b in zip(s, f)])
    return [ArmBelief(prior.alpha + a, prior.beta + b, int(n)) for a, b, n in zip(s, f, n_img)]


def _likes_run(p: np.ndarray, mode: str, n_ratings: int, k: int, rng: np.random.Generator) -> int:
    s = np.zeros(len(p))
    f = np.zeros(len(p))
    n_img = np.zeros(len(p), dtype=np.int64)
    while n_img.sum() < n_ratings:
        picks = choose_arms(_beliefs(s, f, n_img), min(k, n_ratings - int(n_img.sum())), mode, rng)
        liked = rng.random(len(picks)) < p[picks]
        np.add.at(s, picks, liked)
        np.add.at(f, picks, ~liked)
        np.add.at(n_img, picks, 1)
    return int(s.sum())


# Calibration suite: exact ties (every verdict is right, but "best" must not be crowned), near-ties around ε, and
# the bench's scenarios. Like-rates are given directly.
CALIBRATION = (
    ("two equal", (0.3, 0.3)),
    ("three equal", (0.4, 0.4, 0.4)),
    ("ten equal", (0.2,) * 10),
    ("leaders 0.02 apart (within ε)", (0.5, 0.48, 0.3)),
    ("leaders 0.04 apart (just past ε)", (0.5, 0.46, 0.3)),
    ("leaders 0.06 apart, low rates", (0.12, 0.06, 0.05, 0.02)),
    ("three near, one far", (0.35, 0.31, 0.3, 0.1)),
    *((sc.name, tuple(np.round(sc.p, 4))) for sc in SCENARIOS),
)
CALIBRATION_COMBOS = (("find_best", "t3c", "empirical"), ("find_best", "t3c", "uniform"), ("uniform", "uniform", "-"))
P_BEST_BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0000001)


def _gmean(xs) -> float:
    return float(np.exp(np.mean(np.log(xs))))


def likes_suite(quick: bool) -> tuple[list[float], list[dict]]:
    reps, n_ratings, k = (60 if quick else 300), 200, 8
    ratios, per = [], []
    for si, sc in enumerate(SCENARIOS):
        likes = {m: [] for m in ("more_good", "uniform")}
        for rep in range(reps):
            for m in likes:
                likes[m].append(_likes_run(sc.p, m, n_ratings, k, np.random.default_rng([si, rep, m == "uniform"])))
        ratios.append(float(np.mean(likes["more_good"]) / np.mean(likes["uniform"])))
        per.append({"likes_ts": float(np.mean(likes["more_good"])), "likes_uniform": float(np.mean(likes["uniform"])),
                    "likes_ratio": ratios[-1]})  # fmt: skip
    return ratios, per


def ratio_suite(quick: bool) -> dict:
    """Ratings to a verdict, find-best policy vs uniform sweep under the same GLR rule, with a bootstrap 95 % CI of
    the geometric mean of the per-scenario ratios of means (runs resampled within each scenario and policy)."""
    runs, budget = (200 if quick else 800), 20_000
    per, means = [], []
    for si, sc in enumerate(SCENARIOS):
        p = sc.p
        a = sv.simulate(p, "t3c", runs, budget, [200 + si, 0])
        u = sv.simulate(p, "uniform", runs, budget, [200 + si, 1])
        means.append((a.ratings, u.ratings))
        bound = asymptotic_ratios(p)
        ratio = float(a.ratings.mean() / u.ratings.mean())
        per.append({
            "scenario": sc.name, "like_probabilities": dict(zip(sc.arms, np.round(p, 3).tolist())),
            "ratings_to_verdict_find_best": float(a.ratings.mean()),
            "ratings_to_verdict_uniform": float(u.ratings.mean()),
            "ratings_to_verdict_find_best_median": float(np.median(a.ratings)),
            "ratings_to_verdict_uniform_median": float(np.median(u.ratings)),
            "ratings_ratio": ratio,
            "ratings_ratio_asymptotic_optimal": bound["optimal"],
            "ratings_ratio_asymptotic_beta_half": bound["beta_half"],
            "ratio_vs_bound": ratio / bound["optimal"],
            "correct_verdict_fraction_find_best": float(sv.correct_stop(a, p).mean()),
            "correct_verdict_fraction_uniform": float(sv.correct_stop(u, p).mean()),
            "censored_find_best": int((a.kind < 2).sum()), "censored_uniform": int((u.kind < 2).sum()),
        })  # fmt: skip
    rng = np.random.default_rng(99)
    boot = []
    for _ in range(2000):
        boot.append(_gmean([rng.choice(x, len(x)).mean() / rng.choice(y, len(y)).mean() for x, y in means]))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "ratings_to_best_ratio_vs_uniform": _gmean([s["ratings_ratio"] for s in per]),
        "ratings_to_best_ratio_ci95": [float(lo), float(hi)],
        "ratings_to_best_ratio_asymptotic_optimal": _gmean([s["ratings_ratio_asymptotic_optimal"] for s in per]),
        "ratio_vs_bound_max": max(s["ratio_vs_bound"] for s in per),
        "best_arm_correct_fraction": float(np.mean([s["correct_verdict_fraction_find_best"] for s in per])),
        "ratio_runs_per_scenario": runs,
        "ratio_budget": budget,
        "ratio_scenarios": per,
    }


def calibration_suite(quick: bool) -> dict:
    """wrong_stop_rate (a verdict naming an arm more than ε worse than the best, as the best or in a tie) per
    scenario and policy/prior, within 1,000 ratings checked after each; the reliability of the shown P(best)."""
    runs, budget = (100 if quick else 400), 1000
    rows, shown = [], {"empirical": [], "uniform": []}
    for ci, (name, rates) in enumerate(CALIBRATION):
        p = np.asarray(rates, dtype=np.float64)
        exact_tie = int((p == p.max()).sum()) > 1
        for mode, policy, prior in CALIBRATION_COMBOS:
            r = sv.simulate(p, policy, runs, budget, [300 + ci, len(rows)], prior=prior if prior != "-" else "uniform",
                            p_best_every=0 if mode == "uniform" else 20)  # fmt: skip
            if mode != "uniform":
                arms = r.p_best_shown[:, 1].astype(int)
                shown[prior].append(np.stack([r.p_best_shown[:, 0], p[arms] >= p.max() - 1e-12,
                                              np.ones(len(arms)) * exact_tie], axis=1))  # fmt: skip
            rows.append({
                "scenario": name, "like_rates": list(rates), "mode": mode, "prior": prior,
                "wrong_stop_rate": float(sv.wrong(r, p).mean()),
                "verdict_rate": float((r.kind >= 2).mean()),
                "best_verdict_rate": float((r.kind == 2).mean()),
                "tie_verdict_rate": float((r.kind == 3).mean()),
                "crowned_in_exact_tie_rate": float((r.kind == 2).mean()) if exact_tie else None,
                "median_ratings_to_verdict": float(np.median(r.ratings[r.kind >= 2])) if (r.kind >= 2).any() else None,
            })  # fmt: skip
    table = {}
    for prior, parts in shown.items():
        allv = np.concatenate(parts) if parts else np.zeros((0, 3))
        table[prior] = [
            {"shown_from": lo, "shown_to": min(hi, 1.0), "n": int(m.sum()),
             "really_best": float(allv[m, 1].mean()) if m.any() else None,
             "n_in_exact_ties": int(allv[m, 2].sum())}
            for lo, hi in itertools.pairwise(P_BEST_BINS)
            for m in [(allv[:, 0] >= lo) & (allv[:, 0] < hi)]
        ]  # fmt: skip
    top = {prior: [b for b in t if b["shown_from"] >= 0.9] for prior, t in table.items()}
    cal = {
        prior: (sum(b["really_best"] * b["n"] for b in bins if b["n"]) / max(sum(b["n"] for b in bins), 1))
        for prior, bins in top.items()
    }
    tie_rates = [r["crowned_in_exact_tie_rate"] for r in rows if r["crowned_in_exact_tie_rate"] is not None]
    return {
        "wrong_stop_rate_max": max(r["wrong_stop_rate"] for r in rows),
        "crowned_in_exact_tie_rate_max": max(tie_rates),
        "p_best_calibration": cal,
        "p_best_reliability": table,
        "calibration_runs_per_scenario": runs,
        "calibration_budget": budget,
        "epsilon": DEFAULT_EPSILON,
        "confidence": DEFAULT_CONFIDENCE,
        "calibration": rows,
    }


TIE_REACH = (("two equal, low rate", (0.1, 0.1)), ("three equal, lower rate", (0.05, 0.05, 0.05)))


def tie_reach_suite(quick: bool) -> dict:
    """Equal prompts reach "as good as each other" in finite ratings (find-best policy, EB prior), never a wrong or
    crowned verdict: fraction of runs with a tie verdict within the budget and the median ratings to it."""
    runs, budget = (30 if quick else 100), 40_000
    out = []
    for ti, (name, rates) in enumerate(TIE_REACH):
        r = sv.simulate(np.asarray(rates), "t3c", runs, budget, [400 + ti, 0])
        tie = r.kind == 3
        out.append({
            "scenario": name, "like_rates": list(rates), "tie_verdict_rate": float(tie.mean()),
            "best_verdict_rate": float((r.kind == 2).mean()),
            "median_ratings_to_tie": float(np.median(r.ratings[tie])) if tie.any() else None,
        })  # fmt: skip
    return {"tie_reach": out, "tie_reach_runs": runs, "tie_reach_budget": budget}


def simulate(quick: bool) -> dict:
    likes, likes_per = likes_suite(quick)
    ratio = ratio_suite(quick)
    for s, extra in zip(ratio["ratio_scenarios"], likes_per):
        s.update(extra)
    return {
        "likes_ratio_vs_uniform": _gmean(likes),
        **ratio,
        **calibration_suite(quick),
        **tie_reach_suite(quick),
        "find_best_policy": f"T3C, β = {FIND_BEST_BETA}",
        "stop_check": "after every rating (both policies), rounds of 8 planned at their start",
    }


def _service_with_images(folder: Path, n_images: int) -> tuple[BanditService, int, list[int]]:
    svc = BanditService(folder / "db", seed=0)
    sid = svc.create_session("bench", {"steps": 20}, round_size=50)["id"]
    for prompt in ("a cat", "a dog", "a {red|blue} fox", "a bird", "a fish"):
        svc.add_arm(sid, prompt)
    out = folder / "img"
    out.mkdir(parents=True, exist_ok=True)

    def generate(jobs):
        res = []
        for j in jobs:
            path = out / f"{j.round_number}_{j.index}.png"
            path.write_bytes(f"{j.prompt} {j.seed}".encode())
            res.append(ImageResult(j, str(path)))
        return res

    ids = []
    while len(ids) < n_images:
        ids += [im["id"] for im in svc.run_round(sid, generate)["images"]]
    return svc, sid, ids


def user_rating_latency(quick: bool) -> dict:
    """The issue's rating time: one rating through the tab's handler (commit + next image + caption) and through
    the HTTP API (FastAPI, in-process ASGI), on a session of real 512 px PNGs (bench/seed_bandit_tab.py)."""
    from bench.seed_bandit_tab import measure

    r = measure(quick, verbose=False)
    keys = ("rating_ms_p95", "rating_ms_p95_tab", "rating_ms_p95_api", "rating_ms_median_tab", "rating_ms_median_api")
    return {**{k: r[k] for k in keys}, "rating_latency_session_images": r["session_images"]}


def rating_latency(quick: bool) -> dict:
    n = 150 if quick else 500
    with tempfile.TemporaryDirectory() as tmp:
        svc, sid, ids = _service_with_images(Path(tmp), 300)
        rng = np.random.default_rng(0)
        times, with_stats = [], []
        values = ("like", "dislike", "skip")
        for j in range(n):
            t0 = time.perf_counter()
            svc.rate(ids[j % len(ids)], values[rng.integers(3)], client="bench")
            times.append((time.perf_counter() - t0) * 1000)
        for j in range(max(20, n // 10)):
            t0 = time.perf_counter()
            svc.rate(ids[j % len(ids)], "like", client="bench")
            svc.stats(sid, draws=4000)
            with_stats.append((time.perf_counter() - t0) * 1000)
        svc.close()
    return {
        "rating_ms_p95_service": float(np.percentile(times, 95)),
        "rating_ms_median_service": float(np.median(times)),
        "rating_plus_stats_ms_p95": float(np.percentile(with_stats, 95)),
        "rating_samples": n,
    }


_WRITER = textwrap.dedent(
    """
    import sys
    from lib_ext.bandit.service import BanditService
    svc = BanditService(sys.argv[1])
    ids = [int(x) for x in sys.argv[2].split(",")]
    print("ready", flush=True)
    j = 0
    while True:
        ev = svc.rate(ids[j % len(ids)], ("like", "dislike", "skip")[j % 3], client="victim")["event_id"]
        print(ev, flush=True)
        j += 1
    """
)


def kill_test(quick: bool) -> dict:
    if not hasattr(signal, "SIGKILL"):
        return {"lost_ratings_after_kill": None, "kill_runs": 0}
    runs = 2 if quick else 5
    lost = reported_total = 0
    with tempfile.TemporaryDirectory() as tmp:
        svc, sid, ids = _service_with_images(Path(tmp), 60)
        svc.close()
        rng = np.random.default_rng(1)
        for _ in range(runs):
            proc = subprocess.Popen(
                [sys.executable, "-c", _WRITER, str(Path(tmp) / "db"), ",".join(map(str, ids))],
                cwd=REPO, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("writer subprocess failed to start")
            target = int(rng.integers(50, 250))
            reported = [int(proc.stdout.readline()) for _ in range(target)]
            os.kill(proc.pid, signal.SIGKILL)  # mid-loop: it keeps rating until killed
            proc.wait()
            reported += [int(x) for x in proc.stdout.read().split()]
            with BanditService(Path(tmp) / "db") as check:
                stored = {e["id"] for e in check.store.rating_history(sid)}
            lost += sum(1 for e in reported if e not in stored)
            reported_total += len(reported)
    return {"lost_ratings_after_kill": lost, "kill_runs": runs, "kill_reported_ratings": reported_total}


def main(quick: bool = False) -> dict:
    t0 = time.time()
    sim = simulate(quick)
    lat = {**rating_latency(quick), **user_rating_latency(quick)}
    kill = kill_test(quick)
    print(f"{'scenario':52s} {'likes TS/unif':>14s} {'ratings to verdict T3C/unif':>28s} {'ratio':>6s} {'bound':>6s}")
    for s in sim["ratio_scenarios"]:
        print(
            f"{s['scenario']:52s} {s['likes_ts']:6.1f}/{s['likes_uniform']:<7.1f} "
            f"{s['ratings_to_verdict_find_best']:13.0f}/{s['ratings_to_verdict_uniform']:<14.0f} "
            f"{s['ratings_ratio']:6.3f} {s['ratings_ratio_asymptotic_optimal']:6.3f}"
        )
    print("bound: the ratings ratio of the optimal allocation as confidence → 1 (Garivier & Kaufmann 2016)")
    print(
        f"\n{'calibration scenario':36s} {'mode':10s} {'prior':9s} {'wrong':>6s} {'verdict':>7s} {'best':>5s} "
        f"{'tie':>5s}"
    )
    for r in sim["calibration"]:
        print(
            f"{r['scenario'][:36]:36s} {r['mode']:10s} {r['prior']:9s} {r['wrong_stop_rate']:6.3f} "
            f"{r['verdict_rate']:7.3f} {r['best_verdict_rate']:5.3f} {r['tie_verdict_rate']:5.3f}"
        )
    for prior, bins in sim["p_best_reliability"].items():
        cells = ", ".join(
            f"[{b['shown_from']:.2f}, {b['shown_to']:.2f}): "
            f"{'-' if b['really_best'] is None else round(b['really_best'], 3)} (n={b['n']})"
            for b in bins
        )
        print(f"shown P(best) → fraction really best ({prior} prior): {cells}")
    for t in sim["tie_reach"]:
        print(
            f"{t['scenario']}: 'as good as each other' in {t['tie_verdict_rate']:.2f} of runs within "
            f"{sim['tie_reach_budget']} ratings (median {t['median_ratings_to_tie']}), crowned "
            f"{t['best_verdict_rate']:.2f}"
        )
    lo, hi = sim["ratings_to_best_ratio_ci95"]
    print(
        f"likes ratio {sim['likes_ratio_vs_uniform']:.2f} (goal ≥ 1.3); ratings-to-verdict ratio "
        f"{sim['ratings_to_best_ratio_vs_uniform']:.3f} (95% CI {lo:.3f}–{hi:.3f}; goal ≤ 0.5); ratio vs bound "
        f"max {sim['ratio_vs_bound_max']:.3f} (goal ≤ 1.1); wrong-stop rate max {sim['wrong_stop_rate_max']:.3f} "
        "(goal ≤ 0.05)"
    )
    print(
        f"rating p95 {lat['rating_ms_p95']:.2f} ms (goal ≤ 20; max of tab handler {lat['rating_ms_p95_tab']:.2f} "
        f"and HTTP API {lat['rating_ms_p95_api']:.2f}, session of {lat['rating_latency_session_images']} 512 px "
        f"images); BanditService.rate alone {lat['rating_ms_p95_service']:.2f} (median "
        f"{lat['rating_ms_median_service']:.2f}; with stats {lat['rating_plus_stats_ms_p95']:.1f})"
    )
    print(f"lost after kill -9: {kill['lost_ratings_after_kill']}")
    return {**sim, **lat, **kill, "seconds": round(time.time() - t0, 1), "quick": quick}


if __name__ == "__main__":
    import json

    print(json.dumps(main("--quick" in sys.argv)))
