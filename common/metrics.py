"""The evaluation panel of one site's split: metrics that survive class imbalance.

Why this panel: on imbalanced clinical data accuracy alone flatters a model, so every evaluation
reports AUROC, AUPRC next to its prevalence (the AUPRC of a random model), balanced accuracy, the
Brier score, expected calibration error (Naeini, Cooper, Hauskrecht 2015; Guo et al. 2017; 10
equal-width bins) and the recall reachable at a fixed false discovery rate, each with a stratified
bootstrap percentile interval (Efron & Tibshirani 1993). Chicco, Tötsch & Jurman (2021) and the
seeds' "ten tips" motivate reporting several complementary metrics rather than one.

A second model scored on the same rows is compared by the paired bootstrap of their AUROC
difference (``paired_auroc_difference``). What a site releases for pooled figures is its score
histogram (``fedward.common.score_histograms``); the coordinator's pooled panel is in
``fedward.server.pooled_metrics``; what both panels share is in
``fedward.common.metric_conventions``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from fedward.common.metric_conventions import ECE_BINS, FIGURE_KEYS, checked_scores

CI_METRICS = ("auroc", "auprc", "balanced_accuracy", "brier", "ece")
"""Metrics of the panel that carry a bootstrap interval (`<m>_lo`, `<m>_hi`)."""

PANEL_KEYS = (
    *FIGURE_KEYS,
    *(f"{m}_{side}" for m in CI_METRICS for side in ("lo", "hi")),
)
"""Every key `metric_panel` returns, in order; the egress allow-list is built from it."""


def _ece(y: np.ndarray, s: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE = sum over bins of |sum(y - s)| / n, i.e. the bin-weighted calibration gap."""
    idx = np.minimum((s * bins).astype(np.int64), bins - 1)
    gap = np.bincount(idx, weights=y - s, minlength=bins)
    return float(np.abs(gap).sum() / y.size)


def _recall_at_fdr(y: np.ndarray, s: np.ndarray, fdr: float) -> float:
    """Highest recall among thresholds whose precision is at least 1 - fdr."""
    precision, recall, _ = precision_recall_curve(y, s)
    ok = precision >= 1.0 - fdr - 1e-12
    return float(recall[ok].max()) if ok.any() else 0.0


# ---- vectorised bootstrap statistics: one row per resample, positives first then negatives ----


def _auroc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC per row via the Mann-Whitney rank sum (ties count one half)."""
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    rank_sum = ranks[:, :n_pos].sum(axis=1)
    return np.asarray((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _auprc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision per row, tied scores forming one threshold (as sklearn does)."""
    n_pos = pos.shape[1]
    s = np.concatenate([pos, neg], axis=1)
    labels = np.concatenate([np.ones(n_pos), np.zeros(neg.shape[1])])
    order = np.argsort(-s, axis=1, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=1)
    tp = np.cumsum(labels[order], axis=1)
    k = np.arange(1, s.shape[1] + 1)
    is_end = np.ones_like(s_sorted, dtype=bool)
    is_end[:, :-1] = s_sorted[:, :-1] != s_sorted[:, 1:]
    tp_at_end = np.maximum.accumulate(np.where(is_end, tp, 0.0), axis=1)
    prev = np.zeros_like(tp_at_end)
    prev[:, 1:] = tp_at_end[:, :-1]
    contrib = np.where(is_end, (tp - prev) / n_pos * (tp / k), 0.0)
    return np.asarray(contrib.sum(axis=1))


