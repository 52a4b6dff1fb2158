"""Membership-inference audits a site runs on the model it is about to release.

DESIGN.md asks that a model leave a site only with its DP guarantee AND an audit attached: the
accountant's ε is an upper bound from a proof, an attack gives what an adversary actually achieves,
and a canary audit gives an empirical lower bound that contradicts the proof when the
implementation is broken. Members are the site's training rows; non-members its audit split (rows
never trained on, never the sealed test split). Everything here runs inside the site and works on
arrays and callbacks only (``Logits``, ``TrainFn``), so any model and any DP training plug in.

This module runs the audit (``audit_site``) and says what may leave (``SiteAudit.public``); its
parts live beside it, one concept each:

* ``fedward.client.mia_attacks``: the loss / confidence threshold attack (Yeom et al. 2018) and
  LiRA (Carlini et al. 2022), offline and online, with site-trained reference models.
* ``fedward.client.mia_roc``: each attack's ROC summary: AUC with a DeLong interval, TPR at FPR
  with Clopper-Pearson intervals, the advantage, the rank-score histogram.
* ``fedward.client.canary_bound``: the one-run audit's ε lower bound (Steinke, Nasr, Jagielski
  2023, "Privacy Auditing with One (1) Training Run", arXiv:2305.08846) and its guess grid.
* ``fedward.client.canaries``: where the canaries come from (flipped audit rows, synthetic
  canaries beside the training rows, flipped training rows), how many, and the one training run.

What leaves: ``SiteAudit.public`` only — scalars, coarsened counts and notes; never a score, an
index or a feature of a row. It is NOT a DP output (list it among the site's non-DP outputs), and
notes name only counts, with counts below the minimum cell size written as "fewer than N".
Data problems never raise from ``audit_site``: the part that cannot run is skipped and a note says
why. Wrong arguments (confidence, δ, bins, ...) are programming errors and raise ValueError.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from fedward.client.canaries import MIN_CANARIES, canary_audit, canary_sources, default_canary_count
from fedward.client.canary_bound import CanaryAudit
from fedward.client.mia_attacks import (
    MIN_REFERENCE_MODELS,
    LiraScores,
    Logits,
    TrainFn,
    lira_scores,
    logit_confidence,
)
from fedward.client.mia_roc import RocSummary, check_confidence, nonmembers_needed, roc_summary
from fedward.common.audit_keys import (
    ATTACKS,
    FPR_LEVELS,
    PUBLIC_KEYS,
    fpr_label,
)

PublicValue = float | int | bool | str | list[int] | list[str] | None

MIN_REFERENCE_ROWS = 20


def _fpr_text(fpr: float) -> str:
    return f"{fpr * 100:g}%"


def public_keys() -> tuple[str, ...]:
    """Every key ``SiteAudit.public`` can produce: build the egress allow-list from this."""
    return PUBLIC_KEYS


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
    check_confidence(confidence)
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
