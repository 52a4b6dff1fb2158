"""The audit report's table rows and fixed texts, formatted once for its Markdown and HTML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedward.common.protocol import STATUS_OK
from fedward.server.report_format import fmt_value, interval

ATTACK_NAMES = {
    "loss": "loss threshold",
    "lira_offline": "LiRA (offline)",
    "lira_online": "LiRA (online)",
}


_f = fmt_value
_ci = interval


def _tpr_ci(r: Mapping[str, Any], label: str) -> str:
    """TPR with its interval over members and non-members; the site's members-only one marked."""
    key = f"tpr_at_fpr_{label}"
    lo, hi = r.get(key + "_both_lo"), r.get(key + "_both_hi")
    if r.get(key) is not None and (lo is None or hi is None) and r.get(key + "_lo") is not None:
        return _ci(r.get(key), r.get(key + "_lo"), r.get(key + "_hi")) + " (members only)"
    return _ci(r.get(key), lo, hi)


def canary_rows(report: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per (model, audited site): the canary audit's counts, its bound and its ceiling."""
    rows = []
    for name, model in report["models"].items():
        for site, entry in model["sites"].items():
            if entry.get("status") != STATUS_OK:
                continue
            canary = entry.get("canary") or {}
            rows.append(
                {
                    "model": name,
                    "site": site,
                    "guesses": _f(entry.get("canary_guesses")),
                    "correct": _f(entry.get("canary_correct")),
                    "eps_lb": _f(canary.get("epsilon_lb"), 2),
                    "eps_max": _f(entry.get("canary_epsilon_max"), 2),
                    "eps": _f(entry.get("epsilon_accountant"), 2)
                    if entry.get("dp_guarantee")
                    else "none (no DP)",
                    "cannot": "; ".join(entry.get("cannot_measure") or []) or "–",
                }
            )
    return rows


def site_rows(report: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per (model, site, attack): what the Markdown and HTML tables show."""
    rows = []
    for name, model in report["models"].items():
        for site, entry in model["sites"].items():
            if entry.get("status") != STATUS_OK:
                rows.append(
                    {
                        "model": name,
                        "site": site,
                        "attack": "–",
                        "verdict": entry["verdict"],
                        "auc": "–",
                        "tpr10": "–",
                        "tpr1": "–",
                        "tpr01": "–",
                        "adv": "–",
                        "eps_lb": "–",
                        "eps": "–",
                        "note": str(entry.get("reason")),
                    }
                )
                continue
            canary = entry.get("canary") or {}
            for attack, r in entry["attacks"].items():
                rows.append(
                    {
                        "model": name,
                        "site": site,
                        "attack": ATTACK_NAMES.get(attack, attack),
                        "verdict": entry["verdict"],
                        "auc": _ci(r.get("auc"), r.get("auc_lo"), r.get("auc_hi")),
                        "tpr10": _tpr_ci(r, "10"),
                        "tpr1": _tpr_ci(r, "1"),
                        "tpr01": _tpr_ci(r, "0_1"),
                        "adv": _ci(
                            r.get("advantage"), r.get("advantage_lo"), r.get("advantage_hi")
                        ),
                        "eps_lb": _f(canary.get("epsilon_lb"), 2),
                        "eps": _f(entry.get("epsilon_accountant"), 2),
                        "note": "",
                    }
                )
    return rows


CANARY_HEADER = (
    "| site | canary guesses | correct | ε lower bound | minimum detectable leak (largest ε it could certify) | "
    "accountant ε | what it cannot measure |"
)

INTERVALS_TEXT = (
    "AUC intervals are DeLong's; TPR and advantage intervals count members and non-members both "
    "(Neyman-Pearson order statistics with Clopper-Pearson, and DKW bands), except where marked "
    "'members only' (the site's histogram lacked a class)."
)


def verdict_text(report: Mapping[str, Any]) -> str:
    th = report["thresholds"]
    return (
        f"thresholds: TPR at 1% FPR ≤ {th['max_tpr_at_1pct_fpr']:g}, AUC ≤ {th['max_auc']:g}, "
        f"failed when an attack's whole {th['confidence']:.0%} interval is above them; a leak is "
        "observed when a canary ε lower bound is above 0 or an attack's interval excludes chance: "
        "a failure without DP, a flag with DP; a model without a DP guarantee never passes; an "
        "empirical ε lower bound above the accountant's ε is a probable bug"
    )
