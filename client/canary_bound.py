"""The one-run audit's ε lower bound (Steinke, Nasr, Jagielski 2023, arXiv:2305.08846).

m canaries, each included with probability 1/2, one training run; guess the r lowest-scoring
canaries OUT (the paper's k+ = 0, k- = r: see ``CANARY_GUESS_FRACTIONS``), count the correct
guesses, and bound ε from below with the paper's result for (ε, δ)-DP (``one_run_p_value``). At
small sites δ is large and enters the bound as 2mδ, so guess counts that could certify nothing
are left out of the Bonferroni grid (``canary_guess_grid``). Everything here depends on counts
only; where canaries come from and the training run are in ``fedward.client.canaries``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats

from fedward.client.mia_roc import check_confidence

CANARY_GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.25, 0.5)
"""Candidate numbers of guesses r, as a fraction of m; every guess is "OUT" and goes to the r
lowest-scoring canaries (at most m/2 of them, about as many as are left out). A flipped canary
left out is predicted with its row's own label by any model that fits its rows, so a very low
score is strong evidence of OUT; a high score is weak evidence of IN, because a model that
generalises badly also gives many left-out canaries their flipped label. Steinke et al. allow
any guesses (k+ IN, k- OUT); fedward fixes k+ = 0 on that ground, before seeing any score.
``canary_guess_grid`` drops counts that could certify nothing at (m, δ, confidence); the bound is
Bonferroni-corrected over the counts that remain, so choosing the best after the fact is valid."""


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
    check_confidence(confidence)
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
