"""Membership-inference audits a site runs on the model it is about to release.

DESIGN.md asks that a model leave a site only with its DP guarantee AND an audit attached: the
accountant's ε is an upper bound from a proof, an attack gives what an adversary actually achieves,
and a canary audit gives an empirical lower bound that contradicts the proof when the
implementation is broken. Members are the site's training rows; non-members its audit split (rows
never trained on, never the sealed test split). Everything here runs inside the site and works on
arrays and callbacks only (``Logits``, ``TrainFn``), so any model and any DP training plug in.

Attacks, each scoring "higher = more likely a member":

* Loss / confidence threshold (Yeom, Giacomelli, Fredrikson, Jha 2018, "Privacy Risk in Machine
  Learning: Analyzing the Connection to Overfitting"): the score is φ, the logit of the target's
  probability for the true label (``logit_confidence``), i.e. minus the loss, monotonically.
* LiRA (Carlini, Chien, Nasr, Song, Terzis, Tramèr 2022, "Membership Inference Attacks From First
  Principles"): R reference models the site trains itself on random halves of the pool
  (members ∪ non-members), split as in the paper's code so that every example is IN exactly
  ⌊R/2⌋ of them. Offline LiRA: one-sided Gaussian test of the target's φ against the example's OUT
  φ; online LiRA: Gaussian likelihood ratio IN vs OUT, when every example has both. Below
  ``PER_EXAMPLE_VARIANCE_MIN`` models per side the variances are global (pooled), as the paper
  recommends for few reference models.

One-run canary audit (Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One (1) Training
Run", arXiv:2305.08846): m canaries with flipped labels, each included with probability 1/2, one
training run; guess the r lowest-scoring canaries OUT (the paper's k+ = 0, k- = r: see
``CANARY_GUESS_FRACTIONS``), count the correct guesses, and bound ε from below with the paper's
result for (ε, δ)-DP (see ``one_run_p_value``). At small sites power is scarce: the bound needs
hundreds of guesses, and δ (large there) enters it as 2mδ. So canaries are not only flipped
copies of real rows but also synthetic ones beside the training rows (``canary_sources``,
``synthetic_canaries``), m is chosen from the sizes and δ (``default_canary_count``), and guess
counts that could certify nothing are left out of the Bonferroni grid (``canary_guess_grid``). The canary model trains on the site's training rows plus
the included canaries, so it is not the released model: the audit tests the training procedure,
whose DP guarantee holds for every input, and its ε is the procedure's (fixed σ, q and steps).

ROC summary: AUC with a DeLong interval (DeLong, DeLong, Clarke-Pearson 1988; fast form of Sun &
Xu 2014) on the logit scale, TPR at FPR 10/1/0.1 % with Clopper-Pearson intervals (Clopper &
Pearson 1934), the attacker's advantage max(TPR − FPR) (Yeom et al.), and the ROC released as a
histogram of rank-transformed scores coarsened like every other histogram fedward releases.

What leaves: ``SiteAudit.public`` only — scalars, coarsened counts and notes; never a score, an
index or a feature of a row. It is NOT a DP output (list it among the site's non-DP outputs), and
notes name only counts, with counts below the minimum cell size written as "fewer than N".
Data problems never raise from ``audit_site``: the part that cannot run is skipped and a note says
why. Wrong arguments (confidence, δ, bins, ...) are programming errors and raise ValueError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import special, stats

from fedward.common.audit_keys import (
    ATTACK_SUFFIXES,
    ATTACKS,
    CANARY_SUFFIXES,
    FPR_LEVELS,
    PUBLIC_KEYS,
    PUBLIC_SUFFIXES,
    SITE_SUFFIXES,
    fpr_label,
)
from fedward.common.metrics import CoarseHistogram, ScoreHistogram, score_histogram

__all__ = [
    "ATTACKS",
    "ATTACK_SUFFIXES",
    "CANARY_SUFFIXES",
    "FPR_LEVELS",
    "PUBLIC_KEYS",
    "PUBLIC_SUFFIXES",
    "SITE_SUFFIXES",
    "AuditNote",
    "CanaryAudit",
    "CanarySources",
    "LiraScores",
    "Logits",
    "RocSummary",
    "SiteAudit",
    "TprAtFpr",
    "TrainFn",
    "auc_delong",
    "audit_site",
    "canary_audit",
    "canary_epsilon_max",
    "canary_guess_grid",
    "canary_sources",
    "clopper_pearson",
    "default_canary_count",
    "lira_from_confidences",
    "lira_scores",
    "logit_confidence",
    "nonmembers_needed",
    "one_run_audit",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
    "public_keys",
    "reference_split",
    "roc_summary",
    "synthetic_canaries",
]
"""The vocabulary (``ATTACKS`` ... ``PUBLIC_KEYS``) lives in ``fedward.common.audit_keys``, shared
with the egress allow-list and the coordinator's report; it is re-exported here."""

Logits = Callable[[np.ndarray], np.ndarray]
"""A model's logits: features (n, d) -> one logit per row (n,)."""

TrainFn = Callable[[np.ndarray, np.ndarray, int], Logits]
"""``train_fn(x, y, seed)`` trains a fresh model as the site trains the released one (same
architecture, same DP settings) and returns its logits function."""

