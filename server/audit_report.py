"""The privacy officer's audit report: what each site's membership-inference audit found, next to
the accountant's ε, with a verdict against the run config's thresholds.

A DP guarantee is a promise about the training code; the audit checks the released model. Each site
attacks the model on its own members (training rows) and non-members (audit split) and sends only
aggregates: AUCs, TPRs at fixed FPRs with Clopper-Pearson intervals, the advantage, an empirical ε
lower bound from a one-run canary audit, and the ROC as coarsened binned counts. An empirical lower
bound above the accountant's ε is flagged as a probable bug, never hidden.

Layout: report_audit_collect asks the sites (the only Grid I/O); this module builds the report's
data, checked against audit.schema.json; report_audit_rows formats its tables, the templates
audit.md.j2 and audit.html.j2 lay them out, card_plots draws the ROC figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedward.common.audit_keys import (
    ATTACK_SUFFIXES,
    ATTACKS,
    CANARY_SUFFIXES,
    FPR_LEVELS,
    HISTOGRAM_FIELDS,
    fpr_label,
)
from fedward.common.evaluation_config import AuditConfig
from fedward.common.protocol import STATUS_OK
from fedward.common.score_histograms import CoarseHistogram
from fedward.server import audit_verdict as av
from fedward.server.card_plots import audit_roc_figure, png
from fedward.server.pooled_metrics import pooled_panel
from fedward.server.report_audit_rows import (
    ATTACK_NAMES,
    CANARY_HEADER,
    INTERVALS_TEXT,
    canary_rows,
    site_rows,
    verdict_text,
)
from fedward.server.report_format import fmt_value
from fedward.server.report_schemas import check_report
from fedward.server.report_templates import render
from fedward.server.run_folder import RunFolder

REPORT_JSON = "audit.json"
REPORT_MD = "audit.md"
REPORT_HTML = "audit.html"

# ---- the report ---------------------------------------------------------------------------------


def _attack(info: Mapping[str, Any], attack: str) -> dict[str, Any] | None:
    prefix = f"mia_{attack}_"
    if prefix + "auc" not in info and prefix + "hist_bins" not in info:
        return None
    out: dict[str, Any] = {s: info.get(prefix + s) for s in ATTACK_SUFFIXES if "hist_" not in s}
    hist = {f: info.get(f"{prefix}hist_{f}") for f in HISTOGRAM_FIELDS}
    out["hist"] = hist if hist.get("bins") is not None else None
    return out


def _site_entry(
    info: Mapping[str, Any], epsilon: float | None, audit: AuditConfig
) -> dict[str, Any]:
    if info.get("status") != STATUS_OK:
        return {
            "status": info.get("status", "error"),
            "reason": info.get("reason", "no reason given"),
            "verdict": av.NOT_AUDITED,
        }
    confidence = float(info.get("mia_confidence") or audit.confidence)
    min_cell = av.min_cell_of(info)
    attacks = {a: r for a in ATTACKS if (r := _attack(info, a)) is not None}
    for r in attacks.values():
        r.update(
            av.both_sides(r, info.get("mia_n_members"), info.get("mia_n_nonmembers"), confidence)
        )
    canary: dict[str, Any] | None = (
        {s: info.get(f"mia_canary_{s}") for s in CANARY_SUFFIXES}
        if "mia_canary_epsilon_lb" in info
        else None
    )
    # A DP guarantee is a finite accountant ε for this site; without one nothing bounds the model.
    dp = av.finite(epsilon)
    failures: list[str] = []
    warnings: list[str] = []
    flags: list[str] = []
    one = fpr_label(0.01)
    checks = [
        ("TPR at 1% FPR", f"tpr_at_fpr_{one}", audit.max_tpr_at_1pct_fpr),
        ("AUC", "auc", audit.max_auc),
    ]
    for name, r in attacks.items():
        for what, key, limit in checks:
            value = r.get(key)
            # TPR: the interval over members and non-members where the histogram allows it.
            lo = r.get(key + "_both_lo")
            if lo is None:
                lo = r.get(key + "_lo")
            if value is None or value <= limit:
                continue
            text = f"{ATTACK_NAMES[name]}: {what} {value:.3f} > {limit:g}"
            # Leakage beyond the threshold is shown when the whole interval is above it; a point
            # estimate above it on a small audit split is a warning, not a verdict.
            if lo is not None and lo > limit:
                failures.append(f"{text} (interval from {av.above(lo, limit)})")
            else:
                warnings.append(f"{text}, but its interval reaches below the threshold")
    leaks = [
        leak for a, r in attacks.items() for leak in av.attack_leaks(ATTACK_NAMES[a], r, confidence)
    ]
    warnings += [
        w for a, r in attacks.items() if (w := av.below_chance(ATTACK_NAMES[a], r, confidence))
    ]
    if (canary_leak := av.canary_leak(canary, min_cell)) is not None:
        leaks.insert(0, canary_leak)
    if canary is not None and canary.get("epsilon_lb") is not None:
        # The canary model was trained with the site's DP mechanism for the run: its accountant ε
        # is the claim the bound tests (the site's run ε when the site did not state it).
        lb = float(canary["epsilon_lb"])
        claimed_raw = canary.get("epsilon_claimed")
        claimed = float(claimed_raw) if claimed_raw is not None else epsilon
        conf = canary.get("epsilon_lb_confidence") or audit.confidence
        if claimed is not None and lb > claimed:
            flags.append(
                f"PROBABLE BUG: the empirical ε lower bound {lb:.2f} (at {float(conf):.0%} "
                f"confidence) exceeds the accountant's ε {claimed:.2f}: the training did not add "
                "the noise it claims, or the accounting is wrong"
            )
    canary_text, cannot = av.canary_statement(canary, epsilon, min_cell)
    if not dp:
        # Without a DP guarantee an observed leak is a failure, not a flag.
        failures = [f"leak observed: {leak}" for leak in leaks] + failures
    supported = any(
        r.get(f"tpr_at_fpr_{fpr_label(f)}") is not None
        for r in attacks.values()
        for f in FPR_LEVELS
    )
    verdict = av.site_verdict(
        dp=dp,
        attacks=bool(attacks),
        supported=supported,
        failures=failures,
        warnings=warnings,
        flags=flags,
        leaks=leaks,
    )
    return {
        "status": STATUS_OK,
        "epsilon_accountant": epsilon,
        "dp_guarantee": dp,
        "n_members": info.get("mia_n_members"),
        "n_nonmembers": info.get("mia_n_nonmembers"),
        "n_reference": info.get("mia_n_reference"),
        "min_cell_size": min_cell,
        "confidence": confidence,
        "attacks": attacks,
        "canary": canary,
        "canary_guesses": canary.get("guesses") if canary else None,
        "canary_correct": (av.correct_text(canary, min_cell) if canary else None),
        "canary_epsilon_max": canary.get("epsilon_max") if canary else None,
        "canary_summary": canary_text,
        "cannot_measure": cannot,
        "notes": list(info.get("mia_notes") or []),
        "seconds": info.get("mia_seconds"),
        "leaks": leaks,
        "failures": failures,
        "warnings": warnings,
        "flags": flags,
        "verdict": verdict,
    }


def nonmembers_for(fpr: float) -> int:
    """Non-members needed before a TPR at FPR ``fpr`` means anything (one false positive)."""
    return math.ceil(1.0 / fpr - 1e-9)


def _pooled(sites: Mapping[str, Mapping[str, Any]], bins: int) -> dict[str, Any]:
    """Per attack, the AUC of the sites' pooled coarse histograms (members as positives)."""
    out: dict[str, Any] = {}
    for attack in ATTACKS:
        hists = [
            CoarseHistogram.from_record(s["attacks"][attack]["hist"])
            for s in sites.values()
            if s.get("status") == STATUS_OK
            and attack in s.get("attacks", {})
            and s["attacks"][attack].get("hist")
        ]
        if hists:
            panel = pooled_panel(hists, bins) or {}
            out[attack] = {"auc": panel.get("auroc"), "sites": len(hists)}
    return out


