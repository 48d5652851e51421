"""ctc/stats.py: bootstrap resamples, percentile intervals, curve envelopes, BD-rate and the
near-lossless rate R_NL."""

import math

import numpy as np
import pytest

from ctc.stats import (UNCOMPRESSED_BITS_PER_POINT, Bootstrap, NearLossless, bd_rate, envelope, interval,
                       near_lossless_rate)

pytest.importorskip("bjontegaard")      # imported once at collection (scipy: ~1 s), not inside a test

RATES = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
QUALITIES = np.array([40.0, 55.0, 63.0, 68.0, 70.0])


# ---------------------------------------------------------------- BD-rate

def test_bd_rate_of_a_curve_against_itself_is_zero():
    assert bd_rate(RATES, QUALITIES, RATES, QUALITIES) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_half_the_rate_at_every_quality_is_minus_50_percent():
    assert bd_rate(RATES, QUALITIES, RATES / 2, QUALITIES) == pytest.approx(-50.0, abs=1e-6)


def test_bd_rate_double_the_rate_is_plus_100_percent():
    assert bd_rate(RATES, QUALITIES, RATES * 2, QUALITIES) == pytest.approx(100.0, abs=1e-6)


def test_bd_rate_is_antisymmetric_in_log_rate():
    forward = bd_rate(RATES, QUALITIES, RATES * 1.3, QUALITIES + 0.5)
    backward = bd_rate(RATES * 1.3, QUALITIES + 0.5, RATES, QUALITIES)
    # (1 + a)(1 + b) = 1 when the same log-rate gap is integrated over the same quality range
    assert (1 + forward / 100) * (1 + backward / 100) == pytest.approx(1.0, abs=1e-6)
    assert forward > 0 > backward


def test_bd_rate_does_not_depend_on_the_order_of_the_points():
    order = np.array([3, 0, 4, 2, 1])
    expected = bd_rate(RATES, QUALITIES, RATES * 0.8, QUALITIES)
    assert bd_rate(RATES[order], QUALITIES[order], RATES[order[::-1]] * 0.8, QUALITIES[order[::-1]]) \
        == pytest.approx(expected, abs=1e-9)


def test_bd_rate_better_quality_at_same_rate_is_negative():
    assert bd_rate(RATES, QUALITIES, RATES, QUALITIES + 1.0) < 0


def test_bd_rate_without_quality_overlap_is_nan():
    assert math.isnan(bd_rate(RATES, QUALITIES, RATES, QUALITIES + 100.0))
    # touching ranges (one common quality only) do not overlap either
    assert math.isnan(bd_rate([1, 2], [30, 35], [3, 4], [35, 36]))


@pytest.mark.parametrize("test_rates, test_qualities", [
    ([1.0], [60.0]),                        # one point
    ([1.0, 2.0, 4.0], [60.0, 60.0, 59.0]),  # flat / falling: envelope keeps one point
])
def test_bd_rate_with_fewer_than_two_envelope_points_is_nan(test_rates, test_qualities):
    assert math.isnan(bd_rate(RATES, QUALITIES, test_rates, test_qualities))
    assert math.isnan(bd_rate(test_rates, test_qualities, RATES, QUALITIES))


def test_bd_rate_with_a_non_positive_rate_is_nan():
    assert math.isnan(bd_rate(RATES, QUALITIES, [0.0, 1.0, 2.0], [40.0, 55.0, 63.0]))


def test_bd_rate_ignores_dominated_points():
    # an extra dominated point (more bits, lower quality) does not change the BD-rate
    noisy_rates = np.append(RATES, 3.0)
    noisy_qualities = np.append(QUALITIES, 50.0)
    assert bd_rate(RATES, QUALITIES, noisy_rates / 2, noisy_qualities) == pytest.approx(-50.0, abs=1e-6)


# ---------------------------------------------------------------- envelope

def test_envelope_drops_dominated_points():
    assert envelope([1, 2, 3, 4], [50, 60, 55, 70]) == [0, 1, 3]


