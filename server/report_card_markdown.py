"""The model card as Markdown, for people who read files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedward.server.report_card_files import NOT_DONE
from fedward.server.report_card_sections import POOLED_LOCAL_NOTE
from fedward.server.report_card_view import card_difference, card_view
from fedward.server.report_format import fmt_value


def _md_table(head: list[str], cells: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *["| " + " | ".join(row) + " |" for row in cells],
    ]


def _privacy_markdown(card: Mapping[str, Any], v: Mapping[str, Any]) -> list[str]:
    """The Privacy section: right after the warnings and verdicts, before anything else."""
    privacy = card["privacy"]
    lines = [
        "## Privacy",
        "",
        *[f"- **{k}:** {val}" for k, val in v["facts"]],
        "",
        *_md_table(v["site_head"], v["site_cells"]),
        "",
    ]
    audit = privacy["audit"]
    if audit["done"]:
        lines += [
            f"Membership-inference audit: **{audit['verdict']}**.",
            *[f"- **{f}**" for f in audit["flags"]],
            *[f"- {f}" for f in audit["failures"]],
            "",
            *_md_table(v["audit_head"], v["audit_cells"]),
            "",
        ]
    else:
        lines += [f"Membership-inference audit: {NOT_DONE} ({audit['reason']}).", ""]
    lines += [
        f"{v['non_dp_heading']}:",
        "",
        *[f"- {o}" for o in privacy["non_dp_outputs"]],
        "",
    ]
    return lines


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card for people who read files: the banner first, then Mitchell et al.'s sections."""
    v = card_view(card)
    md = card["model_details"]
    mp = card["model_parameters"]
    cons = card["considerations"]
    base = card["baselines"]
    prof = card["training_data_profiles"]
    prov = card["provenance"]
    lines: list[str] = []
    for w in card["warnings"]:
        lines.append(f"> **⚠ WARNING: {w}**")
        lines.append(">")
    if lines:
        lines[-1] = ""
    lines += [f"# Model card: {md['name']}", "", md["overview"], "", f"**{v['verdict_line']}**"]
    for p in card["verdicts"]["problems"]:
        lines.append(f"- not ready: {p}")
    lines += ["", *_privacy_markdown(card, v)]
    lines += [
        "## Model details",
        "",
        f"- Architecture: {mp['model_architecture']}",
        f"- Version (fedward run id): {md['version']['name']}, {md['version'].get('date') or '–'}",
        f"- Config hash: `{prov['config_hash']}` · seed {prov['seed']} · git commit "
        f"`{prov['git_commit'] or 'not from a git checkout'}`",
        f"- Owners: {', '.join(o['name'] for o in md['owners']) or 'not stated'}",
        f"- License: {'; '.join(lic.get('identifier') or lic.get('custom_text', '') for lic in md['licenses'])}",
        f"- Input: {mp['input_format']}",
        f"- Output: {mp['output_format']}",
        "- Packages: "
        + ", ".join(f"{k} {val}" for k, val in sorted(prov["package_versions"].items())),
        "",
        "## Intended use",
        "",
        *[f"- Use: {u['description']}" for u in cons["use_cases"]],
        *[f"- Intended user: {u['description']}" for u in cons["users"]],
        *[f"- Out of scope: {u['description']}" for u in cons["out_of_scope_uses"]],
        "",
        "## Factors",
        "",
        *[f"- Relevant: {f}" for f in card["factors"]["relevant"]],
        *[f"- Evaluated: {f}" for f in card["factors"]["evaluation"]],
        *[f"- Not evaluated: {f}" for f in card["factors"]["not_evaluated"]],
        "",
        "## Metrics",
        "",
        f"{card['metrics']['why']} Measures: {', '.join(card['metrics']['performance_measures'])}. "
        f"Decision threshold {card['metrics']['decision_threshold']}; variation: "
        f"{card['metrics']['variation_approaches']}.",
        "",
        "## Evaluation data",
        "",
        mp["data"]["eval"]["description"],
        "",
        *[f"- {r['site']}: {fmt_value(r['rows'])} test rows" for r in mp["data"]["eval"]["sites"]],
        "",
        "## Training data",
        "",
        mp["data"]["train"]["description"],
        "",
        *[
            f"- {r['site']}: {fmt_value(r['rows'])} training rows"
            for r in mp["data"]["train"]["sites"]
        ],
        "",
    ]
    if prof["done"]:
        lines += [
            f"Training-split profiles (cells under {prof['min_cell_size']} suppressed, shown "
            "as –):",
            "",
            "| site | rows | train/tune/test/audit | prevalence | features with missing values |",
            "|---|---|---|---|---|",
        ]
        for site, p in sorted(prof["sites"].items()):
            if p.get("status", "ok") != "ok":
                lines.append(f"| {site} | {p.get('status')}: {p.get('reason')} | | | |")
                continue
            sp = p.get("splits") or {}
            miss = [
                f"{f} {fmt_value(s.get('missing_fraction'), 2)}"
                for f, s in sorted((p.get("features") or {}).items())
                if s.get("missing_fraction") is None or s.get("missing_fraction", 0) > 0
            ]
            lines.append(
                f"| {site} | {fmt_value(p.get('n_rows'))} | "
                + "/".join(fmt_value(sp.get(k)) for k in ("train", "tune", "test", "audit"))
                + f" | {fmt_value(p.get('prevalence'))} | {', '.join(miss) or 'none'} |"
            )
        lines += ["", prof["non_dp"] or "", ""]
    else:
        lines += [f"Training-data profiles: {NOT_DONE} ({prof['reason']}).", ""]
    lines += [
        "## Quantitative analyses",
        "",
        "Test split, per site with bootstrap intervals, and pooled"
        + (
            "; `left_out=SITE` is a model trained without that site, scored on it."
            if v["loso"]
            else "."
        ),
        "",
        "| slice | " + " | ".join(v["col_names"][c] for c in v["cols"]) + " |",
        "|---|" + "---|" * len(v["cols"]),
    ]
    for row in v["rows"]:
        lines.append(f"| {row['slice']} | " + " | ".join(row.get(c, "–") for c in v["cols"]) + " |")
    lines += [
        "",
        "Figures (in model_card.html): "
        + "; ".join(g["name"] for g in card["quantitative_analysis"]["graphics"]["collection"])
        + ".",
        "",
        "## Baselines",
        "",
    ]
    if base["done"]:
        lines += [
            f"**Verdict.** {base['verdict']}",
            "",
            "| model | where | pooled test AUROC | Δ run − baseline [CI] | mean tune AUROC |",
            "|---|---|---|---|---|",
            *[
                f"| {c['model']} | {c['where']} | {fmt_value(c['pooled_auroc'])} | "
                f"{card_difference(c['difference'])} | {fmt_value(c['mean_tune_auroc'])} |"
                for c in base["comparison"]
            ],
            "",
            POOLED_LOCAL_NOTE,
            "",
            *[
                f"- {name.replace('_', ' ')}: {c.get('reading')}"
                for name, c in base["controls"].items()
            ],
            "",
        ]
    else:
        lines += [f"Baselines: {NOT_DONE} ({base['reason']}).", ""]
    lines += [
        "## Ethical considerations",
        "",
        "| concern | status | mitigation |",
        "|---|---|---|",
        *[
            f"| {e['name']} | {e['status']} | {e['mitigation_strategy'] or '–'}"
            + (f" ({e['note']})" if e.get("note") else "")
            + " |"
            for e in cons["ethical_considerations"]
        ],
        "",
        "## Caveats and recommendations",
        "",
        *[f"- {c['description']}" for c in cons["limitations"]],
        *[f"- Trade-off: {t['description']}" for t in cons["tradeoffs"]],
        "",
        "## Provenance",
        "",
        f"fedward run id {prov['run_id']} (Flower run {prov['flower_run_id']}), {prov['engine']}, "
        f"created {prov['created']}; transform `{prov['transform_fingerprint']}` "
        f"({prov['transform_source']}); schema `{prov['schema_fingerprint']}`.",
        "",
    ]
    return "\n".join(lines)
