"""The ROC summary of one attack's scores at one site, with the intervals it is reported with.

AUC with a DeLong interval (DeLong, DeLong, Clarke-Pearson 1988; fast form of Sun & Xu 2014) on
the logit scale, TPR at FPR 10/1/0.1 % with Clopper-Pearson intervals (Clopper & Pearson 1934),
the attacker's advantage max(TPR − FPR) (Yeom et al. 2018), and the ROC kept as a histogram of
rank-transformed scores, coarsened like every other histogram fedward releases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats

from fedward.common.audit_keys import FPR_LEVELS
from fedward.common.score_histograms import CoarseHistogram, ScoreHistogram, score_histogram

AUC_MIN_PER_CLASS = 2


def check_confidence(confidence: float) -> None:
    """A confidence level outside (0.5, 1) is a caller's bug: every interval and bound says so."""
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")


def nonmembers_needed(fpr: float) -> int:
    """⌈1/f⌉: below that many non-members the empirical FPR cannot be f (one false positive
    already exceeds it), so a TPR "at FPR f" would be a TPR at FPR 0 in disguise."""
    return math.ceil(1.0 / fpr - 1e-9)


@dataclass(frozen=True)
class TprAtFpr:
    """TPR at one FPR level with a Clopper-Pearson interval, or None and why the site's size
    cannot support that level."""

    fpr: float
    tpr: float | None
    lo: float | None
    hi: float | None
    nonmembers_needed: int
    supported: bool


@dataclass(frozen=True)
class RocSummary:
    """One attack's ROC at one site; ``histogram`` is exact and stays at the site."""

    n_members: int
    n_nonmembers: int
    auc: float
    auc_lo: float | None
    auc_hi: float | None
    advantage: float
    tpr_at_fpr: tuple[TprAtFpr, ...]
    histogram: ScoreHistogram = field(repr=False)

    def coarse_histogram(self, min_cell: int) -> CoarseHistogram:
        """The releasable ROC: rank-score counts, every count 0 or at least ``min_cell``."""
        return self.histogram.coarsen(min_cell)

    def tpr(self, fpr: float) -> TprAtFpr:
        for t in self.tpr_at_fpr:
            if math.isclose(t.fpr, fpr):
                return t
        raise KeyError(f"no TPR at FPR {fpr}; levels are {[t.fpr for t in self.tpr_at_fpr]}")


def _roc_counts(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (TP, FP) counts at every distinct threshold "score ≥ t", from (0, 0) down."""
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], is_member[order]
    tp, fp = np.cumsum(m), np.cumsum(~m)
    last = np.r_[s[1:] != s[:-1], True]  # a tie group is one threshold
    return np.r_[0, tp[last]], np.r_[0, fp[last]]


def auc_delong(
    scores: np.ndarray, is_member: np.ndarray, *, confidence: float
) -> tuple[float, float | None, float | None]:
    """AUC (ties count one half) and its DeLong interval, computed on the logit scale.

    The logit transform keeps the interval inside (0, 1) and fixes the normal approximation's
    undercoverage near 0 or 1. The interval is None with fewer than 2 rows in a class, and
    degenerates to [AUC, AUC] at perfect separation (AUC 0 or 1), where DeLong's variance is 0.
    """
    check_confidence(confidence)
    s = np.asarray(scores, dtype=np.float64)
    member = np.asarray(is_member, dtype=bool)
    pos, neg = s[member], s[~member]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        raise ValueError("AUC needs members and non-members")
    ranks = stats.rankdata(np.r_[pos, neg])
    # Placement values (Sun & Xu 2014): V10_i = share of non-members below member i (ties ½).
    v10 = (ranks[:m] - stats.rankdata(pos)) / n
    v01 = 1.0 - (ranks[m:] - stats.rankdata(neg)) / m
    auc = float(v10.mean())
    if m < AUC_MIN_PER_CLASS or n < AUC_MIN_PER_CLASS:
        return auc, None, None
    var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    if auc <= 0.0 or auc >= 1.0 or var <= 0.0:
        return auc, auc, auc
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    center = float(special.logit(auc))
    half = z * math.sqrt(var) / (auc * (1.0 - auc))
    return auc, float(special.expit(center - half)), float(special.expit(center + half))


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes in n trials."""
    check_confidence(confidence)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def roc_summary(
    scores: np.ndarray,
    is_member: np.ndarray,
    *,
    confidence: float = 0.95,
    bins: int = 20,
    fpr_levels: Sequence[float] = FPR_LEVELS,
) -> RocSummary:
    """AUC with CI, TPR at each FPR level with CI, advantage and rank histogram for any scores.

    TPR at FPR f is the highest TPR over thresholds whose empirical FPR is at most f; it needs at
    least ⌈1/f⌉ non-members, otherwise it is None. Its Clopper-Pearson interval treats the
    threshold as fixed (the threshold is chosen on the non-members, so it is slightly optimistic).
    """
    check_confidence(confidence)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    member = np.asarray(is_member, dtype=bool).reshape(-1)
    if s.shape != member.shape:
        raise ValueError(f"scores has {s.size} rows but is_member has {member.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_pos, n_neg = int(member.sum()), int((~member).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC needs members and non-members")
    auc, auc_lo, auc_hi = auc_delong(s, member, confidence=confidence)
    tp, fp = _roc_counts(s, member)
    advantage = float(np.max(tp / n_pos - fp / n_neg))
    levels: list[TprAtFpr] = []
    for f in fpr_levels:
        needed = nonmembers_needed(f)
        if n_neg < needed:
            levels.append(TprAtFpr(f, None, None, None, needed, supported=False))
            continue
        allowed = math.floor(f * n_neg + 1e-9)
        hits = int(tp[np.searchsorted(fp, allowed, side="right") - 1])
        lo, hi = clopper_pearson(hits, n_pos, confidence)
        levels.append(TprAtFpr(f, hits / n_pos, lo, hi, needed, supported=True))
    ranks = (stats.rankdata(s) - 1.0) / max(s.size - 1, 1)
    histogram = score_histogram(member.astype(np.int64), ranks, bins)
    return RocSummary(
        n_members=n_pos,
        n_nonmembers=n_neg,
        auc=auc,
        auc_lo=auc_lo,
        auc_hi=auc_hi,
        advantage=advantage,
        tpr_at_fpr=tuple(levels),
        histogram=histogram,
    )
