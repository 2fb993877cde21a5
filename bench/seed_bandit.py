"""Seed-sweep bandit bench: simulated raters with known per-arm like-probabilities, and the store under load.

Rater model (why "high-variance" means something with like/dislike): each image of arm a has a quality
q ~ N(μ_a, σ_a) (the seed decides where in the distribution it lands); the rater likes it iff q > τ. So the
like-probability is p_a = 1 − Φ((τ − μ_a)/σ_a), known exactly. A reliable prompt (small σ) wins for a casual
rater (low τ); a high-variance one (large σ) wins for a picky rater (high τ) — Nishio's A / E / C story.

Metrics (last-line JSON):
- likes_ratio_vs_uniform: likes in N ratings (rounds of k) with batched Thompson sampling / with a uniform sweep
  (the X/Y/Z-grid way), geometric mean over scenarios of the ratio of mean likes. Goal ≥ 1.3.
- ratings_to_best_ratio_vs_uniform: ratings until the stopping rule names an arm (P(best) ≥ 0.95, checked after
  every rating for both policies, as the tab's verdict is; rounds of k = 8 planned at their start), top-two TS /
  uniform sweep, geometric mean over scenarios of the ratio of mean ratings. Goal ≤ 0.5.
  Beside it, per scenario, the asymptotic ratio of the OPTIMAL allocation (Garivier & Kaufmann 2016): where even
  that is above 0.5, no policy can reach the goal on that scenario.
  best_arm_correct_fraction: top-two runs that stopped AND named the true best arm (a run hitting the budget
  counts as wrong). Goal ≥ 0.95.
- rating_ms_p95: server time of one rating as the user meets it, the larger p95 of the tab's handler (commit +
  next image + caption) and of the HTTP API (`POST …/rating` through FastAPI), on a session of 5 arms with real
  512 px PNGs (300 images with --quick, 1,500 without; bench/seed_bandit_tab.py). Goal ≤ 20.
  rating_ms_p95_service: BanditService.rate alone (validation + SQLite commit, synchronous=FULL, WAL).
- lost_ratings_after_kill: a writer subprocess rates through BanditService.rate and prints each event id after
  rate() returned; it is killed with SIGKILL mid-loop; reported ids missing from the store afterwards. Must be 0.

Policies are the library's (`policy.choose_arms`) on the library's posteriors (empirical-Bayes prior, as the
service uses by default); the simulation only replaces image generation and the human.
"""

from __future__ import annotations

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

from lib_ext.bandit.policy import ArmBelief, choose_arms
from lib_ext.bandit.posterior import ArmCounts, empirical_bayes_prior, stopping_status
from lib_ext.bandit.service import BanditService, ImageResult

REPO = Path(__file__).resolve().parents[1]
P_BEST_THRESHOLD = 0.95  # the service's default stopping rule (DEFAULT_OPTIONS: stop_rule p_best, 0.95)


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


def _may_stop(alphas: np.ndarray, betas: np.ndarray, threshold: float) -> bool:
    """Cheap necessary condition for P(best) ≥ threshold, to skip most Monte Carlo checks: P(best) of the leader is
    at most its pairwise P(θ_leader > θ_a) for every a, here by a normal approximation with a wide margin (0.1)."""
    mean = alphas / (alphas + betas)
    var = alphas * betas / ((alphas + betas) ** 2 * (alphas + betas + 1))
    lead = int(mean.argmax())
    others = np.arange(len(mean)) != lead
    z = (mean[lead] - mean[others]) / np.sqrt(var[lead] + var[others])
    return bool(_phi(float(z.min())) >= threshold - 0.1)


def _identify_run(p: np.ndarray, mode: str, k: int, budget: int, draws: int, rng: np.random.Generator):
    """Ratings until the stopping rule names an arm (P(best) ≥ 0.95, the service's default rule), checked after
    EVERY rating, as the tab refreshes its verdict after every rating; each round of k images is planned on the
    posterior at its start (generation comes in rounds, ratings one by one). (budget, None) if never stopped."""
    s = np.zeros(len(p))
    f = np.zeros(len(p))
    n_img = np.zeros(len(p), dtype=np.int64)
    rated = 0
    while rated < budget:
        picks = choose_arms(_beliefs(s, f, n_img), k, mode, rng)
        np.add.at(n_img, picks, 1)
        for arm in picks:
            liked = rng.random() < p[arm]
            s[arm] += liked
            f[arm] += not liked
            rated += 1
            beliefs = _beliefs(s, f, n_img)
            alphas = np.array([b.alpha for b in beliefs])
            betas = np.array([b.beta for b in beliefs])
            if _may_stop(alphas, betas, P_BEST_THRESHOLD):
                st = stopping_status(alphas, betas, rng, draws, p_best_threshold=P_BEST_THRESHOLD)
                if st.stop:
                    return rated, st.leader
            if rated >= budget:
                break
    return budget, None


