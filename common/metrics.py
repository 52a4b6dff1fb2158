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
bins make pooled metrics an approximation, so every pooled figure that can be off says by how much:
coarsening never merges across the 0.5 decision threshold when the counts on each side allow it, so
pooled accuracy and balanced accuracy are exact (the same as the n-weighted site figures) or left
out with their bounds and the reason; Brier score, calibration error and AUROC carry hard bounds
from the groups' extents, and calibration is left out when those bounds are too wide to mean
anything. A site whose histogram lost a class to suppression is left out of the pool, and the pool
says so, rather than pooling one class of it (which printed accuracy 1.00 and prevalence 0.000).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    "n_sites_sent",
    "sites_left_out",
    "coverage",
    "bounds",
    "omitted",
    "from_sites",
)
"""Every key `pooled_panel` returns: the figures, which sites they cover, bounds and omissions."""

THRESHOLD = 0.5
"""The decision threshold of accuracy and balanced accuracy, per site and pooled."""

CALIBRATION_TOLERANCE = 0.05
"""Widest bounds interval at which a pooled Brier score or calibration error is still stated."""


def threshold_edge(bins: int, threshold: float = THRESHOLD) -> int | None:
    """The bin edge at the decision threshold, or None when the threshold falls inside a bin."""
    edge = round(threshold * bins)
    return edge if abs(threshold * bins - edge) < 1e-9 and 0 < edge < bins else None


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
        """Merge adjacent bins so every released count is 0 or at least `min_cell`.

        Groups never span the 0.5 threshold edge when each side of it holds 0 or at least
        `min_cell` of a class, so pooled accuracy is exact from the released groups.
        """
        if min_cell < 1:
            raise ValueError(f"min_cell must be >= 1, got {min_cell}")
        split = threshold_edge(self.bins)
        pos, pos_sup = _coarsen_counts(self.pos_counts, min_cell, split)
        neg, neg_sup = _coarsen_counts(self.neg_counts, min_cell, split)
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


def _greedy_spans(counts: Sequence[int], lo: int, hi: int, min_cell: int) -> list[list[int]]:
    """Greedy left-to-right merge of bins lo..hi-1 whose total is 0 or at least `min_cell`.

    Non-empty groups open at a non-empty bin and close as soon as they hold `min_cell`; a trailing
    remainder below `min_cell` joins the previous group. Returns [start, end_inclusive, count].
    """
    spans: list[list[int]] = []
    start: int | None = None
    acc = 0
    last_nonzero = -1
    for b in range(lo, hi):
        c = counts[b]
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
    return spans


def _coarsen_counts(
    counts: Sequence[int], min_cell: int, split: int | None = None
) -> tuple[Groups, bool]:
    """Greedy merge (see `_greedy_spans`); runs of empty bins become explicit 0-count groups.

    With `split`, bins below and from it are merged separately when each side holds 0 or at least
    `min_cell` (otherwise one side would name a count under the minimum cell, and the two merge).
    Explicit zero groups keep a group's implied extent (up to the next group's start) from
    spreading counts over empty bins.
    Returns (groups, suppressed); a class whose total is below `min_cell` (but not 0) is suppressed.
    """
    total = sum(counts)
    if total == 0:
        return ((0, 0),), False
    if total < min_cell:
        return (), True
    segments = [(0, len(counts))]
    if split is not None and 0 < split < len(counts):
        below = sum(counts[:split])
        above = total - below
        if all(side == 0 or side >= min_cell for side in (below, above)):
            segments = [(0, split), (split, len(counts))]
    spans = [span for lo, hi in segments for span in _greedy_spans(counts, lo, hi, min_cell)]
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


Span = tuple[float, float, int]
"""A released group as (lowest score, highest score, count): its scores lie somewhere in between."""


def _spans(groups: Groups, bins: int) -> list[Span]:
    """Score extent and count of every non-empty group."""
    out: list[Span] = []
    for i, (start, count) in enumerate(groups):
        end = groups[i + 1][0] if i + 1 < len(groups) else bins
        if count:
            out.append((start / bins, end / bins, count))
    return out


