"""Evaluation metrics that survive class imbalance, per site and pooled from histograms.

Why this panel: on imbalanced clinical data accuracy alone flatters a model, so every evaluation
reports AUROC, AUPRC next to its prevalence (the AUPRC of a random model), balanced accuracy, the
Brier score, expected calibration error (Naeini, Cooper, Hauskrecht 2015; Guo et al. 2017; 10
equal-width bins) and the recall reachable at a fixed false discovery rate, each with a stratified
bootstrap percentile interval (Efron & Tibshirani 1993). Chicco, Tötsch & Jurman (2021) and the
seeds' "ten tips" motivate reporting several complementary metrics rather than one.

Pooled metrics never see raw scores: each site releases a score histogram whose counts are coarsened
so that every released count is 0 or at least the site's minimum cell size; the coordinator expands
the groups back uniformly over their bins and computes the panel from the summed histograms. Merged
bins make pooled metrics an approximation (exact up to bin resolution when no merging happened).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

ECE_BINS = 10
"""Equal-width bins for the expected calibration error of the per-site panel."""

CI_METRICS = ("auroc", "auprc", "balanced_accuracy", "brier", "ece")
"""Metrics of the panel that carry a bootstrap interval (`<m>_lo`, `<m>_hi`)."""

PANEL_KEYS = (
    "n",
    "prevalence",
    "accuracy",
    "auroc",
    "auprc",
    "balanced_accuracy",
    "brier",
    "ece",
    "recall_at_fdr",
    *(f"{m}_{side}" for m in CI_METRICS for side in ("lo", "hi")),
)
"""Every key `metric_panel` returns, in order; the egress allow-list is built from it."""

POOLED_KEYS = (
    "n",
    "prevalence",
    "accuracy",
    "auroc",
    "auprc",
    "balanced_accuracy",
    "brier",
    "ece",
    "recall_at_fdr",
    "n_sites",
)
"""Every key `pooled_panel` returns."""


def _check_inputs(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refuse inputs the metrics would silently mis-handle (wrong labels, NaN, logits)."""
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.shape[0]} rows but scores has {s.shape[0]}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if s.size and (not np.isfinite(s).all() or s.min() < 0.0 or s.max() > 1.0):
        raise ValueError("scores must be finite probabilities in [0, 1] (apply the sigmoid first)")
    return y.astype(np.int64), s


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
    y, s = _check_inputs(y_true, scores)
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
    y, a = _check_inputs(y_true, scores_a)
    _, b = _check_inputs(y_true, scores_b)
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


# ---- score histograms: what a site may release for pooled metrics ----


@dataclass(frozen=True)
class ScoreHistogram:
    """Exact per-bin counts of positives and negatives on [0, 1]; never leaves the site as is."""

    bins: int
    pos_counts: tuple[int, ...]
    neg_counts: tuple[int, ...]

    def coarsen(self, min_cell: int) -> CoarseHistogram:
        """Merge adjacent bins so every released count is 0 or at least `min_cell`."""
        if min_cell < 1:
            raise ValueError(f"min_cell must be >= 1, got {min_cell}")
        pos, pos_sup = _coarsen_counts(self.pos_counts, min_cell)
        neg, neg_sup = _coarsen_counts(self.neg_counts, min_cell)
        return CoarseHistogram(
            bins=self.bins,
            pos_groups=pos,
            neg_groups=neg,
            pos_suppressed=pos_sup,
            neg_suppressed=neg_sup,
        )


