"""The vocabulary of a site's membership-audit reply: every ``mia_*`` key it may release.

Shared by the site's audit (``fedward.client.mia``), the egress allow-list and the coordinator's
audit report, so the three cannot drift apart.
"""

from __future__ import annotations

ATTACKS = ("loss", "lira_offline", "lira_online")
"""Attacks in the order a report lists them; their keys are ``mia_<attack>_<suffix>``."""

FPR_LEVELS = (0.1, 0.01, 0.001)
"""False-positive rates at which the TPR is reported (10 %, 1 %, 0.1 %)."""


def fpr_label(fpr: float) -> str:
    """0.1 -> "10", 0.01 -> "1", 0.001 -> "0_1": the percent, key-safe."""
    return f"{fpr * 100:g}".replace(".", "_")


HISTOGRAM_FIELDS = ("bins", "pos_starts", "pos_counts", "neg_starts", "neg_counts")

ATTACK_SUFFIXES: tuple[str, ...] = (
    "auc",
    "auc_lo",
    "auc_hi",
    "advantage",
    *(f"tpr_at_fpr_{fpr_label(f)}{side}" for f in FPR_LEVELS for side in ("", "_lo", "_hi")),
    *(f"hist_{k}" for k in HISTOGRAM_FIELDS),
)
"""Per-attack keys, released as ``mia_<attack>_<suffix>``. The histogram's positives are members."""

CANARY_SUFFIXES: tuple[str, ...] = (
    "n",
    "k_plus",
    "k_minus",
    "guesses",
    "correct",
    "epsilon_lb",
    "epsilon_lb_confidence",
    "epsilon_max",
    "delta",
    "epsilon_claimed",
    "exceeds_claim",
)
"""Canary-audit keys, released as ``mia_canary_<suffix>``."""

SITE_SUFFIXES: tuple[str, ...] = (
    "n_members",
    "n_nonmembers",
    "n_reference",
    "attacks",
    "confidence",
    "seconds",
    "reference_seconds",
    "canary_seconds",
    "notes",
)
"""Whole-audit keys, released as ``mia_<suffix>``."""

PUBLIC_SUFFIXES: tuple[str, ...] = (
    *SITE_SUFFIXES,
    *(f"{a}_{s}" for a in ATTACKS for s in ATTACK_SUFFIXES),
    *(f"canary_{s}" for s in CANARY_SUFFIXES),
)

PUBLIC_KEYS: tuple[str, ...] = tuple(f"mia_{s}" for s in PUBLIC_SUFFIXES)
"""Every key a site's audit reply may carry besides fedward's own status keys."""
