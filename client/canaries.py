"""Canaries for the one-run audit: where they come from, and the audit's one training run.

Canaries are flipped copies of audit rows, synthetic ones beside the training rows
(``synthetic_canaries``) and, last, flipped training rows (``canary_sources``); m is chosen from
the sizes and δ (``default_canary_count``) so that small sites get the most audit power. The
canary model trains on the site's training rows plus the included canaries, so it is not the
released model: the audit tests the training procedure, whose DP guarantee holds for every
input, and its ε is the procedure's (fixed σ, q and steps). The bound is in
``fedward.client.canary_bound`` (Steinke, Nasr, Jagielski 2023).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from fedward.client.canary_bound import CanaryAudit, canary_epsilon_max, one_run_audit
from fedward.client.mia_attacks import TrainFn, derive_audit_seed, logit_confidence

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
    rng = np.random.default_rng(derive_audit_seed(seed, "canaries"))
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
    logits = train_fn(x_train[order], y_train[order], derive_audit_seed(seed, "canary-model"))
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