def test_envelope_orders_by_rate_and_drops_plateaus():
    assert envelope([4, 3, 2, 1], [70, 55, 60, 50]) == [3, 2, 0]
    assert envelope([1, 2, 3], [50, 50, 50]) == [0]         # equal quality is not better
    assert envelope([1, 2, 3], [70, 60, 50]) == [0]


# ---------------------------------------------------------------- near-lossless rate

def test_near_lossless_interpolates_log_rate_between_last_pass_and_first_fail():
    rates = [1.0, 2.0, 4.0, 8.0]
    qualities = [80.0, 90.0, 96.0, 99.5]
    q0, drop = 100.0, 0.01
    threshold = (1 - drop) * q0                             # 99
    # from the top: 8 passes (99.5 > 99), 4 fails (96): R_NL between them
    t = (threshold - 96.0) / (99.5 - 96.0)
    expected = math.exp(math.log(4.0) + t * (math.log(8.0) - math.log(4.0)))
    result = near_lossless_rate(rates, qualities, q0, drop)
    assert result.censored == ""
    assert result.rate == pytest.approx(expected, rel=1e-12)
    assert 4.0 < result.rate < 8.0
    assert result.compression_ratio == pytest.approx(32.0 / expected)


def test_near_lossless_input_order_does_not_matter():
    rates = [8.0, 1.0, 4.0, 2.0]
    qualities = [99.5, 80.0, 96.0, 90.0]
    assert near_lossless_rate(rates, qualities, 100.0, 0.01) == near_lossless_rate(
        sorted(rates), sorted(qualities), 100.0, 0.01)


def test_near_lossless_walks_down_from_the_top_and_stops_at_the_first_failure():
    # 2.0 passes again below the failing 4.0, but the walk stops at 4.0
    rates = [1.0, 2.0, 4.0, 8.0]
    qualities = [80.0, 99.8, 95.0, 99.5]
    t = (99.0 - 95.0) / (99.5 - 95.0)
    expected = 4.0 * 2.0 ** t
    result = near_lossless_rate(rates, qualities, 100.0, 0.01)
    assert result.censored == "" and result.rate == pytest.approx(expected, rel=1e-12)


def test_near_lossless_all_points_pass_is_censored_at_the_lowest_rate():
    result = near_lossless_rate([1.0, 2.0, 4.0], [99.5, 99.7, 99.9], 100.0, 0.01)
    assert result == NearLossless(1.0, "<=")
    assert result.text().endswith(" 1") and result.text()[0] in "≤<"    # "≤ 1" (or "<= 1")


def test_near_lossless_highest_rate_fails_is_censored_above_it():
    result = near_lossless_rate([1.0, 2.0, 4.0], [80.0, 90.0, 98.0], 100.0, 0.01)
    assert result == NearLossless(4.0, ">")
    assert result.text() == "> 4"


def test_near_lossless_threshold_is_strict():
    q0, drop = 80.0, 0.25
    threshold = (1 - drop) * q0                             # exactly 60.0
    assert threshold == 60.0
    # the top point sits exactly on the threshold: a failure
    assert near_lossless_rate([1.0, 2.0], [50.0, threshold], q0, drop) == NearLossless(2.0, ">")
    # the lowest point exactly on the threshold fails too: R_NL is interpolated, reaching 1.0 (t = 0)
    result = near_lossless_rate([1.0, 2.0], [threshold, 70.0], q0, drop)
    assert result.censored == "" and result.rate == pytest.approx(1.0, rel=1e-12)
    # just above the threshold passes
    assert near_lossless_rate([1.0, 2.0], [threshold + 1e-9, 70.0], q0, drop).censored == "<="


def test_compression_ratio_is_32_over_rate():
    assert UNCOMPRESSED_BITS_PER_POINT == 32.0
    assert NearLossless(0.5, "").compression_ratio == pytest.approx(64.0)
    assert NearLossless(4.0, ">").compression_ratio == pytest.approx(8.0)


