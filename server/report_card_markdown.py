"""The model card as Markdown, for people who read files.

The figures are formatted here and in the card's view (report_card_view); the layout is
templates/card.md.j2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedward.server.report_card_files import NOT_DONE
from fedward.server.report_card_sections import POOLED_LOCAL_NOTE
from fedward.server.report_card_view import card_view
from fedward.server.report_format import fmt_value
from fedward.server.report_templates import render


def _profile_rows(prof: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per site of the training-split profiles table, sites in name order."""
    rows: list[dict[str, Any]] = []
    for site, p in sorted((prof.get("sites") or {}).items()):
        status = p.get("status", "ok")
        if status != "ok":
            rows.append({"site": site, "status": status, "reason": p.get("reason")})
            continue
        sp = p.get("splits") or {}
        missing = [
            f"{f} {fmt_value(s.get('missing_fraction'), 2)}"
            for f, s in sorted((p.get("features") or {}).items())
            if s.get("missing_fraction") is None or s.get("missing_fraction", 0) > 0
        ]
        rows.append(
            {
                "site": site,
                "status": "ok",
                "rows": fmt_value(p.get("n_rows")),
                "splits": "/".join(
                    fmt_value(sp.get(k)) for k in ("train", "tune", "test", "audit")
                ),
                "prevalence": fmt_value(p.get("prevalence")),
                "missing": ", ".join(missing) or "none",
            }
        )
    return rows


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card for people who read files: the banner first, then Mitchell et al.'s sections."""
    v = card_view(card)
    md = card["model_details"]
    prov = card["provenance"]
    prof = card["training_data_profiles"]
    return render(
        "card.md.j2",
        card=card,
        v=v,
        md=md,
        mp=card["model_parameters"],
        cons=card["considerations"],
        base=card["baselines"],
        prof=prof,
        prov=prov,
        metrics=card["metrics"],
        audit=card["privacy"]["audit"],
        not_done=NOT_DONE,
        n=fmt_value,
        owners=", ".join(o["name"] for o in md["owners"]),
        licenses="; ".join(
            lic.get("identifier") or lic.get("custom_text", "") for lic in md["licenses"]
        ),
        packages=", ".join(f"{k} {val}" for k, val in sorted(prov["package_versions"].items())),
        profile_rows=_profile_rows(prof) if prof["done"] else [],
        metric_names=[v["col_names"][c] for c in v["cols"]],
        metric_cells=lambda row: [row.get(c, "–") for c in v["cols"]],
        figure_names=[g["name"] for g in card["quantitative_analysis"]["graphics"]["collection"]],
        pooled_local_note=POOLED_LOCAL_NOTE,
    )