def _unaudited(m: Mapping[str, Any]) -> str:
    """The sites that did not audit a model, with their reasons, in words ('' when none)."""
    out = [
        f"{site} ({e.get('reason') or e.get('status')})"
        for site, e in m["sites"].items()
        if e.get("status") != STATUS_OK
    ]
    return "; ".join(out)


def _headline(verdict: str, models: Mapping[str, Mapping[str, Any]], confidence: float) -> str:
    """One sentence for the top of the report, the card and the terminal: the verdict and why.

    Never "no leak observed" about a model no site could measure: an inconclusive or unaudited
    model says so, with the reason, because silence there reads like a pass.
    """
    parts = [f"{verdict.upper()}."]
    for m in models.values():
        what = m["description"]
        audited = [e for e in m["sites"].values() if e.get("status") == STATUS_OK]
        not_audited = _unaudited(m)
        if m["flags"]:
            parts.append(
                f"{len(m['flags'])} probable privacy bug(s) in {what}: {_first(m['flags'], 1)}."
            )
        if not m["dp_guarantee"]:
            parts.append(f"{what[0].upper()}{what[1:]} has no DP guarantee (trained without DP).")
        over = [
            f
            for f in m["failures"]
            if not f.startswith("NO DP GUARANTEE") and ": leak observed: " not in f
        ]
        if over:
            parts.append(f"Over the run config's thresholds in {what}: {_first(over, 2)}.")
        if m["leaks"]:
            parts.append(f"Leak observed in {what}: {_first(m['leaks'], 3)}.")
        elif not audited:
            parts.append(
                f"No site audited {what}"
                + (f": {not_audited}." if not_audited else " (no site answered the audit).")
            )
            not_audited = ""
        elif m["dp_guarantee"] and m["verdict"] == av.INCONCLUSIVE:
            parts.append(
                f"The audit of {what} measured nothing: no site could run an attack or measure "
                "a TPR at any FPR (too few audit rows; see each site's notes)."
            )
        elif m["dp_guarantee"]:
            parts.append(f"No leak observed in {what} (it has a DP guarantee).")
        else:
            parts.append(
                f"No attack separated members from non-members of {what} beyond chance at "
                f"{confidence:.0%} confidence; at these sizes that does not make it private."
            )
        if not_audited:
            parts.append(f"Not audited: {not_audited}.")
    return " ".join(parts)


