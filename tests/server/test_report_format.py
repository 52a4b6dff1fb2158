"""The reports' one formatting module: how a figure, an interval and a difference read."""

from __future__ import annotations

import math

from fedward.server.report_format import (
    MISSING,
    difference,
    finite,
    fmt_fixed,
    fmt_small,
    fmt_value,
    interval,
    panel_interval,
    signed,
    yes_no_none,
)


def test_a_missing_figure_reads_as_a_dash_in_every_style() -> None:
    assert fmt_value(None) == fmt_fixed(None) == interval(None, 0.1, 0.2) == MISSING
    assert panel_interval(None) == panel_interval({"auroc": None}) == difference(None) == MISSING


def test_fmt_value_prints_booleans_as_words_and_floats_with_fixed_decimals() -> None:
    assert fmt_value(True) == "yes" and fmt_value(False) == "no"
    assert fmt_value(0.5) == "0.500" and fmt_value(0.5, 2) == "0.50"
    assert fmt_value(12) == "12"


def test_fmt_fixed_prints_booleans_as_they_are() -> None:
    assert fmt_fixed(True) == "True" and fmt_fixed(0.125, 2) == "0.12" and fmt_fixed(3) == "3"


def test_an_interval_needs_both_bounds() -> None:
    assert interval(0.7, 0.6, 0.8) == "0.700 [0.600, 0.800]"
    assert interval(0.7, None, 0.8) == "0.700"
    assert (
        panel_interval({"auroc": 0.7, "auroc_lo": 0.6, "auroc_hi": 0.8}) == "0.700 [0.600, 0.800]"
    )
    assert panel_interval({"auroc": 0.7}) == "0.700"


def test_a_difference_carries_its_sign_and_nan_is_missing_only_when_asked() -> None:
    d = {"difference": 0.1, "lo": -0.05, "hi": 0.25}
    assert difference(d) == "+0.100 [-0.050, +0.250]"
    assert difference({"difference": 0.1}) == "+0.100"
    assert difference({"difference": math.nan}, finite_only=True) == MISSING
    assert difference({"difference": math.nan}) == "+nan"
    assert signed(-0.0004) == "-0.000"


def test_small_probabilities_and_unanswered_questions() -> None:
    assert fmt_small(1e-5) == "1e-05" and fmt_small(None) == MISSING
    assert yes_no_none(None, "not done") == "not done" and yes_no_none(True, "x") == "yes"
    assert finite(1) and not finite(True) and not finite(math.inf) and not finite("1")