def _threshold_bounds(spans: list[Span], threshold: float) -> tuple[int, int]:
    """(count surely at or above the threshold, count whose side of it the groups cannot tell)."""
    sure = sum(c for lo, _, c in spans if lo >= threshold - 1e-12)
    unknown = sum(c for lo, hi, c in spans if lo < threshold - 1e-12 and hi > threshold + 1e-12)
    return sure, unknown


def _auroc_bounds(pos: list[Span], neg: list[Span], n_pos: int, n_neg: int) -> list[float]:
    """AUROC when every pair the groups cannot order goes against, then for, the positive."""
    sure = unknown = 0
    for plo, phi, pc in pos:
        for nlo, nhi, nc in neg:
            if plo >= nhi - 1e-12:
                sure += pc * nc
            elif phi > nlo + 1e-12:
                unknown += pc * nc
    return [sure / (n_pos * n_neg), (sure + unknown) / (n_pos * n_neg)]


def _brier_bounds(pos: list[Span], neg: list[Span], n: int) -> list[float]:
    """Brier score with each group's scores at the end of its extent that helps, then hurts."""
    lo = sum(c * (1.0 - h) ** 2 for _, h, c in pos) + sum(c * lo_**2 for lo_, _, c in neg)
    hi = sum(c * (1.0 - lo_) ** 2 for lo_, _, c in pos) + sum(c * h**2 for _, h, c in neg)
    return [lo / n, hi / n]


def _ece_bounds(pos: list[Span], neg: list[Span], n: int) -> tuple[float, list[float]] | None:
    """ECE on the per-site panel's bins (estimate, bounds), or None when a group spans two bins."""
    label = np.zeros(ECE_BINS)
    s_lo, s_mid, s_hi = np.zeros(ECE_BINS), np.zeros(ECE_BINS), np.zeros(ECE_BINS)
    for spans, y in ((pos, 1.0), (neg, 0.0)):
        for lo, hi, c in spans:
            k = min(int(lo * ECE_BINS + 1e-9), ECE_BINS - 1)
            if hi > (k + 1) / ECE_BINS + 1e-9:
                return None
            label[k] += c * y
            s_lo[k] += c * lo
            s_mid[k] += c * (lo + hi) / 2.0
            s_hi[k] += c * hi
    gap_a, gap_b = label - s_hi, label - s_lo  # the bin's sum of (y - s) lies in [gap_a, gap_b]
    smallest = np.where((gap_a <= 0) & (gap_b >= 0), 0.0, np.minimum(abs(gap_a), abs(gap_b)))
    largest = np.maximum(abs(gap_a), abs(gap_b))
    estimate = float(np.abs(label - s_mid).sum() / n)
    return estimate, [float(smallest.sum() / n), float(largest.sum() / n)]


