"""Pooled figures from the sites' histograms agree with the sites, or say why they are missing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, roc_auc_score

from fedward.common.metrics import metric_panel
from fedward.common.score_histograms import CoarseHistogram, ScoreHistogram, score_histogram
from fedward.server.pooled_metrics import n_weighted, pooled_panel


def _site(n: int, prevalence: float, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int64)
    logits = rng.normal(0.0, 1.0, n) + 1.6 * y + shift
    return y, 1.0 / (1.0 + np.exp(-logits))


def _panels(sites: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float | None]]:
    return {
        name: metric_panel(y, s, n_bootstrap=0, confidence=0.95, seed=0)
        for name, (y, s) in sites.items()
    }


def _ece(y: np.ndarray, s: np.ndarray) -> float:
    idx = np.minimum((s * 10).astype(int), 9)
    return float(np.abs(np.bincount(idx, weights=y - s, minlength=10)).sum() / y.size)


site_specs = st.lists(
    st.tuples(st.integers(20, 200), st.floats(0.1, 0.9), st.floats(-1.5, 1.5)),
    min_size=1,
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(specs=site_specs, seed=st.integers(0, 10_000), bins=st.sampled_from([10, 20, 40, 100]))
def test_pooled_accuracy_equals_the_n_weighted_site_accuracy_from_complete_histograms(
    specs: list[tuple[int, float, float]], seed: int, bins: int
) -> None:
    sites = {f"s{i}": _site(n, p, shift, seed + i) for i, (n, p, shift) in enumerate(specs)}
    hists = {k: score_histogram(y, s, bins).coarsen(1) for k, (y, s) in sites.items()}
    pooled = pooled_panel(hists, bins)
    panels = _panels(sites)
    weighted, missing = n_weighted(panels, "accuracy")
    assert missing == []
    assert pooled["accuracy"] == pytest.approx(weighted, abs=1e-12)
    assert pooled["n"] == sum(y.size for y, _ in sites.values())
    assert "accuracy" not in pooled["omitted"]
    y_all = np.concatenate([y for y, _ in sites.values()])
    s_all = np.concatenate([s for _, s in sites.values()])
    assert pooled["prevalence"] == pytest.approx(y_all.mean())
    if 0 < y_all.sum() < y_all.size:
        tpr = float((s_all[y_all == 1] >= 0.5).mean())
        tnr = float((s_all[y_all == 0] < 0.5).mean())
        assert pooled["balanced_accuracy"] == pytest.approx((tpr + tnr) / 2, abs=1e-12)
        lo, hi = pooled["bounds"]["auroc"]
        assert lo - 1e-12 <= roc_auc_score(y_all, s_all) <= hi + 1e-12
    lo, hi = pooled["bounds"]["brier"]
    assert lo - 1e-12 <= brier_score_loss(y_all, s_all) <= hi + 1e-12
    lo, hi = pooled["bounds"]["ece"]
    assert lo - 1e-12 <= _ece(y_all, s_all) <= hi + 1e-12


@settings(max_examples=60, deadline=None)
@given(specs=site_specs, seed=st.integers(0, 10_000), min_cell=st.integers(2, 15))
def test_a_stated_pooled_accuracy_is_exact_and_an_omitted_one_has_true_bounds(
    specs: list[tuple[int, float, float]], seed: int, min_cell: int
) -> None:
    sites = {f"s{i}": _site(n, p, shift, seed + i) for i, (n, p, shift) in enumerate(specs)}
    hists = {k: score_histogram(y, s, 20).coarsen(min_cell) for k, (y, s) in sites.items()}
    pooled = pooled_panel(hists, 20)
    kept = {k: v for k, v in sites.items() if k not in pooled["sites_left_out"]}
    if not kept:
        assert pooled["accuracy"] is None and pooled["omitted"]["accuracy"]
        return
    correct = sum(int(((s >= 0.5) == (y == 1)).sum()) for y, s in kept.values())
    n = sum(y.size for y, _ in kept.values())
    truth = correct / n
    if pooled["accuracy"] is None:
        assert "threshold" in pooled["omitted"]["accuracy"]
        lo, hi = pooled["bounds"]["accuracy"]
        assert lo - 1e-12 <= truth <= hi + 1e-12
    else:
        assert pooled["accuracy"] == pytest.approx(truth, abs=1e-12)


def test_coarsening_at_the_minimum_cell_keeps_pooled_accuracy_exact_when_cells_allow() -> None:
    sites = {"a": _site(300, 0.45, -0.3, 1), "b": _site(290, 0.35, -0.6, 2)}
    hists = {k: score_histogram(y, s, 20).coarsen(10) for k, (y, s) in sites.items()}
    pooled = pooled_panel(hists, 20)
    weighted, _ = n_weighted(_panels(sites), "accuracy")
    assert pooled["accuracy"] == pytest.approx(weighted, abs=1e-12)
    assert pooled["balanced_accuracy"] is not None


def test_positives_suppressed_everywhere_gives_no_pooled_accuracy_and_says_why() -> None:
    y = np.array([1] * 3 + [0] * 40)
    s = np.linspace(0.05, 0.95, y.size)
    hist = score_histogram(y, s, 20).coarsen(10)
    assert hist.pos_suppressed
    pooled = pooled_panel({"small": hist}, 20)
    assert pooled["accuracy"] is None
    assert pooled["prevalence"] is None
    assert pooled["accuracy"] != 1.0
    assert "both classes" in pooled["omitted"]["accuracy"]
    assert pooled["sites_left_out"] == ["small"]
    assert "small" in pooled["coverage"]


def test_a_site_with_a_suppressed_class_is_left_out_and_named() -> None:
    full = _site(200, 0.5, 0.0, 7)
    small_pos = (np.array([1] * 4 + [0] * 50), np.linspace(0.0, 1.0, 54))
    hists = {
        "big": score_histogram(*full, 20).coarsen(10),
        "small": score_histogram(*small_pos, 20).coarsen(10),
    }
    pooled = pooled_panel(hists, 20)
    assert pooled["n"] == 200
    assert pooled["prevalence"] == pytest.approx(full[0].mean())
    assert pooled["n_sites"] == 1 and pooled["n_sites_sent"] == 2
    assert pooled["coverage"].startswith("1 of 2 sites: left out small")


def test_merged_groups_across_the_threshold_omit_accuracy_with_bounds() -> None:
    # 3 positives below 0.5 cannot be released alone: they merge with those above.
    hist = ScoreHistogram(4, (0, 3, 20, 0), (15, 10, 0, 0)).coarsen(10)
    pooled = pooled_panel([hist], 4)
    assert pooled["accuracy"] is None
    # The 23 positives form one group across 0.5: each might be on either side.
    assert pooled["bounds"]["accuracy"] == pytest.approx([25 / 48, 1.0])
    assert "0.5 threshold" in pooled["omitted"]["accuracy"]


def test_odd_bins_cannot_place_the_threshold_and_say_so() -> None:
    hist = ScoreHistogram(5, (0, 0, 10, 10, 10), (10, 10, 10, 0, 0)).coarsen(1)
    pooled = pooled_panel([hist], 5)
    assert pooled["accuracy"] is None
    assert "inside a histogram bin" in pooled["omitted"]["accuracy"]


def test_calibration_from_wide_groups_is_omitted_with_its_reason() -> None:
    hist = CoarseHistogram(20, ((0, 30),), ((0, 30),))
    pooled = pooled_panel([hist], 20)
    assert pooled["brier"] is None and "uncertain by more than" in pooled["omitted"]["brier"]
    assert pooled["ece"] is None and "calibration bins" in pooled["omitted"]["ece"]


def test_n_weighted_names_the_sites_without_the_figure() -> None:
    panels = {"a": {"n": 10.0, "accuracy": 0.5}, "b": {"n": 30.0, "accuracy": 0.9}, "c": {}}
    assert n_weighted(panels, "accuracy") == (pytest.approx(0.8), ["c"])


def test_site_panels_give_the_exact_pooled_accuracy_and_brier_the_groups_cannot() -> None:
    sites = {"a": _site(60, 0.5, 0.0, 11), "b": _site(45, 0.4, -0.2, 12)}
    # A wide merge: each class one group over the whole range, so nothing is resolved.
    hists = {
        k: CoarseHistogram(20, ((0, int(y.sum())),), ((0, int((1 - y).sum())),))
        for k, (y, _) in sites.items()
    }
    panels = _panels(sites)
    alone = pooled_panel(hists, 20)
    assert alone["accuracy"] is None and alone["brier"] is None
    pooled = pooled_panel(hists, 20, site_panels=panels)
    assert pooled["accuracy"] == pytest.approx(n_weighted(panels, "accuracy")[0], abs=1e-12)
    y_all = np.concatenate([y for y, _ in sites.values()])
    s_all = np.concatenate([s for _, s in sites.values()])
    assert pooled["brier"] == pytest.approx(brier_score_loss(y_all, s_all), abs=1e-12)
    assert pooled["from_sites"] == ["accuracy", "brier"]
    assert "accuracy" not in pooled["omitted"]
    # A site that withheld its accuracy: the pool cannot borrow it, and says why.
    panels["b"]["accuracy"] = None
    assert pooled_panel(hists, 20, site_panels=panels)["accuracy"] is None
