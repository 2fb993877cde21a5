"""The bench's reference computations (the bench itself runs with `python -m bench seed_bandit --quick`)."""

import numpy as np
import pytest

from bench.seed_bandit import SCENARIOS, _likes_run, asymptotic_ratios


def test_scenarios_have_the_stories_they_claim():
    casual, picky = SCENARIOS[0].p, SCENARIOS[1].p
    assert casual.argmax() == 0  # A reliable wins for a casual rater
    assert picky.argmax() == 4  # E high-variance wins for a picky rater
    assert casual[2] == casual.min() and picky[2] == picky.min()  # C bad for both


def test_asymptotic_ratio_bounds():
    # Two arms: uniform is (nearly) optimal.
    assert asymptotic_ratios(np.array([0.5, 0.4]))["optimal"] == pytest.approx(1.0, abs=0.02)
    # Many hopeless arms: the optimal allocation ignores them, ratio → about 2/K.
    r = asymptotic_ratios(np.array([0.6, 0.4] + [0.01] * 8))
    assert r["optimal"] < 0.35 and r["optimal"] <= r["beta_half"] + 1e-9


def test_thompson_beats_uniform_in_a_short_run():
    p = SCENARIOS[0].p
    ts = np.mean([_likes_run(p, "more_good", 120, 8, np.random.default_rng(i)) for i in range(15)])
    un = np.mean([_likes_run(p, "uniform", 120, 8, np.random.default_rng(i)) for i in range(15)])
    assert ts > 1.2 * un
