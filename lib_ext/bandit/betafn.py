"""Beta distribution functions without scipy: regularised incomplete beta, quantile, log-density.

The incomplete beta uses the Lentz continued fraction (Numerical Recipes §6.4), switched to the symmetric
form I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction converges slowly. The quantile is a bracketed Newton
iteration on it, falling back to bisection, so it cannot diverge for the tiny or huge (discounted, fractional)
shape parameters a bandit produces.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 500


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for I_x(a, b) (modified Lentz); converges fast for x < (a + 1) / (a + b + 2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = _TINY if abs(d) < _TINY else d
    d = 1.0 / d
    h = d
    for m in range(1, _MAX_ITER + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    return h  # not converged within _MAX_ITER: only for extreme shapes (a, b ≫ 1e5); the error is still small


def _check_shape(a: float, b: float) -> None:
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"Beta shape parameters must be finite and > 0, got a={a!r}, b={b!r}")


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) = P(X ≤ x) for X ~ Beta(a, b)."""
    _check_shape(a, b)
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def beta_ppf(p: float, a: float, b: float, tol: float = 1e-12) -> float:
    """Quantile of Beta(a, b): the x with I_x(a, b) = p.

    Newton steps on I_x − p (the derivative is the density) inside a shrinking bracket [lo, hi]; a step that
    leaves the bracket is replaced by bisection, so it always converges (≈5–10 evaluations instead of ≈45).
    """
    _check_shape(a, b)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p!r}")
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    if betainc(a, b, 0.5) < p:  # the answer is above ½: solve for 1 − x, which has the precision near 1
        return 1.0 - _ppf_low(1.0 - p, b, a, tol)
    return _ppf_low(p, a, b, tol)


def _ppf_low(p: float, a: float, b: float, tol: float) -> float:
    lo, hi = 0.0, 1.0
    x = min(max(a / (a + b), 1e-3), 1 - 1e-3)
    log_b = _log_beta(a, b)
    for _ in range(400):
        err = betainc(a, b, x) - p
        if err == 0.0:
            return x
        if err < 0:
            lo = x
        else:
            hi = x
        log_pdf = (a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x) - log_b
        step = err / math.exp(log_pdf) if log_pdf > -700 else math.inf
        new = x - step
        if not lo < new < hi:
            # Bisection; geometric while the bracket spans decades (a ≪ 1 puts low quantiles near 1e-100).
            new = hi * 1e-4 if lo == 0.0 else (math.sqrt(lo * hi) if hi > 4 * lo else 0.5 * (lo + hi))
        if abs(new - x) <= tol * new or hi - lo <= tol * hi:
            return new
        x = new
    return x


def beta_logpdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """log density of Beta(a, b) at x (vectorised; −inf outside (0, 1) and where the density is 0)."""
    _check_shape(a, b)
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, -np.inf)
    inside = (x > 0) & (x < 1)
    xi = x[inside]
    out[inside] = (a - 1.0) * np.log(xi) + (b - 1.0) * np.log1p(-xi) - _log_beta(a, b)
    return out


def beta_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """Density of Beta(a, b) at x (vectorised), e.g. for the posterior density plot."""
    return np.exp(beta_logpdf(x, a, b))
