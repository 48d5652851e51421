"""Statistics of the CTC report: bootstrap over images, Bjontegaard delta rate, near-lossless rate.

Bootstrap: one fixed set of resamples of the images (seeded), used for every
tool and rate point, so differences between tools are paired. Intervals are
95 % percentile intervals.

BD-rate (Bjontegaard delta rate, %): the `bjontegaard` package with pchip
interpolation of log-rate over quality, as JVET computes it (its CTC
spreadsheet). Overlap rule: each curve is first reduced to its envelope (a point
is kept only when its quality beats every cheaper point of the same curve, so
the curve rises strictly; near-lossless plateaus and noise inversions drop
out); the integral runs over the quality interval both envelopes cover, however
small; with fewer than two envelope points on a curve or no overlap the BD-rate
is undefined (reported as n/a). Negative = fewer bits than the anchor.

Near-lossless rate R_NL (from L-MSFC): the lowest rate whose task drop
relative to the uncompressed quality Q_0 stays below `drop` (1 %), i.e.
quality > (1 - drop) Q_0. Walking the curve from its highest rate down, R_NL
lies between the last point that meets the threshold and the first that
does not, interpolated linearly in log-rate over quality. When even the
lowest rate point meets it, R_NL is at most that rate (reported as "≤ r");
when the highest fails, R_NL is above the tested range ("> r").
CR_NL = R_0 / R_NL with R_0 = 32 bits per feature point (uncompressed float32).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

UNCOMPRESSED_BITS_PER_POINT = 32.0
CONFIDENCE = 95.0


class Bootstrap:
    """Resamples of n images with replacement (row r: the image indices of resample r)."""

    def __init__(self, n, resamples, seed=0):
        self.n = n
        self.resamples = resamples
        self.indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n)) if resamples else None

    def _require_resamples(self):
        if self.indices is None:
            raise ValueError("no bootstrap resamples (resamples = 0)")

    def means(self, per_image):
        """Resample means of a per-image vector (shape: resamples)."""
        self._require_resamples()
        values = np.asarray(per_image, dtype=np.float64)
        return values[self.indices].mean(axis=1)

    def ratios(self, numerator, denominator):
        """Resample values of sum(numerator) / sum(denominator) (e.g. bits per feature point)."""
        self._require_resamples()
        num, den = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
        return num[self.indices].sum(axis=1) / den[self.indices].sum(axis=1)


def interval(samples):
    """(low, high) percentile interval of bootstrap samples, NaNs (undefined resamples) ignored;
    (nan, nan) when fewer than half of the resamples are defined."""
    values = np.asarray(samples, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if values.size == 0 or finite.size < values.size / 2:
        return (math.nan, math.nan)
    tail = (100.0 - CONFIDENCE) / 2
    return float(np.percentile(finite, tail)), float(np.percentile(finite, 100.0 - tail))


def envelope(rates, qualities):
    """Indices of the curve's non-dominated points, by increasing rate: a point stays only when
    its quality beats every cheaper point's."""
    order = np.argsort(np.asarray(rates, dtype=np.float64), kind="stable")
    keep, best = [], -math.inf
    for i in order:
        if qualities[i] > best:
            keep.append(int(i))
            best = qualities[i]
    return keep


def _envelopes(anchor_rates, anchor_qualities, test_rates, test_qualities):
    """Both curves reduced to their envelopes, or None when one has fewer than two points."""
    curves = []
    for rates, qualities in ((anchor_rates, anchor_qualities), (test_rates, test_qualities)):
        rates, qualities = np.asarray(rates, np.float64), np.asarray(qualities, np.float64)
        keep = envelope(rates, qualities)
        if len(keep) < 2 or np.any(rates[keep] <= 0):
            return None
        curves.append((rates[keep], qualities[keep]))
    return curves


def bd_overlap(anchor_rates, anchor_qualities, test_rates, test_qualities):
    """(low, high) quality interval a BD-rate integrates over; None when it is undefined."""
    curves = _envelopes(anchor_rates, anchor_qualities, test_rates, test_qualities)
    if curves is None:
        return None
    (_, qa), (_, qt) = curves
    low, high = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    return (float(low), float(high)) if high > low else None


def bd_rate(anchor_rates, anchor_qualities, test_rates, test_qualities):
    """BD-rate (%) of test vs anchor under the overlap rule above; nan when undefined."""
    import bjontegaard

    if bd_overlap(anchor_rates, anchor_qualities, test_rates, test_qualities) is None:
        return math.nan
    (ra, qa), (rt, qt) = _envelopes(anchor_rates, anchor_qualities, test_rates, test_qualities)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(ra, qa, rt, qt, method="pchip", require_matching_points=False, min_overlap=0)
    return float(value) if np.isfinite(value) else math.nan


@dataclass(frozen=True)
class NearLossless:
    rate: float        # R_NL in bits per feature point (a bound when censored)
    censored: str      # "": interpolated; "<=": even the lowest rate point meets it; ">": none does

    @property
    def compression_ratio(self):
        return UNCOMPRESSED_BITS_PER_POINT / self.rate

    def text(self, digits=4):
        symbol = {"<=": "≤ ", ">": "> ", "": ""}[self.censored]
        return f"{symbol}{self.rate:.{digits}g}"


def near_lossless_rate(rates, qualities, reference_quality, drop):
    """R_NL of one curve under the rule above."""
    rates, qualities = np.asarray(rates, np.float64), np.asarray(qualities, np.float64)
    order = np.argsort(-rates, kind="stable")            # highest rate first
    threshold = (1.0 - drop) * reference_quality
    last_pass = None
    for i in order:
        if qualities[i] > threshold:
            last_pass = i
            continue
        if last_pass is None:
            return NearLossless(float(rates[i]), ">")
        # interpolate log-rate between the failing point i and the passing point above it
        q_fail, q_pass = qualities[i], qualities[last_pass]
        t = (threshold - q_fail) / (q_pass - q_fail)
        log_rate = math.log(rates[i]) + t * (math.log(rates[last_pass]) - math.log(rates[i]))
        return NearLossless(math.exp(log_rate), "")
    return NearLossless(float(rates[order[-1]]), "<=")
