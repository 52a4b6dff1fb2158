"""The paired bootstrap of an AUROC difference between two scorers on the same rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedward.common.metrics import DIFFERENCE_KEYS, metric_panel, paired_auroc_difference


def _labels(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < 0.4).astype(np.int64)


def _scorer(y: np.ndarray, signal: float, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0.0, 1.0, y.size) + signal * y
    return 1.0 / (1.0 + np.exp(-logits))


def test_identical_scores_differ_by_zero_with_an_interval_containing_zero() -> None:
    y = _labels(200, 0)
    s = _scorer(y, 1.0, 1)
    out = paired_auroc_difference(y, s, s, n_bootstrap=300, confidence=0.95, seed=0)
    assert set(out) == set(DIFFERENCE_KEYS)
    assert out["difference"] == 0.0
    assert out["lo"] is not None and out["hi"] is not None
    assert out["lo"] <= 0.0 <= out["hi"]
    assert out["se"] == 0.0


def test_a_clearly_better_scorer_has_a_positive_difference_and_interval() -> None:
    y = _labels(300, 2)
    good, noise = _scorer(y, 3.0, 3), _scorer(y, 0.0, 4)
    out = paired_auroc_difference(y, good, noise, n_bootstrap=400, confidence=0.95, seed=1)
    expected = roc_auc_score(y, good) - roc_auc_score(y, noise)
    assert out["difference"] == pytest.approx(expected)
    assert out["difference"] is not None
    assert out["difference"] > 0.3
    assert out["lo"] is not None and out["lo"] > 0.0
    assert out["hi"] is not None and out["hi"] >= out["difference"] >= out["lo"]


def test_swapping_the_scorers_negates_the_difference_and_its_interval() -> None:
    y = _labels(150, 5)
    a, b = _scorer(y, 1.5, 6), _scorer(y, 1.0, 7)
    ab = paired_auroc_difference(y, a, b, n_bootstrap=200, confidence=0.9, seed=3)
    ba = paired_auroc_difference(y, b, a, n_bootstrap=200, confidence=0.9, seed=3)
    assert ab["difference"] is not None and ab["hi"] is not None
    assert ba["difference"] == pytest.approx(-ab["difference"])
    assert ba["lo"] == pytest.approx(-ab["hi"])
    assert ba["se"] == pytest.approx(ab["se"])


def test_pairing_gives_a_narrower_interval_than_two_separate_ones() -> None:
    # Two strongly correlated scorers: their own intervals overlap, the paired one is tight.
    y = _labels(200, 8)
    a = _scorer(y, 1.2, 9)
    b = np.clip(a + np.random.default_rng(10).normal(0.0, 0.02, y.size), 0.0, 1.0)
    pa = metric_panel(y, a, n_bootstrap=300, confidence=0.95, seed=0)
    paired = paired_auroc_difference(y, a, b, n_bootstrap=300, confidence=0.95, seed=0)
    assert pa["auroc_hi"] is not None and pa["auroc_lo"] is not None
    assert paired["hi"] is not None and paired["lo"] is not None
    width_alone = pa["auroc_hi"] - pa["auroc_lo"]
    assert paired["hi"] - paired["lo"] < width_alone / 3


@pytest.mark.parametrize("label", [0, 1])
def test_a_single_class_leaves_everything_undefined(label: int) -> None:
    y = np.full(30, label)
    s = np.linspace(0.0, 1.0, 30)
    out = paired_auroc_difference(y, s, s[::-1], n_bootstrap=50, confidence=0.95, seed=0)
    assert out == dict.fromkeys(DIFFERENCE_KEYS)


def test_without_resamples_only_the_difference_is_given() -> None:
    y = _labels(80, 11)
    out = paired_auroc_difference(
        y, _scorer(y, 2.0, 1), _scorer(y, 0.5, 2), n_bootstrap=0, confidence=0.95, seed=0
    )
    assert out["difference"] is not None
    assert out["lo"] is None and out["hi"] is None and out["se"] is None


def test_same_seed_gives_the_same_interval() -> None:
    y = _labels(120, 12)
    a, b = _scorer(y, 1.0, 1), _scorer(y, 0.8, 2)
    first = paired_auroc_difference(y, a, b, n_bootstrap=100, confidence=0.95, seed=4)
    assert paired_auroc_difference(y, a, b, n_bootstrap=100, confidence=0.95, seed=4) == first


def test_rejects_mismatched_or_non_probability_scores() -> None:
    y = _labels(20, 13)
    s = np.full(20, 0.5)
    with pytest.raises(ValueError):
        paired_auroc_difference(y, s, s[:-1], n_bootstrap=10, confidence=0.95, seed=0)
    with pytest.raises(ValueError):
        paired_auroc_difference(y, s, s + 2.0, n_bootstrap=10, confidence=0.95, seed=0)
    with pytest.raises(ValueError):
        paired_auroc_difference(y, s, s, n_bootstrap=10, confidence=0.4, seed=0)