def simulate(quick: bool) -> dict:
    reps_likes = 60 if quick else 300
    reps_best = 40 if quick else 200
    n_ratings, k, budget, draws = 200, 8, 4000, 1000 if quick else 2000
    likes_ratios, best_ratios, correct, total, censored = [], [], 0, 0, 0
    per = []
    for si, sc in enumerate(SCENARIOS):
        p = sc.p
        best = int(p.argmax())
        likes = {m: [] for m in ("more_good", "uniform")}
        for rep in range(reps_likes):
            for m in likes:
                likes[m].append(_likes_run(p, m, n_ratings, k, np.random.default_rng([si, rep, m == "uniform"])))
        ratings = {m: [] for m in ("find_best", "uniform")}
        right = 0
        for rep in range(reps_best):
            for m in ratings:
                n, leader = _identify_run(
                    p, m, k, budget, draws, np.random.default_rng([100 + si, rep, m == "uniform"])
                )
                ratings[m].append(n)
                if m == "find_best":
                    total += 1
                    right += leader == best
                    censored += leader is None
        correct += right
        lr = float(np.mean(likes["more_good"]) / np.mean(likes["uniform"]))
        br = float(np.mean(ratings["find_best"]) / np.mean(ratings["uniform"]))
        likes_ratios.append(lr)
        best_ratios.append(br)
        bound = asymptotic_ratios(p)
        per.append({
            "scenario": sc.name, "like_probabilities": dict(zip(sc.arms, np.round(p, 3).tolist())),
            "likes_ts": float(np.mean(likes["more_good"])), "likes_uniform": float(np.mean(likes["uniform"])),
            "likes_ratio": lr, "ratings_to_best_top_two": float(np.mean(ratings["find_best"])),
            "ratings_to_best_uniform": float(np.mean(ratings["uniform"])), "ratings_ratio": br,
            "ratings_to_best_top_two_median": float(np.median(ratings["find_best"])),
            "ratings_to_best_uniform_median": float(np.median(ratings["uniform"])),
            "best_arm_correct_fraction": right / reps_best,
            "ratings_ratio_asymptotic_optimal": bound["optimal"],
            "ratings_ratio_asymptotic_beta_half": bound["beta_half"],
        })  # fmt: skip
    gmean = lambda xs: float(np.exp(np.mean(np.log(xs))))  # noqa: E731
    return {
        "likes_ratio_vs_uniform": gmean(likes_ratios),
        "ratings_to_best_ratio_vs_uniform": gmean(best_ratios),
        "ratings_to_best_ratio_asymptotic_optimal": gmean([s["ratings_ratio_asymptotic_optimal"] for s in per]),
        "ratings_to_best_ratio_asymptotic_beta_half": gmean([s["ratings_ratio_asymptotic_beta_half"] for s in per]),
        "ratings_to_best_stop_check": "after every rating (both policies)",
        "best_arm_correct_fraction": correct / total,
        "top_two_runs_censored": censored,
        "likes_n_ratings": n_ratings,
        "round_size": k,
        "repetitions_likes": reps_likes,
        "repetitions_best": reps_best,
        "scenarios": per,
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
    print(
        f"{'scenario':52s} {'p(like) per arm':44s} {'likes TS/unif':>14s} {'ratings TTTS/unif':>18s} "
        f"{'ratio':>6s} {'bound':>6s}"
    )
    for s in sim["scenarios"]:
        probs = " ".join(f"{a}={v:.2f}" for a, v in s["like_probabilities"].items())
        print(
            f"{s['scenario']:52s} {probs[:44]:44s} {s['likes_ts']:6.1f}/{s['likes_uniform']:<6.1f} "
            f"{s['ratings_to_best_top_two']:7.0f}/{s['ratings_to_best_uniform']:<7.0f} {s['ratings_ratio']:6.2f} "
            f"{s['ratings_ratio_asymptotic_optimal']:6.2f}"
        )
    print("bound: the ratings ratio of the optimal allocation as confidence → 1 (no policy does better asymptotically)")
    print(
        f"likes ratio {sim['likes_ratio_vs_uniform']:.2f} (goal ≥ 1.3); ratings-to-best ratio "
        f"{sim['ratings_to_best_ratio_vs_uniform']:.2f} (goal ≤ 0.5); best arm correct "
        f"{sim['best_arm_correct_fraction']:.3f} (goal ≥ 0.95)"
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
