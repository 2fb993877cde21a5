"""Policies: statistical checks with fixed seeds."""

import numpy as np
import pytest

from lib_ext.bandit.policy import (
    SEED_LIMIT,
    ArmBelief,
    PolicyArm,
    draw_seeds,
    plan_round,
    thompson_arms,
    top_two_arms,
    uniform_arms,
)
from lib_ext.bandit.posterior import p_best
from lib_ext.bandit.templates import SlotModel, parse_template


def test_batched_thompson_allocates_in_proportion_to_p_best():
    alphas, betas = [12, 9, 3], [8, 11, 17]
    rng = np.random.default_rng(0)
    picks = thompson_arms(alphas, betas, 40_000, rng)
    frac = np.bincount(picks, minlength=3) / len(picks)
    np.testing.assert_allclose(frac, p_best(alphas, betas, np.random.default_rng(1), 200_000), atol=0.01)


def test_top_two_plays_leader_half_the_time_when_it_is_certain():
    # Leader certain: β = ½ of draws go to it, the rest to the runner-up (not to the hopeless third arm).
    rng = np.random.default_rng(0)
    picks = top_two_arms([900, 500, 10], [100, 500, 990], 4000, rng)
    frac = np.bincount(picks, minlength=3) / 4000
    assert frac[0] == pytest.approx(0.5, abs=0.03)
    assert frac[1] == pytest.approx(0.5, abs=0.03)
    assert frac[2] == 0.0


def test_top_two_spreads_more_than_thompson_between_close_leaders():
    alphas, betas = [60, 52, 5], [40, 48, 95]
    ts = np.bincount(thompson_arms(alphas, betas, 4000, np.random.default_rng(0)), minlength=3) / 4000
    tt = np.bincount(top_two_arms(alphas, betas, 4000, np.random.default_rng(0)), minlength=3) / 4000
    assert tt[1] > ts[1] + 0.1  # the challenger gets measured
    assert abs(tt[0] - tt[1]) < abs(ts[0] - ts[1])


def test_uniform_sweep_balances_and_catches_up():
    rng = np.random.default_rng(0)
    assert sorted(np.bincount(uniform_arms([0, 0, 0], 9, rng), minlength=3)) == [3, 3, 3]
    # A newly added arm (0 images) is filled first.
    picks = uniform_arms([5, 5, 0], 5, rng)
    assert list(np.bincount(picks, minlength=3)) == [0, 0, 5]


def test_seeds_are_uniform_over_32_bits():
    seeds = np.asarray(draw_seeds(np.random.default_rng(0), 20_000), dtype=np.float64)
    assert seeds.min() >= 0 and seeds.max() < SEED_LIMIT
    assert seeds.max() > 2**31  # the upper half is reachable
    hist = np.histogram(seeds, bins=16, range=(0, SEED_LIMIT))[0]
    chi2 = ((hist - 1250) ** 2 / 1250).sum()
    assert chi2 < 37.7  # χ²(15) 0.999 quantile


def test_plan_round_shared_seeds_pairs_arms():
    stats = {1: ArmBelief(5, 5), 2: ArmBelief(5, 5), 3: ArmBelief(5, 5)}
    plan = plan_round([1, 2, 3], stats, 12, "uniform", np.random.default_rng(0), shared_seeds=True)
    assert len(plan) == 12
    by_arm = {a: [p.seed for p in plan if p.arm_id == a] for a in (1, 2, 3)}
    assert by_arm[1] == by_arm[2] == by_arm[3]
    assert len(set(by_arm[1])) == 4
    # Ordered seed by seed: a fixed-seed series.
    assert [p.seed for p in plan[:3]] == [by_arm[1][0]] * 3
    # Without sharing, seeds differ.
    plan2 = plan_round([1, 2, 3], stats, 12, "uniform", np.random.default_rng(0))
    assert len({p.seed for p in plan2}) == 12


def test_plan_round_is_reproducible_and_follows_the_posterior():
    stats = {1: ArmBelief(40, 10), 2: ArmBelief(10, 40)}
    a = plan_round([1, 2], stats, 50, "more_good", np.random.default_rng(7))
    b = plan_round([1, 2], stats, 50, "more_good", np.random.default_rng(7))
    assert a == b
    assert sum(p.arm_id == 1 for p in a) >= 48


def test_plan_round_template_arms_get_slot_choices():
    t = parse_template("{a|b|c} {x|y}")
    model = SlotModel(t).fit([(2, 0)] * 30 + [(0, 1)] * 30, [True] * 30 + [False] * 30)
    plan = plan_round([PolicyArm(9, model)], {}, 20, "more_good", np.random.default_rng(0))
    assert all(len(p.slot_choices) == 2 for p in plan)
    assert sum(p.slot_choices == (2, 0) for p in plan) >= 15


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"arms": []}, "no active arms"), ({"k": 0}, "positive integer"), ({"mode": "greedy"}, "mode must be")],
)
def test_plan_round_validation(kwargs, match):
    args = {"arms": [1], "stats": {}, "k": 2, "mode": "more_good", "rng": np.random.default_rng(0)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        plan_round(**args)


def test_thompson_collects_more_likes_than_uniform_in_simulation():
    # A short statistical check of the bench's claim with fixed seeds.
    p = np.array([0.6, 0.4, 0.1, 0.2, 0.3])
    ratio = []
    for rep in range(30):
        rng = np.random.default_rng(rep)
        got = {}
        for mode in ("more_good", "uniform"):
            s = np.zeros(5)
            f = np.zeros(5)
            n_img = np.zeros(5, dtype=int)
            for _ in range(30):
                stats = {i: ArmBelief(1 + s[i], 1 + f[i], int(n_img[i])) for i in range(5)}
                for img in plan_round(list(range(5)), stats, 4, mode, rng):
                    liked = rng.random() < p[img.arm_id]
                    s[img.arm_id] += liked
                    f[img.arm_id] += not liked
                    n_img[img.arm_id] += 1
            got[mode] = s.sum()
        ratio.append(got["more_good"] / got["uniform"])
    assert np.mean(ratio) > 1.25
