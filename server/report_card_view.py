"""The model card's view: the pre-formatted tables and facts both renderings (Markdown, HTML) show."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedward.server.report_card_files import NOT_DONE
from fedward.server.report_card_sections import (
    PANEL_METRICS,
    model_epsilon_scope,
    model_epsilons,
)
from fedward.server.report_format import difference, finite, fmt_small, fmt_value, yes_no_none

# ---- rendering ----------------------------------------------------------------------------------


def metric_table(card: Mapping[str, Any]) -> tuple[list[str], list[dict[str, str]]]:
    """Rows by slice, one column per metric type: what the Markdown and HTML tables show."""
    by_slice: dict[str, dict[str, str]] = {}
    types: list[str] = []
    for m in card["quantitative_analysis"]["performance_metrics"]:
        if m["type"] not in types:
            types.append(m["type"])
        digits = 0 if m["type"] == "n" else 3
        text = fmt_value(m["value"], digits)
        ci = m.get("confidence_interval")
        if ci:
            text += f" [{fmt_value(ci['lower_bound'])}, {fmt_value(ci['upper_bound'])}]"
        by_slice.setdefault(m["slice"], {"slice": m["slice"]})[m["type"]] = text
    cols = [t for t in PANEL_METRICS if t in types]
    return cols, list(by_slice.values())


def epsilon_cell(site: Mapping[str, Any], digits: int = 2) -> str:
    """The released model's ε at one site: a number, or a range for a site that stopped answering."""
    bound = site.get("epsilon_bound")
    if bound:
        return f"≥ {fmt_value(bound.get('at_least'), digits)}, ≤ {fmt_value(bound.get('at_most'), digits)}"
    return fmt_value(site.get("epsilon_model"), digits)


def other_epsilon(site: Mapping[str, Any]) -> str:
    """What the other federations of the same invocation spent at one site, by name."""
    spent = site.get("companion_epsilon") or {}
    return ", ".join(f"{k} {fmt_value(v, 2)}" for k, v in sorted(spent.items())) or "–"


def card_difference(d: Mapping[str, Any] | None) -> str:
    """A difference to a baseline as the card prints it: NaN reads as missing."""
    return difference(d, finite_only=True)


def _epsilon_range(privacy: Mapping[str, Any]) -> str:
    eps = model_epsilons(privacy)
    if not eps:
        return "–"
    low, high = min(eps), max(eps)
    span = f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}"
    return f"{span} at the sites that took part ({model_epsilon_scope(privacy)})"


