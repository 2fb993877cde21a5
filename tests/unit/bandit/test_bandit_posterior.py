"""Posterior maths: incomplete beta / quantile against closed forms and an independent binomial identity."""

import math

import numpy as np
import pytest

from lib_ext.bandit.betafn import beta_pdf, beta_ppf, betainc
from lib_ext.bandit.posterior import (
    ArmCounts,
    Observation,
    Prior,
    count_arms,
    discount_factor,
    empirical_bayes_prior,
    empirical_bayes_prior_batch,
    p_best,
    posterior,
    summarize,
)


@pytest.mark.parametrize("b", [0.3, 1.0, 2.5, 17.0, 400.0])
@pytest.mark.parametrize("x", [1e-6, 0.01, 0.3, 0.5, 0.77, 0.999])
def test_betainc_beta_1_b_closed_form(b, x):
    # Beta(1, b): CDF 1 − (1 − x)^b ; Beta(a, 1): CDF x^a
    assert betainc(1.0, b, x) == pytest.approx(1 - (1 - x) ** b, rel=1e-10, abs=1e-14)
    assert betainc(b, 1.0, x) == pytest.approx(x**b, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize(("a", "b"), [(3, 4), (1, 9), (12, 2), (30, 70), (5, 5)])
@pytest.mark.parametrize("x", [0.05, 0.2, 0.5, 0.61, 0.95])
def test_betainc_integer_binomial_identity(a, b, x):
    # For integers, I_x(a, b) = P(Binomial(a + b − 1, x) ≥ a): an identity independent of the continued fraction.
    n = a + b - 1
    tail = sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))
    assert betainc(a, b, x) == pytest.approx(tail, rel=1e-9, abs=1e-13)


@pytest.mark.parametrize(("a", "b"), [(0.4, 0.7), (2.3, 5.1), (55.5, 12.25)])
def test_betainc_matches_numerical_integral_of_pdf(a, b):
    # Fractional (discounted) shapes: compare against a fine Simpson integral of the density on [0.2, 0.8].
    xs = np.linspace(0.2, 0.8, 20001)
    ys = beta_pdf(xs, a, b)
    h = xs[1] - xs[0]
    simpson = h / 3 * (ys[0] + ys[-1] + 4 * ys[1:-1:2].sum() + 2 * ys[2:-1:2].sum())
    assert betainc(a, b, 0.8) - betainc(a, b, 0.2) == pytest.approx(simpson, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("a", [0.5, 1.0, 3.0, 40.0, 1000.0])
def test_symmetric_beta_median_and_symmetry(a):
    assert beta_ppf(0.5, a, a) == pytest.approx(0.5, abs=1e-10)
    for p in (0.025, 0.2):
        assert beta_ppf(p, a, a) == pytest.approx(1 - beta_ppf(1 - p, a, a), abs=1e-10)
    assert betainc(a, a, 0.3) == pytest.approx(1 - betainc(a, a, 0.7), abs=1e-12)


@pytest.mark.parametrize("b", [0.5, 1.0, 4.0, 250.0])
@pytest.mark.parametrize("p", [0.001, 0.025, 0.5, 0.975, 0.999])
def test_beta_ppf_closed_forms(b, p):
    assert beta_ppf(p, 1.0, b) == pytest.approx(1 - (1 - p) ** (1 / b), abs=1e-10)
    assert beta_ppf(p, b, 1.0) == pytest.approx(p ** (1 / b), abs=1e-10)


def test_beta_ppf_inverts_betainc_for_fractional_shapes():
    for a, b in [(0.2, 0.3), (1.7, 38.2), (810.4, 190.6), (3.3, 0.9), (0.01, 5.0), (4e4, 1e4), (5.0, 0.2)]:
        for p in (0.025, 0.3, 0.975):
            assert betainc(a, b, beta_ppf(p, a, b)) == pytest.approx(p, rel=1e-9)


def test_mpmath_reference_if_available():
    mpmath = pytest.importorskip("mpmath")
    for a, b, x in [(2.5, 7.25, 0.21), (120.5, 33.3, 0.8), (0.3, 0.3, 0.05)]:
        ref = float(mpmath.betainc(a, b, 0, x, regularized=True))
        assert betainc(a, b, x) == pytest.approx(ref, rel=1e-10)


def test_invalid_shapes_rejected():
    with pytest.raises(ValueError, match="shape"):
        betainc(0.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="probability"):
        beta_ppf(1.5, 1.0, 1.0)


def test_discount_is_half_per_half_life_and_counts_are_discounted():
    assert discount_factor(3600.0, 3600.0) == pytest.approx(0.5)
    assert discount_factor(7200.0, 3600.0) == pytest.approx(0.25)
    assert discount_factor(-5.0, 3600.0) == 1.0
    assert discount_factor(1e9, None) == 1.0
    obs = [Observation(1, True, 0.0), Observation(1, False, 3600.0), Observation(2, True, 7200.0)]
    c = count_arms(obs, [1, 2, 3], now=7200.0, half_life_seconds=3600.0)
    assert c[1] == ArmCounts(likes=1, dislikes=1, successes=0.25, failures=0.5)
    assert c[2].successes == pytest.approx(1.0)
    assert c[3] == ArmCounts()
    plain = count_arms(obs, [1], now=7200.0)
    assert (plain[1].successes, plain[1].failures) == (1.0, 1.0)


def test_discounted_counts_equal_the_recursive_update():
    # S̃ ← γ S̃ + r applied event by event equals the closed-form weighted sum.
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 10_000, 50))
    liked = rng.random(50) < 0.4
    h = 1500.0
    s = f = 0.0
    last = times[0]
    for t, r in zip(times, liked):
        g = 2 ** (-(t - last) / h)
        s, f, last = g * s + r, g * f + (1 - r), t
    c = count_arms([Observation(0, bool(r), float(t)) for t, r in zip(times, liked)], [0], float(times[-1]), h)
    assert c[0].successes == pytest.approx(s)
    assert c[0].failures == pytest.approx(f)


