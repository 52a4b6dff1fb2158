"""The baselines report as Markdown: every model's test AUROC beside the run's model, a verdict."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fedward.server.report_baselines_collect import FAMILY_NAMES
from fedward.server.report_format import difference, fmt_fixed, panel_interval


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
            out.append(f"- {name}: " + "; ".join(parts) + ".")
    if out:
        out = [
            "Pooled AUROC counts scores tied within a histogram group as one half, which pulls "
            "it toward 0.5; the exact pooled figure lies in each model's interval:",
            "",
            *out,
            "",
        ]
    return out


def render_markdown(report: Mapping[str, Any]) -> str:
    rm = report["run_model"]
    budget = report["budget"]
    lines = [
        "# Is the run's model justified? Baselines report",
        "",
        f"**Verdict.** {report['verdict']}",
        "",
        f"Run model: {rm['description']} · tuned: {'yes' if rm['tuned'] else 'no'} "
        f"({rm['configurations']} configuration(s)) · training {rm['train_seconds']:.1f} s "
        "(whole federation).",
        f"Search budget: {budget['configurations_per_family']} configurations per baseline family "
        f"({budget['search']} search), selected on {budget['selected_on']}.",
        "",
    ]
    best = report.get("best_baseline")
    if best:
        lines += [
            f"Best baseline: **{best['name']}** (mean tune AUROC {best['tune_auroc']:.3f}; "
            f"selected on the {best['selected_on']}).",
            "",
        ]
    test = rm.get("test") or {}
    lines += [
        "## Test AUROC, pooled and per site",
        "",
        "Pooled figures come from the sites' coarsened score histograms, never raw scores. "
        "Δ is the run's model minus the baseline on the same test rows (paired bootstrap at each "
        "site; combined across sites weighted by test rows).",
        "",
        "| model | where | pooled AUROC | Δ run − baseline [CI] | mean tune AUROC | fit time |",
        "|---|---|---|---|---|---|",
        f"| **run model** ({rm['description']}) | federated | "
        f"{panel_interval(test.get('pooled') or {})} | – | – | {rm['train_seconds']:.1f} s |",
    ]
    for sec in report["families"].values():
        where = "federated" if "federated" in sec["where"] else "local"
        time_s = sec.get("train_seconds", sec.get("fit_seconds_total"))
        lines.append(
            f"| {sec['name']}{' ⁺' if sec.get('memorises_rows') else ''} | {where} | "
            f"{panel_interval(sec.get('pooled'))} | {difference(sec.get('difference'))} | "
            f"{fmt_fixed(sec.get('mean_tune_auroc'))} | {fmt_fixed(time_s, 1)} s |"
        )
    lines += ["", "⁺ memorises rows: the fitted model never leaves its site.", ""]
    lines += _pooled_notes(
        [("run model", test.get("pooled"))]
        + [(sec["name"], sec.get("pooled")) for sec in report["families"].values()]
    )
    site_names = sorted((test.get("sites") or {}).keys())
    if site_names:
        lines += [
            "### Per site (test AUROC [95% CI])",
            "",
            "| model | " + " | ".join(site_names) + " |",
            "|---|" + "---|" * len(site_names),
            "| run model | "
            + " | ".join(panel_interval((test.get("sites") or {}).get(s)) for s in site_names)
            + " |",
        ]
        for sec in report["families"].values():
            cells = []
            for s in site_names:
                entry = sec["sites"].get(s) or {}
                if entry.get("panel"):
                    cells.append(panel_interval(entry["panel"]))
                else:
                    cells.append(f"not fitted: {entry.get('reason') or entry.get('status') or '–'}")
            lines.append(f"| {sec['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    controls = report.get("controls") or {}
    if controls:
        lines += ["## Controls", ""]
        if "label_shuffle" in controls:
            lines += [f"- **Label shuffle:** {controls['label_shuffle']['reading']}"]
        if "leave_one_site_out" in controls:
            loso = controls["leave_one_site_out"]
            lines += [f"- **Leave one site out:** {loso['reading']}", ""]
            lines += [
                "| left-out site | AUROC trained without it | run model (with it) |",
                "|---|---|---|",
            ]
            for site, row in sorted(loso["sites"].items()):
                lines.append(
                    f"| {site} | {panel_interval({'auroc': row['auroc_left_out'], 'auroc_lo': row['auroc_left_out_lo'], 'auroc_hi': row['auroc_left_out_hi']})} "
                    f"| {fmt_fixed(row['auroc_with_site'])} |"
                )
        lines.append("")
    pooled = report.get("pooled_reference")
    if pooled:
        lines += ["## Pooled reference (simulation only)", ""]
        if pooled.get("status") == "failed":
            lines += [f"The pooled reference failed: {pooled.get('reason')}", ""]
        else:
            lines += [
                "Every simulated site's data pooled in one place: the reference federation should "
                "approach.",
                "",
                "| model | test AUROC | train time |",
                "|---|---|---|",
            ]
            model = pooled.get("model") or {}
            lines.append(
                f"| run model, centralised | {panel_interval(model.get('test'))} | "
                f"{fmt_fixed(model.get('train_seconds'), 1)} s |"
            )
            for fam, entry in ((pooled.get("baselines") or {}).get("families") or {}).items():
                lines.append(
                    f"| {FAMILY_NAMES.get(fam, fam)}, centralised | {panel_interval(entry.get('test'))} | "
                    f"{fmt_fixed(entry.get('fit_seconds'), 1)} s |"
                )
            lines.append("")
    tuning = report.get("tuning")
    if tuning:
        lines += [
            "## Tuning of the run's model",
            "",
            f"{len(tuning['trials'])} trials ({tuning['search']} search, "
            f"{tuning['rounds_per_trial']} rounds each), selected on {tuning['selected_on']}. "
            f"Chosen: `{json.dumps(tuning['chosen'])}`.",
            "",
        ]
        eps = report.get("tuning_epsilon") or {}
        if eps:
            lines += [
                "ε spent on tuning (composed over the trials in each site's ledger), apart from "
                "the final model's ε:",
                "",
                "| site | tuning ε | final model ε |",
                "|---|---|---|",
            ]
            for site, e in sorted(eps.items()):
                lines.append(
                    f"| {site} | {fmt_fixed(e, 2)} | {fmt_fixed(rm['epsilon'].get(site), 2)} |"
                )
            lines.append("")
    if report.get("failures"):
        lines += ["## Baselines that could not be fitted", ""]
        lines += [f"- {f}" for f in report["failures"]]
        lines.append("")
    lines += ["## Privacy", "", report["privacy"], ""]
    return "\n".join(lines)