PublicValue = float | int | bool | str | list[int] | list[str] | None

CANARY_GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.25, 0.5)
"""Candidate numbers of guesses r, as a fraction of m; every guess is "OUT" and goes to the r
lowest-scoring canaries (at most m/2 of them, about as many as are left out). A flipped canary
left out is predicted with its row's own label by any model that fits its rows, so a very low
score is strong evidence of OUT; a high score is weak evidence of IN, because a model that
generalises badly also gives many left-out canaries their flipped label. Steinke et al. allow
any guesses (k+ IN, k- OUT); fedward fixes k+ = 0 on that ground, before seeing any score.
``canary_guess_grid`` drops counts that could certify nothing at (m, δ, confidence); the bound is
Bonferroni-corrected over the counts that remain, so choosing the best after the fact is valid."""

MAX_CANARIES = 2000
"""At most this many canaries: every one costs the canary model a training row (half of them) and
past a few thousand guesses the bound grows only slowly (δ = 1e-5: 4.6 with 1,000, 5.3 with 2,000)."""
MIN_CANARIES = 20
SYNTHETIC_CANARIES_PER_MEMBER = 1.0
"""Synthetic canaries per training row at most: each joins the canary model's training set with
probability 1/2, so in expectation it gets one synthetic canary for every two training rows."""
SYNTHETIC_CANARY_NOISE = 0.15
"""A synthetic canary's perturbation, in standard deviations of each feature over the training
rows: enough to make each canary its own point, small enough that it stays beside its base row
(larger perturbations let the model learn "perturbed points take the other label", which then
predicts left-out canaries too and weakens the audit)."""
CANARY_COUNTS = (20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000)
"""The canary counts a site's default is chosen among (plus the most its rows allow)."""
CANARY_CEILING_TOLERANCE = 0.05
MIN_REFERENCE_MODELS = 2
MIN_REFERENCE_ROWS = 20
PER_EXAMPLE_VARIANCE_MIN = 32
"""IN (or OUT) models per example from which LiRA fits per-example variances instead of global."""

MIN_VARIANCE = 1e-6
AUC_MIN_PER_CLASS = 2


def _fpr_text(fpr: float) -> str:
    return f"{fpr * 100:g}%"


def nonmembers_needed(fpr: float) -> int:
    """⌈1/f⌉: below that many non-members the empirical FPR cannot be f (one false positive
    already exceeds it), so a TPR "at FPR f" would be a TPR at FPR 0 in disguise."""
    return math.ceil(1.0 / fpr - 1e-9)


def public_keys() -> tuple[str, ...]:
    """Every key ``SiteAudit.public`` can produce: build the egress allow-list from this."""
    return PUBLIC_KEYS


