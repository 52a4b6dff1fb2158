"""Score histograms: what a site may release for pooled metrics.

A site counts its positives and negatives per equal-width score bin (``score_histogram``), and
releases only the coarsened histogram (``CoarseHistogram``): adjacent bins merged until every
released count is 0 or at least the site's minimum cell size, never across the 0.5 decision
threshold when the counts on each side allow it, so that pooled accuracy stays exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedward.common.metric_conventions import THRESHOLD, checked_scores


def threshold_edge(bins: int, threshold: float = THRESHOLD) -> int | None:
    """The bin edge at the decision threshold, or None when the threshold falls inside a bin."""
    edge = round(threshold * bins)
    return edge if abs(threshold * bins - edge) < 1e-9 and 0 < edge < bins else None


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
    y, s = checked_scores(y_true, scores)
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