def _first(items: list[str], n: int) -> str:
    """The first ``n`` items joined, and how many more there are."""
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return "; ".join(items[:n]) + more


def audit_report(
    audit: AuditConfig,
    models: Mapping[str, Mapping[str, Any]],
    *,
    run_id: str,
) -> dict[str, Any]:
    """``models``: name -> {"description", "sites": {site: reply fields}, "epsilon": {site: ε}}."""
    out_models: dict[str, Any] = {}
    for name, model in models.items():
        eps = model.get("epsilon") or {}
        sites = {
            site: _site_entry(info, eps.get(site), audit)
            for site, info in sorted(model["sites"].items())
        }
        audited = {s: e for s, e in sites.items() if e.get("status") == STATUS_OK}
        no_eps = [s for s, e in audited.items() if not e["dp_guarantee"]]
        # No audited site: the model's DP guarantee is what the accountant says for its sites.
        dp = not no_eps if audited else any(av.finite(e) for e in eps.values())
        description = model.get("description", name)
        leaks = [f"{site}: {x}" for site, s in sites.items() for x in s.get("leaks", [])]
        failures = [f"{site}: {f}" for site, s in sites.items() for f in s.get("failures", [])]
        if not dp:
            failures.insert(0, av.no_dp_statement(description, no_eps, leaks))
        out_models[name] = {
            "description": description,
            "dp_guarantee": dp,
            "sites": sites,
            "pooled": _pooled(sites, audit.bins),
            "verdict": av.combine((s["verdict"] for s in sites.values()), dp=dp, leak=bool(leaks)),
            "leaks": leaks,
            "flags": [f"{site}: {f}" for site, s in sites.items() for f in s.get("flags", [])],
            "failures": failures,
            "warnings": [
                f"{site}: {w}" for site, s in sites.items() for w in s.get("warnings", [])
            ],
            "intervals_checked": av.count_intervals(audited),
        }
    one = f"tpr_at_fpr_{fpr_label(0.01)}"
    measured = any(
        r.get(one) is not None
        for m in out_models.values()
        for site in m["sites"].values()
        for r in (site.get("attacks") or {}).values()
    )
    caveats = []
    if out_models and not measured:
        caveats.append(
            "TPR at 1% FPR could not be measured at any site (each audit split has fewer than "
            f"{nonmembers_for(0.01)} rows), so the threshold on it was not tested; the verdict "
            "rests on AUC, TPR at 10% FPR and the canary bound"
        )
    checked = sum(m["intervals_checked"] for m in out_models.values())
    if checked and any(m["leaks"] and m["dp_guarantee"] for m in out_models.values()):
        caveats.append(
            f"the leak check looked at {checked} intervals and canary bounds, each at "
            f"{audit.confidence:.0%} confidence: even with no leak at all, about "
            f"{av.expected_false_alarms(checked, audit.confidence):.1f} of them would exclude "
            "chance, so a single flagged interval under DP is weak evidence on its own"
        )
    dp_all = all(m["dp_guarantee"] for m in out_models.values())
    verdict = (
        av.combine(
            (m["verdict"] for m in out_models.values()),
            dp=dp_all,
            leak=any(m["leaks"] for m in out_models.values()),
        )
        if out_models
        else av.INCONCLUSIVE
    )
    headline = _headline(verdict, out_models, audit.confidence)
    return {
        "run_id": run_id,
        "verdict": verdict,
        "dp_guarantee": dp_all and bool(out_models),
        "headline": headline,
        "thresholds": {
            "max_tpr_at_1pct_fpr": audit.max_tpr_at_1pct_fpr,
            "max_auc": audit.max_auc,
            "confidence": audit.confidence,
        },
        "models": out_models,
        "caveats": caveats,
        "how": "Members are each site's training rows, non-members its audit split (never "
        "trained on, never the sealed test split). Reference and canary models are trained at "
        "the site as it trained for the run and never leave it.",
        "non_dp": "The audit's figures are non-DP aggregates of the sites' rows, protected only by "
        "the minimum cell size; they are listed in run_record.json's non_dp_outputs.",
    }


