"""Pooled metrics across sites, computed from their released score histograms only.

The coordinator never sees a raw score: it expands each released group uniformly over its bins
and computes the panel from the summed histograms. Merged bins make pooled metrics an
approximation, so every pooled figure that can be off says by how much: pooled accuracy and
balanced accuracy are exact (the same as the n-weighted site figures) or left out with their
bounds and the reason; Brier score, calibration error and AUROC carry hard bounds from the
groups' extents, and calibration is left out when those bounds are too wide to mean anything. A
site whose histogram lost a class to suppression is left out of the pool, and the pool says so,
rather than pooling one class of it (which printed accuracy 1.00 and prevalence 0.000).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedward.common.metric_conventions import ECE_BINS, FIGURE_KEYS, THRESHOLD
from fedward.common.score_histograms import CoarseHistogram, Groups, threshold_edge

POOLED_KEYS = (
    *FIGURE_KEYS,
    "n_sites",
    "n_sites_sent",
    "sites_left_out",
    "coverage",
    "bounds",
    "omitted",
    "from_sites",
)
"""Every key `pooled_panel` returns: the figures, which sites they cover, bounds and omissions."""

CALIBRATION_TOLERANCE = 0.05
"""Widest bounds interval at which a pooled Brier score or calibration error is still stated."""


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