def test_empirical_bayes_prior_moment_matching_and_cap():
    # Heterogeneous arms with plenty of data: κ = m(1−m)/v − 1 from the noise-corrected variance.
    counts = [ArmCounts(successes=50 * p, failures=50 * (1 - p)) for p in (0.3, 0.5, 0.7)]
    m, var = 0.5, np.var([0.3, 0.5, 0.7], ddof=1) - 0.25 / 50
    kappa = m * (1 - m) / var - 1
    prior = empirical_bayes_prior(counts)
    assert 2 < kappa < 10
    assert prior.alpha == pytest.approx(m * kappa)
    assert prior.beta == pytest.approx((1 - m) * kappa)
    # Homogeneous arms: κ would be huge; the cap keeps the prior worth ~10 ratings.
    same = [ArmCounts(successes=300, failures=700)] * 4
    p2 = empirical_bayes_prior(same)
    assert p2.alpha + p2.beta == pytest.approx(10.0)
    assert p2.alpha == pytest.approx(3.0)
    # One arm → uniform.
    assert empirical_bayes_prior([ArmCounts(successes=3, failures=1)]) == Prior(1.0, 1.0)


def test_posterior_mean_interval():
    post = posterior(ArmCounts(7, 3, 7.0, 3.0))
    assert post.mean == pytest.approx(8 / 12)
    lo, hi = post.interval()
    assert betainc(8, 4, lo) == pytest.approx(0.025, abs=1e-9)
    assert betainc(8, 4, hi) == pytest.approx(0.975, abs=1e-9)


def test_p_best_two_arms_matches_exact_integer_formula():
    # Exact P(θ_B > θ_A) for integer Beta parameters (Evan Miller's closed form).
    a_a, b_a, a_b, b_b = 5, 9, 12, 8
    exact = sum(
        math.exp(
            math.lgamma(a_a + i)
            + math.lgamma(b_a + b_b)
            + math.lgamma(1 + i + b_b)
            + math.lgamma(a_a + b_a)
            - math.lgamma(a_a + i + b_a + b_b)
            - math.log(b_b + i)
            - math.lgamma(1 + i)
            - math.lgamma(b_b)
            - math.lgamma(a_a)
            - math.lgamma(b_a)
        )
        for i in range(a_b)
    )
    pb = p_best([a_a, a_b], [b_a, b_b], np.random.default_rng(1), draws=200_000)
    assert pb.sum() == pytest.approx(1.0)
    assert pb[1] == pytest.approx(1 - exact, abs=4e-3) or pb[1] == pytest.approx(exact, abs=4e-3)
    # The better-looking arm (12/20 vs 5/14) is the likely best.
    assert pb[1] > 0.9


def test_summarize_excludes_inactive_arms_from_p_best():
    counts = {1: ArmCounts(9, 1, 9.0, 1.0), 2: ArmCounts(2, 8, 2.0, 8.0), 3: ArmCounts(10, 0, 10.0, 0.0)}
    stats = {s.arm_id: s for s in summarize(counts, Prior(), active=[1, 2], rng=np.random.default_rng(0))}
    assert stats[3].p_best is None
    assert stats[1].p_best + stats[2].p_best == pytest.approx(1.0)
    assert stats[1].ci_low < stats[1].mean < stats[1].ci_high
    assert stats[1].n == 10 and stats[1].likes == 9


def _moment_matched(rates, weights, cap=10.0, lo=2.0, floor=0.5):
    """Reference: the documented moment matching written out for one run (no shared code with the library)."""
    if len(rates) < 2:
        return 1.0, 1.0
    m = min(max(sum(rates) / len(rates), 1e-3), 1 - 1e-3)
    mean = sum(rates) / len(rates)
    var = sum((r - mean) ** 2 for r in rates) / (len(rates) - 1) - sum(m * (1 - m) / w for w in weights) / len(rates)
    kappa = cap if var <= 0 else min(max(m * (1 - m) / var - 1, lo), cap)
    return max(m * kappa, floor), max((1 - m) * kappa, floor)


def test_empirical_bayes_prior_batch_matches_moment_matching_per_run():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 30, size=(50, 6)).astype(float)
    f = rng.integers(0, 30, size=(50, 6)).astype(float)
    s[:5, 1:] = f[:5, 1:] = 0  # runs with one rated arm: uniform prior
    a, b = empirical_bayes_prior_batch(s, f)
    for r in range(50):
        used = [(x, x + y) for x, y in zip(s[r], f[r]) if x + y >= 1]
        want = _moment_matched([x / w for x, w in used], [w for _, w in used])
        assert (a[r], b[r]) == pytest.approx(want)
        one = empirical_bayes_prior([ArmCounts(int(x), int(y), x, y) for x, y in zip(s[r], f[r])])
        assert (one.alpha, one.beta) == pytest.approx(want)
    assert (a[:5] == 1).all() and (b[:5] == 1).all()