def score_histogram(y_true: np.ndarray, scores: np.ndarray, bins: int) -> ScoreHistogram:
    """Count positives and negatives per equal-width score bin on [0, 1] (1.0 in the last bin)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y, s = _check_inputs(y_true, scores)
    idx = np.minimum((s * bins).astype(np.int64), bins - 1)
    pos = np.bincount(idx[y == 1], minlength=bins)
    neg = np.bincount(idx[y == 0], minlength=bins)
    return ScoreHistogram(
        bins=bins,
        pos_counts=tuple(int(c) for c in pos),
        neg_counts=tuple(int(c) for c in neg),
    )


Groups = tuple[tuple[int, int], ...]


def _coarsen_counts(counts: Sequence[int], min_cell: int) -> tuple[Groups, bool]:
    """Greedy left-to-right merge; runs of empty bins become explicit 0-count groups.

    Non-empty groups open at a non-empty bin and close as soon as they hold `min_cell`; a trailing
    remainder below `min_cell` joins the previous group. Explicit zero groups keep a group's implied
    extent (up to the next group's start) from spreading counts over empty bins.
    Returns (groups, suppressed); a class whose total is below `min_cell` (but not 0) is suppressed.
    """
    total = sum(counts)
    if total == 0:
        return ((0, 0),), False
    if total < min_cell:
        return (), True
    spans: list[list[int]] = []  # [start, end_inclusive, count]
    start: int | None = None
    acc = 0
    last_nonzero = -1
    for b, c in enumerate(counts):
        if c == 0:
            continue
        if start is None:
            start = b
        acc += c
        last_nonzero = b
        if acc >= min_cell:
            spans.append([start, b, acc])
            start, acc = None, 0
    if acc:  # remainder below min_cell: merge into the previous group (one exists: total >= min)
        spans[-1][1] = last_nonzero
        spans[-1][2] += acc
    groups: list[tuple[int, int]] = []
    nxt = 0
    for s, e, c in spans:
        if s > nxt:
            groups.append((nxt, 0))
        groups.append((s, c))
        nxt = e + 1
    if nxt < len(counts):
        groups.append((nxt, 0))
    return tuple(groups), False


@dataclass(frozen=True)
class CoarseHistogram:
    """A releasable histogram: per class, (start_bin, count) groups, each count 0 or >= min cell.

    A group spans from its start bin to the next group's start (or the last bin). A suppressed class
    has no groups at all.
    """

    bins: int
    pos_groups: Groups
    neg_groups: Groups
    pos_suppressed: bool = False
    neg_suppressed: bool = False

    def to_record(self) -> dict[str, list[int] | int]:
        """Flat int lists for a Flower ConfigRecord (prefix the keys when storing several)."""
        return {
            "bins": self.bins,
            "pos_starts": [g[0] for g in self.pos_groups],
            "pos_counts": [g[1] for g in self.pos_groups],
            "neg_starts": [g[0] for g in self.neg_groups],
            "neg_counts": [g[1] for g in self.neg_groups],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> CoarseHistogram:
        """Rebuild from `to_record()` output; empty group lists mean a suppressed class."""
        bins = record["bins"]
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"histogram record: 'bins' must be a positive int, got {bins!r}")

        def groups(side: str) -> Groups:
            starts = list(_int_list(record, f"{side}_starts"))
            counts = list(_int_list(record, f"{side}_counts"))
            if len(starts) != len(counts):
                raise ValueError(
                    f"histogram record: {side}_starts and {side}_counts differ in length"
                )
            if any(b < 0 or b >= bins for b in starts) or starts != sorted(set(starts)):
                raise ValueError(
                    f"histogram record: {side}_starts must be increasing bins < {bins}"
                )
            if any(c < 0 for c in counts):
                raise ValueError(f"histogram record: {side}_counts must be non-negative")
            return tuple(zip(starts, counts, strict=True))

        pos, neg = groups("pos"), groups("neg")
        return cls(bins, pos, neg, pos_suppressed=not pos, neg_suppressed=not neg)

    def expand(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin float counts, each group spread uniformly over the bins it spans."""
        return _expand(self.pos_groups, self.bins), _expand(self.neg_groups, self.bins)


def _int_list(record: Mapping[str, object], key: str) -> list[int]:
    value = record.get(key)
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise ValueError(f"histogram record: '{key}' must be a list of ints")
    return value


def _expand(groups: Groups, bins: int) -> np.ndarray:
    out = np.zeros(bins)
    for i, (start, count) in enumerate(groups):
        end = groups[i + 1][0] if i + 1 < len(groups) else bins
        out[start:end] += count / (end - start)
    return out


def pooled_panel(
    histograms: Sequence[CoarseHistogram], bins: int, *, fdr: float = 0.1
) -> dict[str, float | None]:
    """Pooled metrics across sites from released histograms only (keys: `POOLED_KEYS`).

    An approximation: scores are known only up to their bin (Brier and ECE use the bin midpoint as
    the predicted probability, ECE at the histogram's bin resolution), merged groups are assumed
    uniform over their bins, and a site's suppressed class is missing from the pool entirely.
    Balanced accuracy and accuracy threshold at 0.5, splitting a bin that straddles 0.5 uniformly.
    """
    for h in histograms:
        if h.bins != bins:
            raise ValueError(f"every histogram must have {bins} bins, one has {h.bins}")
    pos = np.zeros(bins)
    neg = np.zeros(bins)
    for h in histograms:
        p, q = h.expand()
        pos += p
        neg += q
    out: dict[str, float | None] = dict.fromkeys(POOLED_KEYS)
    out["n_sites"] = float(len(histograms))
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    n = n_pos + n_neg
    out["n"] = n
    if n <= 0:
        return out
    mid = (np.arange(bins) + 0.5) / bins
    above = np.clip((np.arange(1, bins + 1) / bins - 0.5) * bins, 0.0, 1.0)  # share of bin >= 0.5
    out["prevalence"] = n_pos / n
    out["brier"] = float(((pos * (1.0 - mid) ** 2).sum() + (neg * mid**2).sum()) / n)
    out["ece"] = float(np.abs(pos - (pos + neg) * mid).sum() / n)
    out["accuracy"] = float(((pos * above).sum() + (neg * (1.0 - above)).sum()) / n)
    if n_pos > 0:
        # Thresholds from the top bin down: tp/fp are cumulative counts at or above each bin.
        tp = np.cumsum(pos[::-1])
        fp = np.cumsum(neg[::-1])
        predicted = tp + fp
        precision = np.divide(tp, predicted, out=np.ones_like(tp), where=predicted > 0)
        recall = tp / n_pos
        d_recall = np.diff(np.concatenate([[0.0], recall]))
        out["auprc"] = float((d_recall * precision).sum())
        ok = precision >= 1.0 - fdr - 1e-12
        out["recall_at_fdr"] = float(recall[ok].max()) if ok.any() else 0.0
    if n_pos > 0 and n_neg > 0:
        neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
        out["auroc"] = float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))
        tpr = float((pos * above).sum() / n_pos)
        tnr = float((neg * (1.0 - above)).sum() / n_neg)
        out["balanced_accuracy"] = (tpr + tnr) / 2.0
    return out