def card_view(card: Mapping[str, Any]) -> dict[str, Any]:
    """Pre-formatted pieces shared by the Markdown and HTML renderings."""
    cols, rows = metric_table(card)
    privacy = card["privacy"]
    dp = bool(privacy["dp"])
    if dp:
        site_head = [
            "site",
            "status",
            "ε released model",
            "ε final run",
            "δ run",
            "ε other federations",
            "ε lifetime",
            "δ lifetime",
            "ε tuning (all trials)",
            "noise multiplier",
            "sample rate",
            "accountant",
        ]
        site_cells = [
            [
                s["site"],
                s.get("status") or "–",
                epsilon_cell(s),
                fmt_value(s.get("epsilon"), 2),
                fmt_small(s.get("delta")),
                other_epsilon(s),
                fmt_value(s.get("epsilon_lifetime"), 2),
                fmt_small(s.get("delta_lifetime")),
                fmt_value(s.get("epsilon_tuning"), 2),
                fmt_value(s.get("noise_multiplier"), 3),
                fmt_value(s.get("sample_rate"), 3),
                s.get("accountant") or "–",
            ]
            for s in privacy["sites"]
        ]
    else:
        site_head = ["site", "status", "privacy guarantee"]
        site_cells = [
            [
                s["site"],
                s.get("status") or "–",
                "none: trained without DP" if s.get("status") == "ok" else "did not train",
            ]
            for s in privacy["sites"]
        ]
    audit_head = ["model", "site", "verdict", "highest attack AUC"]
    audit_head += ["accountant ε"] if dp else []
    audit_head += ["empirical ε lower bound"]
    audit_cells = []
    audit = privacy["audit"]
    if audit["done"]:
        for name, model in audit["models"].items():
            for site, e in model["sites"].items():
                attacks = e.get("attacks") or {}
                aucs = [(a, r["auc"]) for a, r in attacks.items() if finite(r.get("auc"))]
                top = max(aucs, key=lambda t: t[1]) if aucs else None
                note = e.get("reason") or ""
                audit_cells.append(
                    [
                        name,
                        site,
                        (e.get("verdict") or "–") + (f": {note}" if note else ""),
                        f"{top[1]:.3f} ({top[0]})" if top else "–",
                        *([fmt_value(e.get("epsilon_accountant"), 2)] if dp else []),
                        fmt_value(e.get("epsilon_lower_bound"), 2),
                    ]
                )
    he = privacy["encrypted_inference"]
    verdicts = card["verdicts"]
    audit_fact = (
        "membership-inference audit",
        audit["verdict"] if audit["done"] else f"{NOT_DONE}: {audit['reason']}",
    )
    he_fact = (
        "encrypted inference",
        ("offered" if he["offered"] else "not offered") + f": {he['note']}",
    )
    secagg_fact = (
        "secure aggregation (SecAgg+)",
        "used" if privacy["secure_aggregation_used"] else "not used",
    )
    if dp:
        facts = [
            ("DP", "yes: " + privacy["mechanism"]),
            ("privacy unit", fmt_value(privacy["privacy_unit"])),
            ("target ε (per site, the released model)", fmt_value(privacy["target_epsilon"])),
            ("ε of the released model (per site)", _epsilon_range(privacy)),
            ("clipping norm (per-sample gradient L2 bound)", fmt_value(privacy["clipping_norm"])),
            ("accountant requested", fmt_value(privacy["accountant_requested"])),
            ("ε covers", ", ".join(privacy["epsilon_covers"]) or "nothing"),
            (
                "central (site-level) DP",
                "used" if privacy["central_dp_used"] else "not used",
            ),
            secagg_fact,
            audit_fact,
            he_fact,
        ]
    else:
        facts = [
            ("DP", privacy["mechanism"]),
            (
                "privacy unit",
                "none: without DP no row, patient or site has a privacy guarantee",
            ),
            ("gradient clipping and noise", "none: plain training"),
            *(
                [("ε covers", ", ".join(privacy["epsilon_covers"]))]
                if privacy["epsilon_covers"]
                else []
            ),
            *([("central (site-level) DP", "used")] if privacy["central_dp_used"] else []),
            secagg_fact,
            audit_fact,
            he_fact,
        ]
    release = verdicts["release"]
    return {
        "cols": cols,
        "col_names": {c: PANEL_METRICS[c] for c in cols},
        "rows": rows,
        "loso": any(r["slice"].startswith("left_out=") for r in rows),
        "site_head": site_head,
        "site_cells": site_cells,
        "audit_head": audit_head,
        "audit_cells": audit_cells,
        "facts": facts,
        "non_dp_heading": (
            "Non-DP aggregates that left the sites (protected only by minimum cell sizes)"
            if dp
            else "Outputs without any DP guarantee (the weights and updates protected by "
            "nothing, the aggregates only by minimum cell sizes)"
        ),
        "verdict_line": (
            f"DP guarantee: {yes_no_none(verdicts['dp_guarantee'], NOT_DONE)} · membership audit passed: "
            f"{yes_no_none(verdicts['audit_passed'], NOT_DONE)}"
            + (f" ({audit['verdict']})" if audit["done"] else "")
            + f" · release: {release['line']}"
        ),
        "diff": card_difference,
        "n": fmt_value,
    }
