"""The GLR verdict: its statistic against brute force, its verdict kinds, its estimate, and its error rate."""

import numpy as np
import pytest

from lib_ext.bandit.policy import top_two_glr_arms, uniform_arms_batch
from lib_ext.bandit.verdict import batch_verdict, glr, kl_bernoulli, threshold, verdict


def _brute(mu_i, n_i, mu_j, n_j, eps):
    """inf over a fine grid of (u, u + eps) of n_i kl(mu_i, u) + n_j kl(mu_j, u + eps), 0 if mu_j ≥ mu_i + eps."""
    if mu_j >= mu_i + eps:
        return 0.0
    u = np.linspace(1e-7, 1 - eps - 1e-7, 400_001)
    return float((n_i * kl_bernoulli(mu_i, u) + n_j * kl_bernoulli(mu_j, u + eps)).min())


@pytest.mark.parametrize("eps", [0.0, 0.03, 0.1])
@pytest.mark.parametrize(
    "mu_i,n_i,mu_j,n_j", [(0.5, 100, 0.4, 80), (0.9, 12, 0.2, 30), (0.05, 400, 0.0, 50), (1.0, 7, 0.5, 9)]
)
def test_glr_matches_a_brute_force_infimum(mu_i, n_i, mu_j, n_j, eps):
    got = float(glr(np.array(mu_i), n_i, np.array(mu_j), n_j, eps))
    assert got == pytest.approx(_brute(mu_i, n_i, mu_j, n_j, eps), rel=1e-4, abs=1e-6)


def test_glr_is_zero_when_the_data_agree_with_the_alternative():
    assert glr(np.array(0.4), 50, np.array(0.5), 50) == 0
    assert glr(np.array(0.5), 50, np.array(0.48), 50, 0.03) > 0  # 0.48 < 0.5 + 0.03: some evidence
    assert glr(np.array(0.5), 50, np.array(0.56), 50, 0.03) == 0


def test_threshold_grows_with_arms_and_ratings():
    assert threshold(10, 10, 3, 0.05) < threshold(10, 10, 10, 0.05) < threshold(1000, 10, 10, 0.05)
    assert threshold(10, 10, 3, 0.05) < threshold(10, 10, 3, 0.01)


def test_verdict_kinds():
    clear = verdict([80, 20, 10], [20, 80, 90])
    assert clear.kind == "best" and clear.arms == (0,) and clear.stop and clear.more_ratings is None
    early = verdict([5, 4], [5, 6])
    assert early.kind == "continue" and not early.stop and set(early.arms) == {0, 1}
    assert 0 < early.more_ratings < float("inf")
    # Equal and well measured: "as good as each other", never a crowned winner.
    tie = verdict([9000, 9000, 100], [9000, 9000, 900])
    assert tie.kind == "tie" and set(tie.arms) == {0, 1}
    assert verdict([], []).kind == "none"
    assert verdict([0, 0], [0, 0]).kind == "none"
    assert verdict([3], [1]).kind == "best"


def test_verdict_does_not_depend_on_arm_order():
    s, f = np.array([30, 50, 49, 5]), np.array([70, 50, 51, 95])
    base = verdict(s, f)
    perm = [2, 0, 3, 1]
    other = verdict(s[perm], f[perm])
    assert base.kind == other.kind
    assert {perm[a] for a in other.arms} == set(base.arms)


def test_more_ratings_estimate_is_reached_when_the_rates_hold():
    s, f = np.array([30.0, 20.0, 10.0]), np.array([30.0, 40.0, 50.0])
    v = verdict(s, f)
    assert v.kind == "continue" and np.isfinite(v.more_ratings)
    grow = 1 + v.more_ratings / (s + f).sum()
    assert verdict(s * grow * 1.01, f * grow * 1.01).stop
    assert not verdict(s * grow * 0.9, f * grow * 0.9).stop


def test_batch_verdict_equals_per_run_verdicts():
    rng = np.random.default_rng(4)
    s = rng.integers(0, 200, size=(60, 4)).astype(float)
    f = rng.integers(0, 200, size=(60, 4)).astype(float)
    b = batch_verdict(s, f)
    codes = {"none": 0, "continue": 1, "best": 2, "tie": 3}
    for r in range(60):
        one = verdict(s[r], f[r])
        assert codes[one.kind] == b.kind[r] and one.leader == b.leader[r]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="confidence"):
        verdict([1, 2], [2, 1], confidence=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        verdict([1, 2], [2, 1], epsilon=-0.1)


def _run(p, policy, runs, budget, seed):
    rng = np.random.default_rng(seed)
    s = np.zeros((runs, len(p)))
    f = np.zeros((runs, len(p)))
    kind = np.ones(runs, dtype=int)
    group = np.zeros((runs, len(p)), dtype=bool)
    alive = np.arange(runs)
    for _ in range(budget // 8):
        if policy == "uniform":
            picks = uniform_arms_batch(s[alive] + f[alive], 8, rng)
        else:
            picks = top_two_glr_arms(1 + s[alive], 1 + f[alive], s[alive], f[alive], 8, rng, "ids")
        for j in range(8):
            arm = picks[:, j]
            liked = rng.random(alive.size) < p[arm]
            s[alive, arm] += liked
            f[alive, arm] += ~liked
            v = batch_verdict(s[alive], f[alive])
            done = v.kind >= 2
            kind[alive[done]], group[alive[done]] = v.kind[done], v.group[done]
            alive, picks = alive[~done], picks[~done]
    return kind, group


@pytest.mark.parametrize("policy", ["t3c", "uniform"])
def test_verdicts_come_and_rarely_name_a_worse_arm(policy):
    """Leaders 0.2 apart: most runs reach a verdict within 1,200 ratings, and at 95 % it names the best arm."""
    p = np.array([0.65, 0.45, 0.3])
    kind, group = _run(p, policy, 300, 1200, 11)
    assert (kind >= 2).mean() >= 0.8
    wrong = (kind >= 2) & group[:, 1:].any(axis=1)
    assert wrong.mean() <= 0.05


def test_exact_tie_is_never_crowned_often():
    p = np.array([0.4, 0.4, 0.4])
    kind, _ = _run(p, "t3c", 300, 800, 12)
    assert (kind == 2).mean() <= 0.05


def test_t3c_explores_unrated_arms_and_favours_leader_and_challenger():
    rng = np.random.default_rng(0)
    s = np.array([[0.0, 0.0, 0.0]])
    picks = top_two_glr_arms(1 + s, 1 + s, s, s, 8, rng, "ids")
    assert set(picks[0].tolist()) == {0, 1, 2}  # planned images count within the round: all arms get one
    # An unrated arm is played even when the rated one has evidence (IDS alone would never play it).
    s, f = np.array([[0.0, 0.0]]), np.array([[0.0, 39.0]])
    assert 0 in top_two_glr_arms(1 + s, 1 + f, s, f, 8, rng, "ids")[0]
    s = np.array([[60.0, 40.0, 5.0]])
    f = np.array([[40.0, 60.0, 95.0]])
    picks = top_two_glr_arms(1 + s, 1 + f, s, f, 4000, rng, 0.5)
    share = np.bincount(picks[0], minlength=3) / 4000
    assert share[0] == pytest.approx(0.5, abs=0.03) and share[1] > 0.4 and share[2] < 0.05