# ---- rendering ----------------------------------------------------------------------------------


def audit_roc_png(site: str, entry: Mapping[str, Any], delta: float | None) -> str:
    """A log-log ROC per attack with the DP bound TPR <= e^ε FPR + δ; a base64 PNG.

    The same figure as the card's: its axes cover the rates the site's audit can measure.
    """
    return png(audit_roc_figure(site, entry, delta))


def _model_extras(report: Mapping[str, Any], name: str, model: Mapping[str, Any]) -> dict[str, Any]:
    """What the Markdown adds under a model's table: canary rows, the pooled line, size notes."""
    pooled = model.get("pooled") or {}
    return {
        "canaries": [r for r in canary_rows(report) if r["model"] == name],
        "pooled": ", ".join(
            f"{ATTACK_NAMES[a]} AUC {fmt_value(p['auc'])} ({p['sites']} sites)"
            for a, p in pooled.items()
        ),
        "notes": [
            f"{site}: {n}" for site, s in model["sites"].items() for n in s.get("notes", []) or []
        ],
    }


def render_markdown(report: Mapping[str, Any]) -> str:
    """The audit for people who read files: the verdict first, then a table per model."""
    return render(
        "audit.md.j2",
        report=report,
        verdict_text=verdict_text(report),
        intervals_text=INTERVALS_TEXT,
        canary_header=CANARY_HEADER,
        rows=site_rows(report),
        extras={name: _model_extras(report, name, m) for name, m in report["models"].items()},
    )


def render_html(report: Mapping[str, Any], deltas: Mapping[str, Mapping[str, float]]) -> str:
    """One self-contained page: tables and every site's ROC plot inline, nothing fetched."""
    plots = {
        name: {
            site: audit_roc_png(site, entry, (deltas.get(name) or {}).get(site))
            for site, entry in model["sites"].items()
            if entry.get("status") == STATUS_OK
        }
        for name, model in report["models"].items()
    }
    return render(
        "audit.html.j2",
        report=report,
        rows=site_rows(report),
        canaries=canary_rows(report),
        plots=plots,
        vclass=av.verdict_class,
        verdict_text=verdict_text(report),
        intervals_text=INTERVALS_TEXT,
    )


def write_audit_report(
    folder: RunFolder, report: dict[str, Any], deltas: Mapping[str, Mapping[str, float]]
) -> None:
    check_report("audit", report)
    folder.write_json(REPORT_JSON, report)
    (folder.path / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    (folder.path / REPORT_HTML).write_text(render_html(report, deltas), encoding="utf-8")
    folder.event("audit-report", verdict=report["verdict"])
