"""Metric panel, score histograms, coarsening and pooled metrics."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, ConfigRecordValues
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    roc_auc_score,
)

from fedward.common.metrics import PANEL_KEYS, _auprc_rows, _auroc_rows, metric_panel
from fedward.common.score_histograms import CoarseHistogram, ScoreHistogram, score_histogram
from fedward.server.pooled_metrics import POOLED_KEYS, pooled_panel


def _scores(n: int, prevalence: float, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced labels with informative, imperfect probabilities (like a real classifier)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int64)
    logits = rng.normal(0.0, 1.0, n) + 1.6 * y + shift
    return y, 1.0 / (1.0 + np.exp(-logits))


def _panel(y: np.ndarray, s: np.ndarray, **kw: Any) -> dict[str, float | None]:
    args: dict[str, Any] = {"n_bootstrap": 100, "confidence": 0.95, "seed": 0}
    args.update(kw)
    return metric_panel(y, s, **args)


# ---- metric_panel ----


def test_panel_has_exactly_the_documented_keys_as_floats_or_none() -> None:
    y, s = _scores(300, 0.25, -1.0, 1)
    panel = _panel(y, s)
    assert tuple(panel) == PANEL_KEYS
    for value in panel.values():
        assert value is None or (isinstance(value, float) and math.isfinite(value))


def test_panel_point_estimates_match_sklearn() -> None:
    y, s = _scores(300, 0.25, -1.0, 2)
    panel = _panel(y, s)
    assert panel["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert panel["auprc"] == pytest.approx(average_precision_score(y, s))
    assert panel["brier"] == pytest.approx(brier_score_loss(y, s))
    assert panel["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, s >= 0.5))
    assert panel["accuracy"] == pytest.approx(float(((s >= 0.5) == y).mean()))
    assert panel["prevalence"] == pytest.approx(y.mean())
    assert panel["n"] == 300


def test_panel_threshold_changes_accuracy_and_balanced_accuracy() -> None:
    y, s = _scores(300, 0.25, -1.0, 3)
    low, high = _panel(y, s, threshold=0.1), _panel(y, s, threshold=0.9)
    assert low["balanced_accuracy"] != high["balanced_accuracy"]
    assert low["accuracy"] == pytest.approx(float(((s >= 0.1) == y).mean()))


def test_single_class_sample_gives_none_for_rank_metrics_not_nan() -> None:
    y = np.zeros(50, dtype=np.int64)
    s = np.linspace(0.0, 1.0, 50)
    panel = _panel(y, s)
    for key in ("auroc", "auroc_lo", "auroc_hi", "auprc", "balanced_accuracy", "recall_at_fdr"):
        assert panel[key] is None, key
    assert panel["brier"] is not None
    assert panel["brier_lo"] is not None


def test_empty_sample_reports_zero_n_and_nothing_else() -> None:
    panel = _panel(np.array([], dtype=np.int64), np.array([]))
    assert panel["n"] == 0
    assert all(v is None for k, v in panel.items() if k != "n")


def test_confidence_intervals_bracket_point_estimates() -> None:
    y, s = _scores(300, 0.3, -0.8, 4)
    panel = _panel(y, s, n_bootstrap=200)
    for m in ("auroc", "auprc", "balanced_accuracy", "brier", "ece"):
        lo, hi, point = panel[f"{m}_lo"], panel[f"{m}_hi"], panel[m]
        assert lo is not None and hi is not None and point is not None
        assert lo < hi, m
        assert lo - 0.02 <= point <= hi + 0.02, m


def test_wider_confidence_gives_wider_interval() -> None:
    y, s = _scores(300, 0.3, -0.8, 5)
    narrow, wide = _panel(y, s, confidence=0.8), _panel(y, s, confidence=0.99)
    assert wide["auroc_hi"] - wide["auroc_lo"] > narrow["auroc_hi"] - narrow["auroc_lo"]  # type: ignore[operator]


def test_bootstrap_is_deterministic_from_seed() -> None:
    y, s = _scores(200, 0.3, -0.8, 6)
    assert _panel(y, s, seed=7) == _panel(y, s, seed=7)
    assert _panel(y, s, seed=7)["auroc_lo"] != _panel(y, s, seed=8)["auroc_lo"]


def test_zero_bootstrap_gives_no_intervals() -> None:
    y, s = _scores(200, 0.3, -0.8, 7)
    panel = _panel(y, s, n_bootstrap=0)
    assert all(panel[k] is None for k in PANEL_KEYS if k.endswith(("_lo", "_hi")))
    assert panel["auroc"] is not None


def test_vectorised_bootstrap_auroc_and_auprc_equal_sklearn_with_ties() -> None:
    rng = np.random.default_rng(8)
    pos = np.round(rng.random((5, 40)), 1)  # coarse rounding makes many ties
    neg = np.round(rng.random((5, 60)) * 0.8, 1)
    labels = np.r_[np.ones(40), np.zeros(60)]
    aurocs, auprcs = _auroc_rows(pos, neg), _auprc_rows(pos, neg)
    for i in range(5):
        both = np.r_[pos[i], neg[i]]
        assert aurocs[i] == pytest.approx(roc_auc_score(labels, both))
        assert auprcs[i] == pytest.approx(average_precision_score(labels, both))


def test_ece_of_constant_overconfident_score_is_the_gap() -> None:
    y = np.array([0, 1] * 50)
    s = np.full(100, 0.9)
    assert _panel(y, s)["ece"] == pytest.approx(0.4)


def test_ece_of_calibrated_scores_is_small() -> None:
    rng = np.random.default_rng(9)
    s = rng.random(20000)
    y = (rng.random(20000) < s).astype(np.int64)
    ece = _panel(y, s, n_bootstrap=0)["ece"]
    assert ece is not None and ece < 0.02


def test_recall_at_fdr_is_highest_recall_with_enough_precision() -> None:
    # Ranked by score: P P P N P N ...: precision >= 0.75 holds up to the 5th item (4/5 = 0.8).
    y = np.array([1, 1, 1, 0, 1, 0, 1, 0, 0, 0])
    s = np.linspace(1.0, 0.1, 10)
    assert _panel(y, s, fdr=0.25)["recall_at_fdr"] == pytest.approx(4 / 5)
    assert _panel(y, s, fdr=0.01)["recall_at_fdr"] == pytest.approx(3 / 5)


def test_panel_refuses_scores_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        _panel(np.array([0, 1]), np.array([-0.5, 2.0]))


def test_panel_refuses_labels_other_than_zero_and_one() -> None:
    with pytest.raises(ValueError, match="0 and 1"):
        _panel(np.array([0, 2]), np.array([0.1, 0.2]))


def test_panel_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="rows"):
        _panel(np.array([0, 1, 1]), np.array([0.1, 0.2]))


def test_bootstrap_of_300_rows_is_fast() -> None:
    y, s = _scores(300, 0.25, -1.0, 10)
    _panel(y, s, n_bootstrap=200)  # warm-up (imports, caches)
    start = time.perf_counter()
    for _ in range(3):
        _panel(y, s, n_bootstrap=200)
    assert (time.perf_counter() - start) / 3 < 0.25


# ---- histograms and coarsening ----


def test_score_histogram_counts_each_class_per_bin_with_one_in_last_bin() -> None:
    h = score_histogram(np.array([1, 0, 0, 1, 1]), np.array([0.0, 0.05, 0.55, 0.99, 1.0]), bins=10)
    assert h.pos_counts == (1, 0, 0, 0, 0, 0, 0, 0, 0, 2)
    assert h.neg_counts == (1, 0, 0, 0, 0, 1, 0, 0, 0, 0)


def test_coarsen_merges_left_to_right_until_each_group_reaches_min_cell() -> None:
    h = ScoreHistogram(7, (4, 4, 4, 10, 3, 0, 0), (0,) * 7)  # odd bins: no edge at 0.5
    c = h.coarsen(5)
    # 4+4 -> group at 0; 4+10 -> group at 2; trailing 3 merges into it; last bins are an empty run.
    assert c.pos_groups == ((0, 8), (2, 17), (5, 0))


def test_coarsen_never_merges_across_the_threshold_when_each_side_allows_it() -> None:
    h = ScoreHistogram(6, (4, 4, 4, 10, 3, 0), (0,) * 6)
    # Below 0.5 (bins 0-2) 12 and from it 13, both >= 5: merged separately.
    assert h.coarsen(5).pos_groups == ((0, 12), (3, 13), (5, 0))


def test_coarsen_merges_across_the_threshold_when_one_side_is_under_min_cell() -> None:
    h = ScoreHistogram(6, (0, 0, 3, 10, 4, 0), (0,) * 6)
    # 3 below 0.5 may not be released alone: it joins the group above.
    assert h.coarsen(5).pos_groups == ((0, 0), (2, 17), (5, 0))


def test_coarsen_marks_runs_of_empty_bins_as_zero_groups() -> None:
    h = ScoreHistogram(8, (0, 0, 12, 0, 0, 15, 0, 0), (0,) * 8)
    assert h.coarsen(10).pos_groups == ((0, 0), (2, 12), (3, 0), (5, 15), (6, 0))


def test_coarsen_suppresses_a_class_whose_total_is_below_min_cell() -> None:
    h = ScoreHistogram(4, (1, 2, 3, 0), (5, 5, 5, 5))
    c = h.coarsen(10)
    assert c.pos_groups == ()
    assert c.pos_suppressed
    assert not c.neg_suppressed


def test_coarsen_with_min_cell_one_keeps_the_exact_histogram() -> None:
    h = ScoreHistogram(5, (3, 0, 1, 7, 2), (1, 1, 0, 0, 9))
    pos, neg = h.coarsen(1).expand()
    assert pos.tolist() == [3, 0, 1, 7, 2]
    assert neg.tolist() == [1, 1, 0, 0, 9]


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=30),
    min_cell=st.integers(1, 25),
)
def test_coarsened_counts_are_zero_or_at_least_min_cell(counts: list[int], min_cell: int) -> None:
    h = ScoreHistogram(len(counts), tuple(counts), tuple(counts))
    c = h.coarsen(min_cell)
    released = [n for _, n in c.pos_groups]
    assert all(n == 0 or n >= min_cell for n in released)
    starts = [b for b, _ in c.pos_groups]
    assert starts == sorted(set(starts)) and all(0 <= b < len(counts) for b in starts)
    if c.pos_suppressed:
        assert 0 < sum(counts) < min_cell and released == []
    else:
        assert sum(released) == sum(counts)
        assert c.expand()[0].sum() == pytest.approx(sum(counts))


def test_coarse_histogram_round_trips_through_a_flower_config_record() -> None:
    c = ScoreHistogram(6, (0, 11, 0, 3, 9, 0), (2, 1, 0, 0, 0, 0)).coarsen(10)
    values: dict[str, ConfigRecordValues] = dict(c.to_record())
    record = ConfigRecord(values)
    assert CoarseHistogram.from_record(record) == c


def test_from_record_refuses_starts_and_counts_of_different_length() -> None:
    bad = {"bins": 4, "pos_starts": [0, 2], "pos_counts": [10], "neg_starts": [], "neg_counts": []}
    with pytest.raises(ValueError, match="pos_starts and pos_counts"):
        CoarseHistogram.from_record(bad)


# ---- pooled panel ----


def _federation() -> list[tuple[np.ndarray, np.ndarray]]:
    """Four sites with different size, prevalence and score shift (like the heart hospitals)."""
    specs = [(300, 0.45, -0.3), (290, 0.35, -0.6), (120, 0.9, 0.8), (200, 0.75, 0.3)]
    return [_scores(n, p, shift, 20 + i) for i, (n, p, shift) in enumerate(specs)]


def test_pooled_auroc_from_fine_histograms_is_close_to_pooled_raw_scores() -> None:
    sites = _federation()
    hists = [score_histogram(y, s, 100).coarsen(1) for y, s in sites]
    pooled = pooled_panel(hists, 100)
    y_all = np.concatenate([y for y, _ in sites])
    s_all = np.concatenate([s for _, s in sites])
    assert pooled["auroc"] == pytest.approx(roc_auc_score(y_all, s_all), abs=0.02)
    assert pooled["auprc"] == pytest.approx(average_precision_score(y_all, s_all), abs=0.02)
    assert pooled["brier"] == pytest.approx(brier_score_loss(y_all, s_all), abs=0.01)


def test_pooled_panel_from_coarsened_histograms_keeps_exact_n_and_prevalence() -> None:
    sites = _federation()
    hists = [score_histogram(y, s, 20).coarsen(10) for y, s in sites]
    pooled = pooled_panel(hists, 20)
    y_all = np.concatenate([y for y, _ in sites])
    assert pooled["n"] == pytest.approx(y_all.size)
    assert pooled["prevalence"] == pytest.approx(y_all.mean())
    assert pooled["auroc"] == pytest.approx(
        roc_auc_score(y_all, np.concatenate([s for _, s in sites])), abs=0.05
    )
    assert tuple(pooled) == POOLED_KEYS


def test_pooled_balanced_accuracy_at_half_matches_raw_scores_with_even_bins() -> None:
    sites = _federation()
    hists = [score_histogram(y, s, 20).coarsen(1) for y, s in sites]
    y_all = np.concatenate([y for y, _ in sites])
    s_all = np.concatenate([s for _, s in sites])
    pooled = pooled_panel(hists, 20)
    assert pooled["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(y_all, s_all >= 0.5)
    )


def test_pooled_panel_without_negatives_has_no_auroc() -> None:
    h = score_histogram(np.ones(30, dtype=np.int64), np.linspace(0, 1, 30), 10).coarsen(10)
    pooled = pooled_panel([h], 10)
    assert pooled["auroc"] is None
    assert pooled["prevalence"] == pytest.approx(1.0)


def test_pooled_panel_refuses_histograms_with_other_bin_counts() -> None:
    h = score_histogram(np.array([0, 1]), np.array([0.2, 0.8]), 10).coarsen(1)
    with pytest.raises(ValueError, match="20 bins"):
        pooled_panel([h], 20)
