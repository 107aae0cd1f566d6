"""experiments/stats.py: Student-t quantiles against printed tables, confidence intervals, percentiles."""
import math
import random

import numpy as np
import pytest

from experiments.stats import confidence_interval, percentile, t_cdf, t_quantile


@pytest.mark.parametrize("df, p, expected", [   # two-sided 95 %, 99 % and one-sided 90 % table values
    (1, 0.975, 12.706), (2, 0.975, 4.303), (4, 0.975, 2.776), (9, 0.975, 2.262), (29, 0.975, 2.045),
    (2, 0.995, 9.925), (10, 0.9, 1.372), (120, 0.975, 1.980)])
def test_t_quantile_matches_tables(df, p, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=5e-4)


def test_t_cdf_is_symmetric_and_tends_to_the_normal():
    assert t_cdf(0.0, 3) == pytest.approx(0.5)
    assert t_cdf(1.5, 7) + t_cdf(-1.5, 7) == pytest.approx(1.0)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.95996, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_confidence_interval_of_three_values():
    ci = confidence_interval([10.0, 12.0, 14.0])
    # mean 12, sd 2, t(0.975, 2) = 4.3027: half width 4.3027 * 2 / sqrt(3)
    assert ci.n == 3 and ci.mean == pytest.approx(12.0)
    assert ci.half_width == pytest.approx(4.30265 * 2 / math.sqrt(3), rel=1e-4)
    assert (ci.low, ci.high) == pytest.approx((12.0 - ci.half_width, 12.0 + ci.half_width))


def test_confidence_interval_covers_the_mean_about_95_percent_of_the_time():
    rng = random.Random(7)
    trials, hits = 2000, 0
    for _ in range(trials):
        ci = confidence_interval([rng.gauss(5.0, 2.0) for _ in range(3)])
        hits += ci.low <= 5.0 <= ci.high
    assert 0.93 <= hits / trials <= 0.97


def test_degenerate_intervals_are_nan_not_zero_width():
    one = confidence_interval([3.0])
    assert one.n == 1 and one.mean == 3.0 and math.isnan(one.half_width)
    none = confidence_interval([math.nan])
    assert none.n == 0 and math.isnan(none.mean)


def test_percentile_agrees_with_numpy():
    values = [5.0, 1.0, 3.0, 9.0, 7.5]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert math.isnan(percentile([], 50))