def test_near_lossless_text_digits():
    assert NearLossless(1.23456789, "").text() == "1.235"
    assert NearLossless(1.23456789, ">").text(2) == "> 1.2"
    upper = NearLossless(1.23456789, "<=").text(2)
    assert upper.endswith(" 1.2") and upper[0] in "≤<"


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_shapes_and_index_range():
    boot = Bootstrap(7, 50, seed=3)
    assert boot.indices.shape == (50, 7)
    assert boot.indices.min() >= 0 and boot.indices.max() < 7
    values = np.arange(7, dtype=float)
    assert boot.means(values).shape == (50,)
    assert boot.ratios(values, np.ones(7)).shape == (50,)


def test_bootstrap_means_and_ratios_follow_the_indices():
    boot = Bootstrap(5, 20, seed=1)
    values = np.array([1.0, 10.0, 100.0, 1000.0, 10000.0])
    den = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    for r in range(20):
        rows = boot.indices[r]
        assert boot.means(values)[r] == pytest.approx(values[rows].mean())
        assert boot.ratios(values, den)[r] == pytest.approx(values[rows].sum() / den[rows].sum())


def test_bootstrap_of_a_constant_vector_is_constant():
    boot = Bootstrap(10, 100, seed=0)
    assert np.all(boot.means(np.full(10, 3.5)) == 3.5)
    assert np.allclose(boot.ratios(np.full(10, 6.0), np.full(10, 2.0)), 3.0)


def test_bootstrap_ratio_is_not_mean_of_ratios():
    # sum(num) / sum(den), not mean(num / den)
    boot = Bootstrap(2, 1, seed=0)
    boot.indices = np.array([[0, 1]])
    assert boot.ratios([1.0, 9.0], [1.0, 3.0])[0] == pytest.approx(10.0 / 4.0)


def test_bootstrap_seeds_are_reproducible():
    assert np.array_equal(Bootstrap(12, 30, seed=5).indices, Bootstrap(12, 30, seed=5).indices)
    assert not np.array_equal(Bootstrap(12, 30, seed=5).indices, Bootstrap(12, 30, seed=6).indices)


def test_bootstrap_without_resamples_has_no_indices():
    assert Bootstrap(4, 0).indices is None


# ---------------------------------------------------------------- interval

def test_interval_is_the_95_percent_percentile_interval():
    samples = np.arange(1001, dtype=float)                  # 0..1000
    low, high = interval(samples)
    assert low == pytest.approx(25.0) and high == pytest.approx(975.0)


def test_interval_ignores_nan():
    samples = np.concatenate([np.arange(1001, dtype=float), np.full(300, np.nan)])
    assert interval(samples) == pytest.approx((25.0, 975.0))


def test_interval_with_more_than_half_nan_is_nan():
    samples = np.concatenate([np.arange(10, dtype=float), np.full(11, np.nan)])
    low, high = interval(samples)
    assert math.isnan(low) and math.isnan(high)


def test_interval_of_nothing_is_nan():
    assert all(math.isnan(v) for v in interval([]))
    assert all(math.isnan(v) for v in interval([np.nan, np.inf, -np.inf]))


def test_interval_of_constant_samples_is_a_point():
    assert interval(np.full(50, 2.5)) == (2.5, 2.5)


def test_bd_overlap_is_the_quality_interval_both_envelopes_cover():
    from ctc.stats import bd_overlap

    anchor = ([1.0, 2.0, 4.0, 8.0], [60.0, 70.0, 65.0, 90.0])       # 65 is dominated: envelope 60, 70, 90
    test = ([0.5, 1.0, 2.0], [50.0, 75.0, 80.0])
    assert bd_overlap(*anchor, *test) == (60.0, 80.0)
    assert bd_overlap(*anchor, [1.0, 2.0], [91.0, 95.0]) is None     # disjoint
    assert bd_overlap(*anchor, [1.0, 2.0], [50.0, 50.0]) is None     # one envelope point
