"""Small statistics for the experiments: Student-t confidence intervals and percentiles.

The Student-t distribution comes from scipy.stats; this module only adds the experiment's conventions
(NaN samples dropped, no zero-width interval from a single run).
"""
from __future__ import annotations

import math
from typing import Iterable, NamedTuple

import numpy as np
from scipy import stats as _scipy_stats


class Interval(NamedTuple):
    n: int
    mean: float
    low: float
    high: float
    half_width: float


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    return float(_scipy_stats.t.cdf(t, df))


def t_quantile(p: float, df: float) -> float:
    """The t value with P(T <= t) = p."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be between 0 and 1, not {p!r}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, not {df!r}")
    return float(_scipy_stats.t.ppf(p, df))


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def confidence_interval(values: Iterable[float], level: float = 0.95) -> Interval:
    """Two-sided Student-t interval for the mean of ``values`` (NaN dropped). One value: a zero-width
    interval is not honest, so low/high/half_width are NaN; no value: everything NaN."""
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(xs) / n
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(n, mean, mean - half, mean + half, half)


def percentile(values: Iterable[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in 0..100; NaN for no values."""
    xs = _finite(values)
    if not xs:
        return math.nan
    return float(np.percentile(xs, q))
