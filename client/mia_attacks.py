"""Membership-inference attacks a site runs on its own model: loss threshold and LiRA.

Each attack scores every row of the pool (members ∪ non-members), "higher = more likely a
member", from arrays and callbacks only (``Logits``, ``TrainFn``), so any model and any DP
training plug in; ``fedward.client.mia`` turns the scores into the site's audit.

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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from fedward.client.seeds import derive_seed

Logits = Callable[[np.ndarray], np.ndarray]
"""A model's logits: features (n, d) -> one logit per row (n,)."""

TrainFn = Callable[[np.ndarray, np.ndarray, int], Logits]
"""``train_fn(x, y, seed)`` trains a fresh model as the site trains the released one (same
architecture, same DP settings) and returns its logits function."""

MIN_REFERENCE_MODELS = 2
PER_EXAMPLE_VARIANCE_MIN = 32
"""IN (or OUT) models per example from which LiRA fits per-example variances instead of global."""

MIN_VARIANCE = 1e-6


def derive_audit_seed(seed: int, *parts: object) -> int:
    """A 32-bit seed from the audit seed and names, in the audit's own domain (the platform's
    one derivation, ``fedward.client.seeds``)."""
    return derive_seed(seed, *parts, domain="fedward-mia")


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
    split_rng = np.random.default_rng(derive_audit_seed(seed, "reference-split"))
    inside = reference_split(y_pool.size, n_reference, split_rng)
    reference = np.empty(inside.shape)
    for j in range(n_reference):
        logits = train_fn(
            x_pool[inside[j]], y_pool[inside[j]], derive_audit_seed(seed, "reference", j)
        )
        reference[j] = logit_confidence(logits(x_pool), y_pool)
    target = logit_confidence(target_logits(x_pool), y_pool)
    if not (np.isfinite(reference).all() and np.isfinite(target).all()):
        raise ValueError("a model gave non-finite logits")
    return lira_from_confidences(target, reference, inside)