def _derive_seed(seed: int, *parts: object) -> int:
    """A 32-bit seed from the audit seed and names (SHA-256, stable across processes)."""
    text = ":".join(str(p) for p in ("fedward-mia", seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _check_confidence(confidence: float) -> None:
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")


# ---- notes: plain language, counts only ------------------------------------------------------


def _count_text(n: int, min_cell: int) -> str:
    return str(n) if n == 0 or n >= min_cell else f"fewer than {min_cell}"


@dataclass(frozen=True)
class AuditNote:
    """A plain-language note; ``counts`` (of people or rows) are filled in at rendering time so
    that a count below the minimum cell size is never written out."""

    template: str
    counts: Mapping[str, int] = field(default_factory=dict)

    def render(self, min_cell: int) -> str:
        return self.template.format(**{k: _count_text(v, min_cell) for k, v in self.counts.items()})


# ---- scores ----------------------------------------------------------------------------------


def logit_confidence(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """φ = logit of the model's probability for the true label: z if y = 1, −z if y = 0.

    The attacks' common currency: unbounded (no saturation at probability 1) and close to Gaussian
    across training runs, which LiRA's fits assume.
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(y).reshape(-1)
    if z.shape != labels.shape:
        raise ValueError(f"logits has {z.size} rows but y has {labels.size}")
    return np.where(labels == 1, z, -z)


@dataclass(frozen=True)
class LiraScores:
    """LiRA scores for every pool row; ``online`` is None when some row lacks IN or OUT models."""

    offline: np.ndarray = field(repr=False)
    """z = (φ − μ_out) / σ_out: the one-sided test's statistic (its p-value ranks rows alike)."""
    online: np.ndarray | None = field(repr=False)
    """log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²): the likelihood ratio test."""
    n_reference: int
    global_variance: bool


def lira_from_confidences(
    target: np.ndarray, reference: np.ndarray, reference_in: np.ndarray
) -> LiraScores:
    """Offline and online LiRA from φ of the target (n,) and of R reference models (R, n).

    ``reference_in[j, i]`` says whether row i was in reference model j's training set. Offline
    needs ≥ 1 OUT model per row, online ≥ 1 IN and ≥ 1 OUT; ValueError when offline is impossible.
    """
    phi = np.asarray(target, dtype=np.float64).reshape(-1)
    ref = np.asarray(reference, dtype=np.float64)
    inside = np.asarray(reference_in, dtype=bool)
    if ref.ndim != 2 or ref.shape != inside.shape or ref.shape[1] != phi.size:
        raise ValueError("reference φ and membership must both be (models, rows) matching target")
    n_in = inside.sum(axis=0)
    n_out = ref.shape[0] - n_in
    if n_out.min(initial=1) < 1 or phi.size == 0:
        raise ValueError("offline LiRA needs at least one OUT reference model for every row")

    def fit(mask: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(mask, ref, 0.0).sum(axis=0) / counts
        resid = np.where(mask, ref - mean[None, :], 0.0)
        per_example = counts.min() >= PER_EXAMPLE_VARIANCE_MIN
        if per_example:
            var = (resid**2).sum(axis=0) / (counts - 1)
        else:
            # Pooled within-example variance: each row's mean costs one degree of freedom.
            dof = max(int(counts.sum() - counts.size), 1)
            var = np.full(counts.size, (resid**2).sum() / dof)
        return mean, np.sqrt(np.maximum(var, MIN_VARIANCE)), not per_example

    mu_out, sd_out, global_out = fit(~inside, n_out)
    # The one-sided test's statistic: Φ(z) ranks rows exactly as z does, and z does not round
    # to 1 (or log Φ to 0) for the very memorised rows, where ties would hide them.
    offline = (phi - mu_out) / sd_out
    online = None
    global_in = True
    if n_in.min() >= 1:
        mu_in, sd_in, global_in = fit(inside, n_in)
        online = stats.norm.logpdf(phi, mu_in, sd_in) - stats.norm.logpdf(phi, mu_out, sd_out)
    return LiraScores(offline, online, ref.shape[0], global_out or global_in)


def reference_split(n_rows: int, n_reference: int, rng: np.random.Generator) -> np.ndarray:
    """(R, n) IN mask: every row IN exactly ⌊R/2⌋ models, which ones at random (Carlini et al.)."""
    order = rng.random((n_reference, n_rows)).argsort(axis=0)
    return np.asarray(order < n_reference // 2)


def lira_scores(
    target_logits: Logits,
    train_fn: TrainFn,
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    *,
    n_reference: int,
    seed: int,
) -> LiraScores:
    """Train ``n_reference`` models on random halves of the pool and score every pool row."""
    if n_reference < MIN_REFERENCE_MODELS:
        raise ValueError(f"LiRA needs at least {MIN_REFERENCE_MODELS} reference models")
    split_rng = np.random.default_rng(_derive_seed(seed, "reference-split"))
    inside = reference_split(y_pool.size, n_reference, split_rng)
    reference = np.empty(inside.shape)
    for j in range(n_reference):
        logits = train_fn(x_pool[inside[j]], y_pool[inside[j]], _derive_seed(seed, "reference", j))
        reference[j] = logit_confidence(logits(x_pool), y_pool)
    target = logit_confidence(target_logits(x_pool), y_pool)
    if not (np.isfinite(reference).all() and np.isfinite(target).all()):
        raise ValueError("a model gave non-finite logits")
    return lira_from_confidences(target, reference, inside)


# ---- ROC summary -----------------------------------------------------------------------------


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
    _check_confidence(confidence)
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
    _check_confidence(confidence)
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
    _check_confidence(confidence)
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


# ---- one-run canary audit --------------------------------------------------------------------


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[≥ v of r guesses correct] for an (ε, δ)-DP algorithm, m canaries (Steinke et al. 2023).

    Their main result in its (ε, δ) form (Theorem 5.2 of arXiv:2305.08846; the computation of
    their Appendix D): with f(u) = P[Binomial(r, e^ε / (1 + e^ε)) ≥ u],

        P[W ≥ v] ≤ f(v) + 2 m δ · max_{i = 1..v} (f(v − i) − f(v)) / i.

    With δ = 0 this is the pure-DP bound f(v). m counts every randomised canary, guessed or not.
    """
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and delta in [0, 1], got {epsilon}, {delta}")
    q = float(special.expit(epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    i = np.arange(1, v + 1)
    between = stats.binom.sf(v - i - 1, r, q) - tail  # P[v − i ≤ Binomial < v]
    return min(tail + 2.0 * m * delta * float(np.max(between / i)), 1.0)


EPSILON_SEARCH_MAX = 100.0


def one_run_epsilon_lower_bound(m: int, r: int, v: int, delta: float, significance: float) -> float:
    """The largest ε whose (ε, δ)-DP hypothesis the outcome rejects at level ``significance``.

    0 when even ε = 0 is not rejected. Bisection as in the paper's Appendix D (the p-value grows
    with ε); capped at ``EPSILON_SEARCH_MAX``.
    """
    if not 0 < significance < 1:
        raise ValueError(f"significance must be in (0, 1), got {significance}")
    if one_run_p_value(m, r, v, 0.0, delta) > significance:
        return 0.0
    lo, hi = 0.0, 1.0
    while hi < EPSILON_SEARCH_MAX and one_run_p_value(m, r, v, hi, delta) <= significance:
        lo, hi = hi, 2.0 * hi
    if (
        hi >= EPSILON_SEARCH_MAX
        and one_run_p_value(m, r, v, EPSILON_SEARCH_MAX, delta) <= significance
    ):
        return EPSILON_SEARCH_MAX
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if one_run_p_value(m, r, v, mid, delta) <= significance:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-6:
            break
    return lo


@lru_cache(maxsize=4096)
def canary_guess_grid(m: int, delta: float, confidence: float) -> tuple[int, ...]:
    """Numbers of guesses r (all OUT, r ≤ m/2) tried by an m-canary audit at (δ, confidence).

    The candidates come from ``CANARY_GUESS_FRACTIONS``; an r whose guesses could not reject even
    ε = 0 when every one of them is right is dropped, and the drop repeats at the new Bonferroni
    level until the grid is stable. Such an r could never contribute a bound, yet it would cost
    every other r its share of the significance level: at small sites, with their large δ, that
    share decides what the audit can show. The grid depends only on (m, δ, confidence), never on
    the scores, so the Bonferroni bound over it stays exact.
    """
    grid = sorted({max(1, min(m // 2, round(f * m))) for f in CANARY_GUESS_FRACTIONS})
    while True:
        significance = (1.0 - confidence) / len(grid)
        useful = [r for r in grid if one_run_epsilon_lower_bound(m, r, r, delta, significance) > 0]
        if not useful or useful == grid:
            # Nothing can certify anything (tiny m): keep the largest r, which is the least bad.
            return tuple(useful) if useful else (grid[-1],)
        grid = useful


@lru_cache(maxsize=4096)
def canary_epsilon_max(m: int, delta: float, confidence: float) -> float:
    """The largest ε lower bound an m-canary audit can show: every guess correct, best r.

    Reported as the site's minimum detectable leak, "the largest ε this audit could certify": a
    claim above it cannot be refuted at this size, and a model that leaked everything would still
    be certified only at this ε. It depends on (m, δ, confidence) alone.
    """
    grid = canary_guess_grid(m, delta, confidence)
    significance = (1.0 - confidence) / len(grid)
    return max(one_run_epsilon_lower_bound(m, r, r, delta, significance) for r in grid)


@dataclass(frozen=True)
class CanaryAudit:
    """The one-run audit's outcome at the r that gave the largest bound (Bonferroni over the grid).

    ``k_plus`` / ``k_minus``: guesses IN / OUT (``k_plus`` is 0: see ``CANARY_GUESS_FRACTIONS``).
    """

    m: int
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    epsilon_lb: float
    confidence: float
    epsilon_max: float
    delta: float
    epsilon_claimed: float | None
    grid: tuple[int, ...]
    n_synthetic: int = 0
    """How many of the m canaries are synthetic (the rest are flipped copies of real rows)."""

    @property
    def exceeds_claim(self) -> bool | None:
        """True when the empirical lower bound contradicts the claimed ε: DP is broken."""
        if self.epsilon_claimed is None:
            return None
        return self.epsilon_lb > self.epsilon_claimed


def one_run_audit(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    epsilon_claimed: float | None = None,
    rng: np.random.Generator | None = None,
) -> CanaryAudit:
    """For each r of the grid, guess the r lowest-scoring canaries OUT; keep the best bound.

    Each r is tested at level (1 − confidence) / |grid|, so the reported bound holds at
    ``confidence`` whichever r wins. Ties in scores are broken at random (``rng``).
    """
    _check_confidence(confidence)
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    inside = np.asarray(included, dtype=bool).reshape(-1)
    if s.shape != inside.shape:
        raise ValueError(f"scores has {s.size} canaries but included has {inside.size}")
    m = s.size
    if m < 2:
        raise ValueError("the one-run audit needs at least 2 canaries")
    if not np.isfinite(s).all():
        raise ValueError("canary scores must be finite")
    shuffle = (rng or np.random.default_rng(0)).permutation(m)
    order = shuffle[np.argsort(-s[shuffle], kind="stable")]  # descending, ties at random
    ranked = inside[order]
    grid = canary_guess_grid(m, delta, confidence)
    significance = (1.0 - confidence) / len(grid)
    best: tuple[float, int, int] | None = None
    for r in grid:
        correct = int((~ranked[m - r :]).sum())
        eps = one_run_epsilon_lower_bound(m, r, correct, delta, significance)
        if best is None or eps > best[0]:
            best = (eps, r, correct)
    assert best is not None  # the grid is never empty
    eps, r, correct = best
    return CanaryAudit(
        m=m,
        k_plus=0,
        k_minus=r,
        guesses=r,
        correct=correct,
        epsilon_lb=eps,
        confidence=confidence,
        epsilon_max=canary_epsilon_max(m, delta, confidence),
        delta=delta,
        epsilon_claimed=epsilon_claimed,
        grid=grid,
    )


@dataclass(frozen=True)
class CanarySources:
    """Where an audit's m canaries come from, in the order they are drawn."""

    from_nonmembers: int
    """Flipped copies of audit rows: nobody is removed from the training set for them."""
    synthetic: int
    """Perturbed, flipped copies of pool rows (``synthetic_canaries``): added, displacing nobody."""
    from_members: int
    """Flipped copies of training rows, whose originals leave the canary model's training set."""

    @property
    def total(self) -> int:
        return self.from_nonmembers + self.synthetic + self.from_members


def canary_sources(
    n_members: int, n_nonmembers: int, n_canaries: int | None = None, *, synthetic: bool = True
) -> CanarySources:
    """The canaries' origins for an m-canary audit (``None``: the most this site supports).

    With ``synthetic`` (the default): the audit rows first, then synthetic canaries, at most
    ``SYNTHETIC_CANARIES_PER_MEMBER`` per training row (each joins the canary model's training set
    with probability 1/2), and only then training rows, so long as flipped rows stay at most half
    of the pool: a count that the audit rows and synthetic canaries can supply displaces no
    training row. Without: real rows only, audit rows first, at most half of the pool (the
    earlier behaviour). Never more than ``MAX_CANARIES``; fewer when the site is too small
    for ``n_canaries`` (the caller says so).
    """
    half = (n_members + n_nonmembers) // 2
    if synthetic:
        caps = (
            n_nonmembers,
            math.floor(SYNTHETIC_CANARIES_PER_MEMBER * n_members),
            max(0, half - n_nonmembers),
        )
    else:
        caps = (min(n_nonmembers, half), 0, max(0, half - n_nonmembers))
    left = min(MAX_CANARIES, sum(caps) if n_canaries is None else n_canaries)
    taken = []
    for cap in caps:
        taken.append(min(cap, left))
        left -= taken[-1]
    return CanarySources(*taken)


def default_canary_count(
    n_members: int, n_nonmembers: int, delta: float, confidence: float = 0.95
) -> int:
    """The number of canaries that gives this site the most audit power.

    The largest ε the audit can show (``canary_epsilon_max``) grows with m through the number of
    guesses, but the (ε, δ) bound's δ term grows with m too (2mδ): at small sites, whose δ is large,
    more canaries can lower it. So m is the largest count the rows allow (``canary_sources``)
    among ``CANARY_COUNTS``, unless a smaller one raises that ceiling by more than
    ``CANARY_CEILING_TOLERANCE``; within the tolerance more canaries win, because more guesses also
    help an attack that is not always right. The choice uses (sizes, δ, confidence) only, never the
    data, so the bound stays exact.
    """
    top = canary_sources(n_members, n_nonmembers).total
    if top < 2:
        return top
    counts = sorted({c for c in CANARY_COUNTS if c < top} | {top})
    ceilings = {c: canary_epsilon_max(c, delta, confidence) for c in counts if c >= 2}
    best = max(ceilings.values())
    return max(c for c, e in ceilings.items() if e >= (1.0 - CANARY_CEILING_TOLERANCE) * best)


def synthetic_canaries(
    x_rows: np.ndarray, y_rows: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n synthetic canaries: copies of the given rows (the training rows), each moved by its own
    Gaussian perturbation (``SYNTHETIC_CANARY_NOISE`` × the rows' per-feature standard deviation,
    clipped to their range) and given the opposite label; distinct base rows while they last.

    Each sits next to a training row the model fits, with the other label: left out, the model
    predicts the base row's label there; only memorising the canary turns that round. The
    perturbation makes every canary its own point, so no two canaries are the same row.
    """
    if n == 0:
        return np.zeros((0, x_rows.shape[1])), np.zeros(0, dtype=np.int64)
    rounds = -(-n // y_rows.size)
    base = np.concatenate([rng.permutation(y_rows.size) for _ in range(rounds)])[:n]
    scale = SYNTHETIC_CANARY_NOISE * x_rows.std(axis=0)
    x = x_rows[base] + rng.normal(0.0, 1.0, (n, x_rows.shape[1])) * scale
    x = np.clip(x, x_rows.min(axis=0), x_rows.max(axis=0))
    return x, (1 - y_rows[base]).astype(np.int64)


def canary_audit(
    train_fn: TrainFn,
    x_members: np.ndarray,
    y_members: np.ndarray,
    x_nonmembers: np.ndarray,
    y_nonmembers: np.ndarray,
    *,
    n_canaries: int,
    delta: float,
    confidence: float = 0.95,
    epsilon_claimed: float | None = None,
    seed: int,
    synthetic: bool = True,
) -> CanaryAudit:
    """Steinke et al.'s black-box audit with ONE call to ``train_fn``.

    Canaries (``canary_sources``): audit rows with flipped labels, then synthetic canaries
    (``synthetic_canaries``), then training rows with flipped labels, whose originals are removed
    from the training set. Each canary is included with probability 1/2, independently; a canary
    is scored by φ under its flipped label. ``synthetic=False`` uses real rows only.
    """
    rng = np.random.default_rng(_derive_seed(seed, "canaries"))
    n_mem, n_non = y_members.size, y_nonmembers.size
    top = canary_sources(n_mem, n_non, synthetic=synthetic).total
    if not 2 <= n_canaries <= top:
        raise ValueError(f"n_canaries must be in [2, {top}] at this size, got {n_canaries}")
    src = canary_sources(n_mem, n_non, n_canaries, synthetic=synthetic)
    from_non = rng.permutation(n_non)[: src.from_nonmembers]
    from_mem = rng.permutation(n_mem)[: src.from_members]
    x_syn, y_syn = synthetic_canaries(x_members, y_members, src.synthetic, rng)
    x_can = np.concatenate([x_nonmembers[from_non], x_syn, x_members[from_mem]])
    y_can = np.concatenate([1 - y_nonmembers[from_non], y_syn, 1 - y_members[from_mem]])
    included = rng.random(n_canaries) < 0.5
    keep = np.ones(n_mem, dtype=bool)
    keep[from_mem] = False
    x_train = np.concatenate([x_members[keep], x_can[included]])
    y_train = np.concatenate([y_members[keep], y_can[included]])
    order = rng.permutation(y_train.size)  # no position tells a canary from a member
    logits = train_fn(x_train[order], y_train[order], _derive_seed(seed, "canary-model"))
    scores = logit_confidence(logits(x_can), y_can)
    audit = one_run_audit(
        scores,
        included,
        delta=delta,
        confidence=confidence,
        epsilon_claimed=epsilon_claimed,
        rng=rng,
    )
    return dataclasses.replace(audit, n_synthetic=src.synthetic)


# ---- the site's audit ------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteAudit:
    """Everything a site's audit found; only ``public()`` may leave the site."""

    n_members: int
    n_nonmembers: int
    n_reference: int
    attacks: Mapping[str, RocSummary]
    canary: CanaryAudit | None
    note_items: tuple[AuditNote, ...]
    seconds: Mapping[str, float]
    confidence: float
    min_cell: int

    @property
    def notes(self) -> list[str]:
        """What the site's size or data could not support, in plain language (counts only)."""
        return self.render_notes(self.min_cell)

    def render_notes(self, min_cell: int) -> list[str]:
        out: list[str] = []
        for note in self.note_items:
            text = note.render(min_cell)
            if text not in out:
                out.append(text)
        return out

    def public(self, min_cell: int | None = None) -> dict[str, PublicValue]:
        """A flat dict of JSON-able values keyed ``mia_*`` (see ``PUBLIC_KEYS``), no row data.

        Histograms are coarsened to ``min_cell`` (default: the audit's); counts of rows below it
        are None, and notes write them as "fewer than N". Attacks or a canary audit that did not
        run have no keys; None marks a value that is undefined at this site's size.
        """
        cell = self.min_cell if min_cell is None else min_cell
        if cell < 1:
            raise ValueError(f"min_cell must be >= 1, got {cell}")

        def count(n: int) -> int | None:
            return n if n == 0 or n >= cell else None

        out: dict[str, PublicValue] = {
            "mia_n_members": count(self.n_members),
            "mia_n_nonmembers": count(self.n_nonmembers),
            "mia_n_reference": self.n_reference,
            "mia_attacks": [a for a in ATTACKS if a in self.attacks],
            "mia_confidence": self.confidence,
            "mia_seconds": round(self.seconds.get("total", 0.0), 3),
            "mia_reference_seconds": round(self.seconds.get("reference", 0.0), 3),
            "mia_canary_seconds": round(self.seconds.get("canary", 0.0), 3),
            "mia_notes": self.render_notes(cell),
        }
        for name in ATTACKS:
            roc = self.attacks.get(name)
            if roc is None:
                continue
            p = f"mia_{name}_"
            out[p + "auc"] = _round(roc.auc)
            out[p + "auc_lo"] = _round(roc.auc_lo)
            out[p + "auc_hi"] = _round(roc.auc_hi)
            out[p + "advantage"] = _round(roc.advantage)
            for t in roc.tpr_at_fpr:
                key = f"{p}tpr_at_fpr_{fpr_label(t.fpr)}"
                out[key], out[key + "_lo"], out[key + "_hi"] = (
                    _round(t.tpr),
                    _round(t.lo),
                    _round(t.hi),
                )
            for k, v in roc.coarse_histogram(cell).to_record().items():
                out[f"{p}hist_{k}"] = v
        c = self.canary
        if c is not None:
            out.update(
                {
                    "mia_canary_n": count(c.m),
                    "mia_canary_k_plus": c.k_plus,
                    "mia_canary_k_minus": c.k_minus,
                    "mia_canary_guesses": c.guesses,
                    "mia_canary_correct": count(c.correct),
                    "mia_canary_epsilon_lb": _round(c.epsilon_lb),
                    "mia_canary_epsilon_lb_confidence": c.confidence,
                    "mia_canary_epsilon_max": _round(c.epsilon_max),
                    "mia_canary_delta": c.delta,
                    "mia_canary_epsilon_claimed": c.epsilon_claimed,
                    "mia_canary_exceeds_claim": c.exceeds_claim,
                }
            )
        unknown = set(out) - set(PUBLIC_KEYS)
        assert not unknown, f"public() produced keys missing from PUBLIC_KEYS: {sorted(unknown)}"
        return out


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _checked_rows(
    x_members: Any, y_members: Any, x_nonmembers: Any, y_nonmembers: Any
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None, str]:
    """The four arrays as float/int, or None and why the audit cannot use them (no values)."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for name, x, y in (
        ("member", x_members, y_members),
        ("non-member", x_nonmembers, y_nonmembers),
    ):
        try:
            xa = np.asarray(x, dtype=np.float64)
            ya = np.asarray(y).reshape(-1)
        except (TypeError, ValueError):
            return None, f"the {name} features are not numeric"
        if xa.ndim != 2:
            return None, f"the {name} features must be a 2-D matrix, got {xa.ndim} dimension(s)"
        if not np.isfinite(xa).all():
            return None, f"the {name} features hold missing or infinite values"
        if ya.size != xa.shape[0]:
            return None, f"the {name} rows have {ya.size} labels for {xa.shape[0]} feature rows"
        if ya.size and not np.isin(ya, (0, 1)).all():
            return None, f"the {name} labels must be 0 and 1"
        xs.append(xa)
        ys.append(ya.astype(np.int64))
    if xs[0].shape[1] != xs[1].shape[1]:
        return None, "members and non-members have different numbers of features"
    return (xs[0], ys[0], xs[1], ys[1]), ""


def audit_site(
    target_logits: Logits,
    train_fn: TrainFn,
    x_members: np.ndarray,
    y_members: np.ndarray,
    x_nonmembers: np.ndarray,
    y_nonmembers: np.ndarray,
    *,
    n_reference: int = 4,
    n_canaries: int | None = None,
    epsilon_claimed: float | None,
    delta: float,
    confidence: float = 0.95,
    bins: int = 20,
    min_cell: int = 10,
    seed: int,
) -> SiteAudit:
    """Run every attack and the canary audit the site's data supports; never raises on data.

    ``target_logits`` is the model about to be released (trained on the members); ``train_fn``
    trains a fresh model the same way (reference models: ``n_reference`` of them, 0 to skip LiRA;
    the canary model: one, ``n_canaries`` = 0 to skip; None = ``default_canary_count``).
    ``epsilon_claimed`` and ``delta`` are the accountant's; δ also enters the canary bound.
    """
    _check_confidence(confidence)
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    if bins < 1 or min_cell < 1:
        raise ValueError(f"bins and min_cell must be >= 1, got {bins} and {min_cell}")
    if n_reference < 0 or (n_canaries is not None and n_canaries < 0):
        raise ValueError("n_reference and n_canaries must be >= 0")
    if epsilon_claimed is not None and not epsilon_claimed >= 0:
        raise ValueError(f"epsilon_claimed must be >= 0 or None, got {epsilon_claimed}")
    started = time.perf_counter()
    notes: list[AuditNote] = []
    attacks: dict[str, RocSummary] = {}
    seconds: dict[str, float] = {}
    canary: CanaryAudit | None = None
    trained_reference = 0

    def finish(n_mem: int, n_non: int) -> SiteAudit:
        seconds["total"] = time.perf_counter() - started
        return SiteAudit(
            n_members=n_mem,
            n_nonmembers=n_non,
            n_reference=trained_reference,
            attacks=MappingProxyType(attacks),
            canary=canary,
            note_items=tuple(notes),
            seconds=MappingProxyType(seconds),
            confidence=confidence,
            min_cell=min_cell,
        )

    rows, problem = _checked_rows(x_members, y_members, x_nonmembers, y_nonmembers)
    if rows is None:
        notes.append(AuditNote(f"No audit ran: {problem}."))
        return finish(0, 0)
    xm, ym, xn, yn = rows
    n_mem, n_non = ym.size, yn.size
    x_pool, y_pool = np.concatenate([xm, xn]), np.concatenate([ym, yn])
    is_member = np.r_[np.ones(n_mem, dtype=bool), np.zeros(n_non, dtype=bool)]
    if n_mem == 0:
        notes.append(AuditNote("No audit ran: the site has no training rows (members)."))
        return finish(n_mem, n_non)
    two_classes = np.unique(y_pool).size == 2
    attacks_possible = n_non > 0
    if not attacks_possible:
        notes.append(
            AuditNote(
                "Membership-inference attacks need non-members (the audit split), and it is "
                "empty: no AUC, TPR or advantage is reported."
            )
        )
    _fpr_notes(notes, n_non, attacks_possible)

    # Loss / confidence threshold attack on the target model.
    target_phi: np.ndarray | None = None
    t0 = time.perf_counter()
    if attacks_possible:
        try:
            target_phi = logit_confidence(target_logits(x_pool), y_pool)
        except Exception as exc:  # the callback's failure is this attack's, not the audit's
            notes.append(AuditNote(f"The target model could not be scored ({type(exc).__name__})."))
        if target_phi is not None and not np.isfinite(target_phi).all():
            notes.append(AuditNote("The target model gave non-finite logits: attacks skipped."))
            target_phi = None
        if target_phi is not None:
            attacks["loss"] = roc_summary(target_phi, is_member, confidence=confidence, bins=bins)
    seconds["target"] = time.perf_counter() - t0

    # LiRA with reference models on random halves of the pool.
    t0 = time.perf_counter()
    if target_phi is not None and n_reference > 0:
        lira, trained_reference = _run_lira(
            notes, train_fn, target_logits, x_pool, y_pool, two_classes, n_reference, seed
        )
        if lira is not None:
            attacks["lira_offline"] = roc_summary(
                lira.offline, is_member, confidence=confidence, bins=bins
            )
            if lira.online is not None:
                attacks["lira_online"] = roc_summary(
                    lira.online, is_member, confidence=confidence, bins=bins
                )
    seconds["reference"] = time.perf_counter() - t0

    # One-run canary audit.
    t0 = time.perf_counter()
    canary = _run_canary(
        notes,
        train_fn,
        (xm, ym, xn, yn),
        two_classes=two_classes,
        n_canaries=n_canaries,
        epsilon_claimed=epsilon_claimed,
        delta=delta,
        confidence=confidence,
        min_cell=min_cell,
        seed=seed,
    )
    seconds["canary"] = time.perf_counter() - t0
    return finish(n_mem, n_non)


def _fpr_notes(notes: list[AuditNote], n_non: int, attacks_possible: bool) -> None:
    if not attacks_possible:
        return
    for f in FPR_LEVELS:
        needed = nonmembers_needed(f)
        if n_non < needed:
            notes.append(
                AuditNote(
                    f"TPR at FPR {_fpr_text(f)} is not reported: it needs at least {needed} "
                    "non-members (audit rows) and this site has {has}.",
                    {"has": n_non},
                )
            )


def _run_lira(
    notes: list[AuditNote],
    train_fn: TrainFn,
    target_logits: Logits,
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    two_classes: bool,
    n_reference: int,
    seed: int,
) -> tuple[LiraScores | None, int]:
    """LiRA scores, or None with a note; also the number of reference models trained."""
    if n_reference < MIN_REFERENCE_MODELS:
        notes.append(
            AuditNote(
                f"LiRA needs at least {MIN_REFERENCE_MODELS} reference models "
                f"({n_reference} requested): skipped."
            )
        )
        return None, 0
    if not two_classes:
        notes.append(AuditNote("LiRA is skipped: the site's rows have one class only."))
        return None, 0
    if y_pool.size // 2 < MIN_REFERENCE_ROWS:
        notes.append(
            AuditNote(
                f"LiRA is skipped: reference models train on half of the site's rows, which needs "
                f"at least {2 * MIN_REFERENCE_ROWS} rows; this site has {{has}}.",
                {"has": y_pool.size},
            )
        )
        return None, 0
    try:
        lira = lira_scores(
            target_logits, train_fn, x_pool, y_pool, n_reference=n_reference, seed=seed
        )
    except Exception as exc:  # a reference model that cannot be trained ends LiRA, not the audit
        notes.append(
            AuditNote(f"LiRA is skipped: a reference model failed ({type(exc).__name__}).")
        )
        return None, 0
    if lira.online is None:
        notes.append(
            AuditNote("Online LiRA is skipped: some rows are in no reference model's training set.")
        )
    return lira, n_reference


def _run_canary(
    notes: list[AuditNote],
    train_fn: TrainFn,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    two_classes: bool,
    n_canaries: int | None,
    epsilon_claimed: float | None,
    delta: float,
    confidence: float,
    min_cell: int,
    seed: int,
) -> CanaryAudit | None:
    xm, ym, xn, yn = rows
    if n_canaries == 0:
        return None
    if n_canaries is None:
        m = default_canary_count(ym.size, yn.size, delta, confidence)
    else:
        m = canary_sources(ym.size, yn.size, n_canaries).total
        if n_canaries > m:
            notes.append(
                AuditNote(
                    f"{n_canaries} canaries were asked for; this site's rows support at most "
                    "{m} (its audit rows, a synthetic canary per training row, training rows up "
                    "to half of all rows), so the audit uses {m}.",
                    {"m": m},
                )
            )
    needed = max(MIN_CANARIES, min_cell)
    if m < needed:
        notes.append(
            AuditNote(
                f"The canary audit is skipped: it needs at least {needed} canaries and this "
                "site's rows support {m} (it has {has} rows).",
                {"m": m, "has": ym.size + yn.size},
            )
        )
        return None
    if not two_classes:
        notes.append(AuditNote("The canary audit is skipped: the site's rows have one class only."))
        return None
    try:
        canary = canary_audit(
            train_fn,
            xm,
            ym,
            xn,
            yn,
            n_canaries=m,
            delta=delta,
            confidence=confidence,
            epsilon_claimed=epsilon_claimed,
            seed=seed,
        )
    except Exception as exc:  # the canary model's failure ends this part only
        notes.append(
            AuditNote(
                f"The canary audit is skipped: its model could not be trained ({type(exc).__name__})."
            )
        )
        return None
    pct = f"{confidence:.0%}"
    counts = {"m": m, "syn": canary.n_synthetic}
    made = ", {syn} synthetic" if canary.n_synthetic else ""
    notes.append(
        AuditNote(
            f"Minimum detectable leak: this canary audit could certify at most "
            f"ε = {canary.epsilon_max:.2f} ({{m}} canaries{made}, {pct} confidence, "
            f"δ = {delta:g}); it cannot show more, whatever the model leaks.",
            counts,
        )
    )
    if epsilon_claimed is not None and canary.epsilon_max < epsilon_claimed:
        notes.append(
            AuditNote(
                f"The claimed ε = {epsilon_claimed:g} is beyond this site's canary audit: even a "
                f"model that leaked everything would show at most ε ≥ {canary.epsilon_max:.2f}, "
                "so the audit cannot refute the claim at this size."
            )
        )
    if canary.exceeds_claim:
        notes.append(
            AuditNote(
                f"The canary lower bound ε ≥ {canary.epsilon_lb:.2f} exceeds the claimed "
                f"ε = {epsilon_claimed:g}: the DP training does not deliver its stated guarantee."
            )
        )
    return canary
