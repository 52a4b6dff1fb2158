"""A robust summary of one numeric column: the range a schema declares, its median, and the
values kept out of it (impossible ones) — built so that no single patient's value sets a bound.

Ranges come from robust quantiles (0.5 % to 99.5 %) widened a little and rounded outward, so the
range does not copy a patient's value; impossible values (an age of 65526, a lab value a thousand
interquartile ranges beyond the quartiles) are set aside and reported, never used silently.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

# The range is read between these quantiles of the pooled values, then widened by WIDEN of its span
# on each side: one patient's extreme cannot move a bound, and a new patient rarely falls outside.
LOW_QUANTILE, HIGH_QUANTILE = 0.005, 0.995
WIDEN = 0.05
# A value further than this many interquartile ranges beyond the quartiles is impossible for a
# measurement (an age of 65526; a lab value a thousand IQRs out), provided such values are rare.
IMPOSSIBLE_IQRS = 1000.0
IMPOSSIBLE_MAX_SHARE = 0.01
# An integer column with at most this many distinct values is a code (0/1, a 1–4 scale): its range
# is its smallest and largest value, not a widened quantile range.
CODE_MAX_LEVELS = 10
# A non-negative column whose upper tail (median to 95th percentile) is this many times longer than
# its lower one (5th percentile to median) is skewed, like most lab values: it is declared
# `transform = "log"`, since range scaling would crowd most patients into a sliver of the range.
SKEW_TAIL_RATIO = 4.0


def round_sig(value: float, digits: int = 3) -> float:
    """``value`` to ``digits`` significant digits: a median that does not copy a patient's value."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _nice_range(low: float, high: float, *, parts: int = 20) -> tuple[float, float]:
    """``[low, high]`` rounded outward to a step of 1, 2 or 5 × 10^k of at least span/parts."""
    wanted = ((high - low) or abs(low) or 1.0) / parts
    exponent = math.floor(math.log10(wanted))
    step = next(m * 10.0**exponent for m in (1, 2, 5, 10) if m * 10.0**exponent >= wanted)
    lo, hi = math.floor(low / step) * step, math.ceil(high / step) * step
    if hi <= lo:
        hi = lo + step
    return round(lo, 10), round(hi, 10)


@dataclass(frozen=True)
class NumericSummary:
    """What the schema declares for a numeric column, and the values kept out of its range."""

    lo: float
    hi: float
    median: float
    impossible: dict[float, int]  # value -> how many cells hold it
    code: bool  # a small set of integers: range = [smallest, largest]
    skewed: bool = False  # non-negative with a long upper tail: declared on a log scale


def impossible_values(values: np.ndarray) -> np.ndarray:
    """A mask of values so far beyond the quartiles that no measurement explains them.

    Far means more than IMPOSSIBLE_IQRS interquartile ranges beyond the nearer quartile (a
    zero IQR falls back to the 0.5–99.5 % span, then to the median's size); such values must also
    be rare (at most IMPOSSIBLE_MAX_SHARE of the cells), or they are the distribution itself.
    """
    if len(values) < 4:
        return np.zeros(len(values), dtype=bool)
    q1, q3 = np.quantile(values, [0.25, 0.75])
    scale = float(q3 - q1)
    if scale <= 0:
        lo, hi = np.quantile(values, [LOW_QUANTILE, HIGH_QUANTILE])
        scale = float(hi - lo) or max(abs(float(np.median(values))), 1.0)
    far = (values > q3 + IMPOSSIBLE_IQRS * scale) | (values < q1 - IMPOSSIBLE_IQRS * scale)
    if far.sum() > max(1, IMPOSSIBLE_MAX_SHARE * len(values)):
        return np.zeros(len(values), dtype=bool)
    return far


def summarise_numeric(values: np.ndarray) -> NumericSummary:
    """Robust range and median of the pooled values, impossible values set aside first."""
    far = impossible_values(values)
    kept = values[~far]
    counts = Counter(float(v) for v in values[far])
    distinct = np.unique(kept)
    code = bool(len(distinct) <= CODE_MAX_LEVELS and np.all(distinct == np.round(distinct)))
    if code:
        lo, hi = float(distinct.min()), float(distinct.max())
        if hi <= lo:
            hi = lo + 1
    else:
        q_lo, q_hi = (float(q) for q in np.quantile(kept, [LOW_QUANTILE, HIGH_QUANTILE]))
        span = (q_hi - q_lo) or max(abs(q_lo), 1.0)
        lo, hi = q_lo - WIDEN * span, q_hi + WIDEN * span
        if float(kept.min()) >= 0 and lo < 0:
            lo = 0.0  # a count, a concentration: never declare a negative bound
        lo, hi = _nice_range(lo, hi)
    return NumericSummary(lo, hi, float(np.median(kept)), dict(counts), code, _skewed(kept, code))


def _skewed(kept: np.ndarray, code: bool) -> bool:
    """Non-negative, not a code, and the upper tail SKEW_TAIL_RATIO times the lower one."""
    if code or len(kept) < 20 or float(kept.min()) < 0:
        return False
    q05, q50, q95 = (float(q) for q in np.quantile(kept, [0.05, 0.5, 0.95]))
    if q95 <= q50:
        return False
    return q95 - q50 > SKEW_TAIL_RATIO * (q50 - q05)