def left_out_sites(records: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Sites whose released histogram record lost a class to suppression (empty group lists)."""
    return sorted(
        site
        for site, r in records.items()
        if r and (not r.get("pos_counts") or not r.get("neg_counts"))
    )


def coverage_text(covered: int, sent: int, left_out: Sequence[str] | int) -> str:
    """Which sites a pooled figure covers; `left_out` names the sites, or only counts them."""
    count = left_out if isinstance(left_out, int) else len(left_out)
    whose = "whose histogram has" if count == 1 else "whose histograms have"
    if isinstance(left_out, int):
        which = f"{left_out} left out, {whose}"
    else:
        which = f"left out {', '.join(left_out)}, {whose}"
    return (
        f"{covered} of {sent} sites: {which} a class under the minimum cell size (suppressed), "
        "so pooling the other class alone would misstate prevalence and accuracy"
    )


def pooled_coverage(pooled: Mapping[str, Any], histograms: Mapping[str, Any]) -> str | None:
    """The pool's coverage, naming the left-out sites from their released histogram records."""
    text = pooled.get("coverage")
    if not text or pooled.get("sites_left_out"):
        return text
    names = left_out_sites(histograms)
    sent, covered = int(pooled.get("n_sites_sent") or 0), int(pooled.get("n_sites") or 0)
    if names and len(names) == sent - covered:
        return coverage_text(covered, sent, names)
    return str(text)


def _from_sites(
    key: str, panels: Mapping[str, Mapping[str, Any]] | None, covered: Sequence[str]
) -> float | None:
    """The exact pooled value of a mean over rows, from the covered sites' own panels, or None."""
    if panels is None or not covered or any(site not in panels for site in covered):
        return None
    value, missing = n_weighted({site: panels[site] for site in covered}, key)
    return value if not missing else None


def pooled_panel(
    histograms: Sequence[CoarseHistogram] | Mapping[str, CoarseHistogram],
    bins: int,
    *,
    fdr: float = 0.1,
    site_panels: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Pooled metrics across sites from released histograms only (keys: `POOLED_KEYS`).

    `histograms` is a list, or a mapping from site name so omissions can name the sites. A site
    whose histogram lost a class to the minimum cell is left out of every pooled figure (pooling
    its other class alone would print a prevalence and accuracy no site has); `coverage` says so.
    Accuracy and balanced accuracy at 0.5 are stated only when the groups tell every row's side of
    the threshold — then they equal the n-weighted site figures exactly; otherwise they are None
    and `omitted` holds the reason, `bounds` the interval they lie in. AUROC ties within a group
    count one half (`bounds` gives the interval over all orderings the groups allow); Brier and ECE
    (on the per-site panel's bins) use group midpoints and are omitted when their bounds are wider
    than `CALIBRATION_TOLERANCE`. AUPRC and recall at FDR are at bin resolution.

    Accuracy and Brier are means over rows, so with `site_panels` (the sites' own panels, keyed
    like `histograms`) a figure the groups cannot resolve is taken exactly as the n-weighted site
    figure when every covered site sent it; `from_sites` lists such figures.
    """
    names_known = isinstance(histograms, Mapping)
    named = (
        dict(histograms)
        if isinstance(histograms, Mapping)
        else {str(i): h for i, h in enumerate(histograms)}
    )
    for h in named.values():
        if h.bins != bins:
            raise ValueError(f"every histogram must have {bins} bins, one has {h.bins}")
    complete = {k: h for k, h in named.items() if not (h.pos_suppressed or h.neg_suppressed)}
    left_out = sorted(set(named) - set(complete))
    out: dict[str, Any] = dict.fromkeys(POOLED_KEYS)
    out["n_sites"] = float(len(complete))
    out["n_sites_sent"] = float(len(named))
    out["sites_left_out"] = left_out if names_known else []
    out["bounds"] = {}
    out["from_sites"] = []
    omitted: dict[str, str] = {}
    out["omitted"] = omitted
    if left_out:
        out["coverage"] = coverage_text(
            len(complete), len(named), left_out if names_known else len(left_out)
        )
    covered = sorted(complete) if names_known else []
    pos = np.zeros(bins)
    neg = np.zeros(bins)
    pos_spans: list[Span] = []
    neg_spans: list[Span] = []
    for h in complete.values():
        p, q = h.expand()
        pos += p
        neg += q
        pos_spans += _spans(h.pos_groups, bins)
        neg_spans += _spans(h.neg_groups, bins)
    n_pos = sum(c for _, _, c in pos_spans)
    n_neg = sum(c for _, _, c in neg_spans)
    n = n_pos + n_neg
    out["n"] = float(n)
    if n <= 0:
        reason = "no site released a histogram with both classes" if named else "no histograms"
        for key in ("prevalence", "accuracy", "auroc", "auprc", "balanced_accuracy", "brier"):
            omitted[key] = reason
        omitted["ece"] = reason
        return out
    bounds: dict[str, list[float]] = {}
    out["bounds"] = bounds
    mid = (np.arange(bins) + 0.5) / bins
    out["prevalence"] = n_pos / n

    pos_above, pos_unknown = _threshold_bounds(pos_spans, THRESHOLD)
    neg_above, neg_unknown = _threshold_bounds(neg_spans, THRESHOLD)
    neg_below = n_neg - neg_above - neg_unknown
    side_reason = (
        "a site's histogram merges scores from both sides of the 0.5 threshold (a count there "
        "is under its minimum cell size), so the pool cannot tell how many rows were classed "
        "correctly"
        if threshold_edge(bins) is not None
        else f"0.5 falls inside a histogram bin ({bins} bins), so the pool cannot tell how many "
        "rows were classed correctly"
    )
    correct = pos_above + neg_below
    bounds["accuracy"] = [correct / n, (correct + pos_unknown + neg_unknown) / n]
    if pos_unknown + neg_unknown == 0:
        out["accuracy"] = correct / n
    elif (exact := _from_sites("accuracy", site_panels, covered)) is not None:
        out["accuracy"] = exact
        out["from_sites"].append("accuracy")
    else:
        omitted["accuracy"] = side_reason
    if n_pos > 0 and n_neg > 0:
        tpr = [pos_above / n_pos, (pos_above + pos_unknown) / n_pos]
        tnr = [neg_below / n_neg, (neg_below + neg_unknown) / n_neg]
        bounds["balanced_accuracy"] = [(tpr[0] + tnr[0]) / 2.0, (tpr[1] + tnr[1]) / 2.0]
        if pos_unknown + neg_unknown == 0:
            out["balanced_accuracy"] = (tpr[0] + tnr[0]) / 2.0
        else:
            omitted["balanced_accuracy"] = side_reason
    else:
        omitted["balanced_accuracy"] = "the pooled sites hold only one class"

    bounds["brier"] = _brier_bounds(pos_spans, neg_spans, n)
    brier = float(((pos * (1.0 - mid) ** 2).sum() + (neg * mid**2).sum()) / n)
    if (exact := _from_sites("brier", site_panels, covered)) is not None:
        out["brier"] = exact
        out["from_sites"].append("brier")
    elif bounds["brier"][1] - bounds["brier"][0] <= CALIBRATION_TOLERANCE:
        out["brier"] = brier
    else:
        omitted["brier"] = (
            "the sites' merged histogram groups leave it uncertain by more than "
            f"{CALIBRATION_TOLERANCE}"
        )
    ece = _ece_bounds(pos_spans, neg_spans, n)
    if ece is None:
        omitted["ece"] = (
            f"a site's histogram merges scores across the {ECE_BINS} calibration bins, so the "
            "pool cannot compute calibration error on the sites' bins"
        )
    else:
        bounds["ece"] = ece[1]
        if ece[1][1] - ece[1][0] <= CALIBRATION_TOLERANCE:
            out["ece"] = ece[0]
        else:
            omitted["ece"] = (
                "the sites' histogram groups leave it uncertain by more than "
                f"{CALIBRATION_TOLERANCE}"
            )
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
        neg_cum = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
        out["auroc"] = float((pos * (neg_cum + 0.5 * neg)).sum() / (n_pos * n_neg))
        bounds["auroc"] = _auroc_bounds(pos_spans, neg_spans, n_pos, n_neg)
    else:
        omitted["auroc"] = "the pooled sites hold only one class"
    return out


def n_weighted(panels: Mapping[str, Mapping[str, Any]], key: str) -> tuple[float | None, list[str]]:
    """The n-weighted mean of one metric over the sites that sent it, and the sites that did not.

    For a mean over rows (accuracy, Brier, prevalence) this is the pooled figure exactly; for
    AUROC it is each site ranking its own rows, a different quantity from a pooled AUROC.
    """
    total = weight = 0.0
    missing = []
    for site, panel in sorted(panels.items()):
        value, n = (panel or {}).get(key), (panel or {}).get("n")
        if isinstance(value, int | float) and isinstance(n, int | float) and n > 0:
            total += float(value) * float(n)
            weight += float(n)
        else:
            missing.append(site)
    return (total / weight if weight else None), missing