def _ece_rows(y: np.ndarray, s: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    rows, n = s.shape
    idx = np.minimum((s * bins).astype(np.int64), bins - 1) + bins * np.arange(rows)[:, None]
    gap = np.bincount(idx.ravel(), weights=(y[None, :] - s).ravel(), minlength=rows * bins)
    return np.asarray(np.abs(gap.reshape(rows, bins)).sum(axis=1) / n)


def _class_resamples(
    n_pos: int, n_neg: int, n_bootstrap: int, rng: np.random.Generator
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Row indices of each resample, drawn within each class (None for an absent class)."""
    pos = rng.integers(0, n_pos, (n_bootstrap, n_pos)) if n_pos else None
    neg = rng.integers(0, n_neg, (n_bootstrap, n_neg)) if n_neg else None
    return pos, neg


def _bootstrap(
    y: np.ndarray,
    s: np.ndarray,
    *,
    threshold: float,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> dict[str, float | None]:
    """Stratified percentile bootstrap: resample within each class so prevalence is fixed."""
    out: dict[str, float | None] = {
        f"{m}_{side}": None for m in CI_METRICS for side in ("lo", "hi")
    }
    pos_s, neg_s = s[y == 1], s[y == 0]
    if n_bootstrap <= 0 or y.size == 0:
        return out
    pos_idx, neg_idx = _class_resamples(
        pos_s.size, neg_s.size, n_bootstrap, np.random.default_rng(seed)
    )
    pos = pos_s[pos_idx] if pos_idx is not None else None
    neg = neg_s[neg_idx] if neg_idx is not None else None
    empty = np.empty((n_bootstrap, 0))
    p = pos if pos is not None else empty
    q = neg if neg is not None else empty
    both = np.concatenate([p, q], axis=1)
    labels = np.concatenate([np.ones(p.shape[1]), np.zeros(q.shape[1])])
    stats: dict[str, np.ndarray] = {
        "brier": ((both - labels[None, :]) ** 2).mean(axis=1),
        "ece": _ece_rows(labels, both),
    }
    if pos is not None and neg is not None:
        stats["auroc"] = _auroc_rows(pos, neg)
        stats["auprc"] = _auprc_rows(pos, neg)
        tpr = (pos >= threshold).mean(axis=1)
        tnr = (neg < threshold).mean(axis=1)
        stats["balanced_accuracy"] = (tpr + tnr) / 2.0
    alpha = (1.0 - confidence) / 2.0
    for name, values in stats.items():
        lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
        out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
    return out


def metric_panel(
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float = 0.5,
    n_bootstrap: int,
    confidence: float,
    seed: int,
    fdr: float = 0.1,
) -> dict[str, float | None]:
    """The full evaluation panel of one site's split; keys are `PANEL_KEYS`.

    Values are Python floats, or None where a metric is undefined (AUROC of a single-class sample,
    AUPRC without positives, any interval when `n_bootstrap` is 0); never NaN.
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    if not 0.0 < fdr < 1.0:
        raise ValueError(f"fdr must be in (0, 1), got {fdr}")
    y, s = checked_scores(y_true, scores)
    panel: dict[str, float | None] = dict.fromkeys(PANEL_KEYS)
    panel["n"] = float(y.size)
    if y.size == 0:
        return panel
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    pred = s >= threshold
    panel["prevalence"] = n_pos / y.size
    panel["accuracy"] = float((pred == (y == 1)).mean())
    panel["brier"] = float(((s - y) ** 2).mean())
    panel["ece"] = _ece(y.astype(np.float64), s)
    if n_pos:
        panel["auprc"] = float(average_precision_score(y, s))
        panel["recall_at_fdr"] = _recall_at_fdr(y, s, fdr)
    if n_pos and n_neg:
        panel["auroc"] = float(roc_auc_score(y, s))
        tpr = float(pred[y == 1].mean())
        tnr = float((~pred[y == 0]).mean())
        panel["balanced_accuracy"] = (tpr + tnr) / 2.0
    panel.update(
        _bootstrap(
            y, s, threshold=threshold, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed
        )
    )
    return panel


DIFFERENCE_KEYS = ("difference", "lo", "hi", "se")
"""Every key `paired_auroc_difference` returns."""


def paired_auroc_difference(
    y_true: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> dict[str, float | None]:
    """AUROC(a) - AUROC(b) on the same rows, with a paired stratified bootstrap interval.

    Two models scored on one test split are correlated; intervals computed for each alone overlap
    even when one is consistently better. Resampling the same rows for both (within each class, as
    the panel's bootstrap does) keeps that correlation, so the interval is of the difference itself.
    Keys are `DIFFERENCE_KEYS`; all None when AUROC is undefined (one class), and the interval and
    standard error None when `n_bootstrap` is 0 (the standard error also when it is 1).
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    y, a = checked_scores(y_true, scores_a)
    _, b = checked_scores(y_true, scores_b)
    out: dict[str, float | None] = dict.fromkeys(DIFFERENCE_KEYS)
    is_pos = y == 1
    n_pos = int(is_pos.sum())
    n_neg = int(y.size - n_pos)
    if not n_pos or not n_neg:
        return out
    out["difference"] = float(roc_auc_score(y, a) - roc_auc_score(y, b))
    if n_bootstrap <= 0:
        return out
    pos_idx, neg_idx = _class_resamples(n_pos, n_neg, n_bootstrap, np.random.default_rng(seed))
    assert pos_idx is not None and neg_idx is not None  # both classes are present
    diffs = _auroc_rows(a[is_pos][pos_idx], a[~is_pos][neg_idx]) - _auroc_rows(
        b[is_pos][pos_idx], b[~is_pos][neg_idx]
    )
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha])
    out["lo"], out["hi"] = float(lo), float(hi)
    out["se"] = float(diffs.std(ddof=1)) if n_bootstrap > 1 else None
    return out
