"""The seed_bandit bench's stopping check: the cheap screen never skips a check the Monte Carlo rule would stop
on, and a run stops after the rating that made P(best) reach 0.95 (not at the end of its round)."""

import numpy as np

from bench.seed_bandit import P_BEST_THRESHOLD, _identify_run, _may_stop
from lib_ext.bandit.posterior import p_best


def test_screen_never_hides_a_stop():
    rng = np.random.default_rng(0)
    stops = skipped = 0
    for _ in range(500):
        k = int(rng.integers(2, 11))
        n = rng.integers(1, 60, size=k)
        liked = rng.binomial(n, rng.random(k))
        a = liked + 0.5 + 3 * rng.random(k)
        b = n - liked + 0.5 + 3 * rng.random(k)
        screen = _may_stop(a, b, P_BEST_THRESHOLD)
        skipped += not screen
        if p_best(a, b, rng, 2000).max() >= P_BEST_THRESHOLD:
            stops += 1
            assert screen, (a, b)
    assert stops > 60 and skipped > 150  # both kinds of case occur, and the screen saves work


def test_identify_run_stops_mid_round():
    # a certain winner: the rule fires within the first rounds, at any rating, not only at multiples of k
    ends = {_identify_run(np.array([0.95, 0.05, 0.05]), "uniform", 8, 400, 1000, np.random.default_rng(i))[0]
            for i in range(12)}  # fmt: skip
    assert any(n % 8 for n in ends)
