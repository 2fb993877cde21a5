"""The seed_bandit bench's find-best simulation: runs end at the rating that brought the verdict (not at the end
of their round), and the wrong-verdict count flags exactly the verdicts naming an arm more than ε worse than the
best."""

import numpy as np

from bench.seed_bandit_find_best import Runs, simulate, wrong


def test_runs_stop_mid_round():
    r = simulate(np.array([0.95, 0.05, 0.05]), "uniform", 40, 400, 0)
    assert (r.kind == 2).all() and any(n % 8 for n in r.ratings)
    assert (r.group[:, 0]).all() and not r.group[:, 1:].any()


def test_wrong_counts_only_arms_beyond_epsilon():
    p = np.array([0.5, 0.48, 0.3])
    group = np.array([[True, False, False], [False, True, False], [True, True, False], [False, False, True]])
    runs = Runs(np.full(4, 10), np.array([2, 2, 3, 2]), group, np.zeros((0, 2)))
    assert wrong(runs, p).tolist() == [False, False, False, True]
    still = Runs(np.full(4, 10), np.ones(4, dtype=int), group, np.zeros((0, 2)))
    assert not wrong(still, p).any()  # no verdict, nothing wrong
