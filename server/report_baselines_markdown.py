"""The baselines report as Markdown: every model's test AUROC beside the run's model, a verdict.

The tables' cells are formatted here (report_format); their layout is templates/baselines.md.j2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fedward.server.report_baselines_collect import FAMILY_NAMES
from fedward.server.report_format import difference, fmt_fixed, panel_interval
from fedward.server.report_templates import render


def _pooled_notes(rows: list[tuple[str, Mapping[str, Any] | None]]) -> list[str]:
    """Under the pooled table: what each pooled AUROC is, which sites it covers, what it omits.

    A pooled AUROC from coarsened histograms counts ties within a group as one half, which pulls it
    toward 0.5; the interval every ordering the groups allow is stated so no reader takes the
    point estimate for the raw-score figure.
    """
    out = []
    for name, pooled in rows:
        if not pooled:
            continue
        span = (pooled.get("bounds") or {}).get("auroc")
        parts = []
        if span:
            parts.append(f"pooled AUROC lies between {span[0]:.3f} and {span[1]:.3f}")
        if pooled.get("coverage"):
            parts.append(f"covers {pooled['coverage']}")
        if parts:
            out.append(f"{name}: " + "; ".join(parts) + ".")
    return out


def _models_table(report: Mapping[str, Any]) -> list[list[str]]:
    rm = report["run_model"]
    test = rm.get("test") or {}
    cells = [
        [
            f"**run model** ({rm['description']})",
            "federated",
            panel_interval(test.get("pooled") or {}),
            "–",
            "–",
            f"{rm['train_seconds']:.1f} s",
        ]
    ]
    for sec in report["families"].values():
        time_s = sec.get("train_seconds", sec.get("fit_seconds_total"))
        cells.append(
            [
                f"{sec['name']}{' ⁺' if sec.get('memorises_rows') else ''}",
                "federated" if "federated" in sec["where"] else "local",
                panel_interval(sec.get("pooled")),
                difference(sec.get("difference")),
                fmt_fixed(sec.get("mean_tune_auroc")),
                f"{fmt_fixed(time_s, 1)} s",
            ]
        )
    return cells


def _sites_table(report: Mapping[str, Any], site_names: list[str]) -> list[list[str]]:
    test_sites = (report["run_model"].get("test") or {}).get("sites") or {}
    cells = [["run model", *(panel_interval(test_sites.get(s)) for s in site_names)]]
    for sec in report["families"].values():
        row = [sec["name"]]
        for s in site_names:
            entry = sec["sites"].get(s) or {}
            if entry.get("panel"):
                row.append(panel_interval(entry["panel"]))
            else:
                row.append(f"not fitted: {entry.get('reason') or entry.get('status') or '–'}")
        cells.append(row)
    return cells


def _loso_table(controls: Mapping[str, Any]) -> list[list[str]]:
    loso = controls.get("leave_one_site_out") or {"sites": {}}
    return [
        [
            site,
            panel_interval(
                {
                    "auroc": row["auroc_left_out"],
                    "auroc_lo": row["auroc_left_out_lo"],
                    "auroc_hi": row["auroc_left_out_hi"],
                }
            ),
            fmt_fixed(row["auroc_with_site"]),
        ]
        for site, row in sorted(loso["sites"].items())
    ]


def _pooled_table(pooled: Mapping[str, Any]) -> list[list[str]]:
    model = pooled.get("model") or {}
    cells = [
        [
            "run model, centralised",
            panel_interval(model.get("test")),
            f"{fmt_fixed(model.get('train_seconds'), 1)} s",
        ]
    ]
    for fam, entry in ((pooled.get("baselines") or {}).get("families") or {}).items():
        cells.append(
            [
                f"{FAMILY_NAMES.get(fam, fam)}, centralised",
                panel_interval(entry.get("test")),
                f"{fmt_fixed(entry.get('fit_seconds'), 1)} s",
            ]
        )
    return cells


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report for people who read files: the verdict first, then every model's AUROC."""
    rm = report["run_model"]
    test = rm.get("test") or {}
    best = report.get("best_baseline")
    tuning = report.get("tuning")
    eps = report.get("tuning_epsilon") or {}
    site_names = sorted((test.get("sites") or {}).keys())
    controls = report.get("controls") or {}
    pooled = report.get("pooled_reference")
    return render(
        "baselines.md.j2",
        report=report,
        rm=rm,
        budget=report["budget"],
        train_seconds=f"{rm['train_seconds']:.1f}",
        best=best,
        best_tune_auroc=f"{best['tune_auroc']:.3f}" if best else None,
        models_table=_models_table(report),
        pooled_notes=_pooled_notes(
            [("run model", test.get("pooled"))]
            + [(sec["name"], sec.get("pooled")) for sec in report["families"].values()]
        ),
        site_names=site_names,
        sites_table=_sites_table(report, site_names) if site_names else [],
        controls=controls,
        loso_table=_loso_table(controls),
        pooled=pooled,
        pooled_table=_pooled_table(pooled) if pooled else [],
        tuning=tuning,
        tuning_chosen=json.dumps(tuning["chosen"]) if tuning else None,
        tuning_table=[
            [site, fmt_fixed(e, 2), fmt_fixed(rm["epsilon"].get(site), 2)]
            for site, e in sorted(eps.items())
        ]
        if tuning
        else [],
    )
