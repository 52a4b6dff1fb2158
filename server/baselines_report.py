"""The "is the run's model justified?" report: the sites' baseline suites, the federated logistic
baseline, the controls and (in simulation) the pooled reference, side by side with the run's model.

Everything here comes from aggregates the sites chose to send: metric panels, coarsened score
histograms and paired differences computed at the site. The best baseline is chosen on tune AUROC,
never on the test split it is then compared on. "The run's model is not better than logistic
regression on this data" is a valid verdict, and said plainly.

Layout: report_baselines_collect asks the sites (the only Grid I/O); this module builds the
report's data, checked against baselines.schema.json; report_baselines_markdown and the template
baselines.md.j2 render it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from scipy.stats import norm

from fedward.common.protocol import (
    FEDERATED_LOGISTIC,
    STATUS_OK,
)
from fedward.common.run_config import RunConfig
from fedward.common.run_plan import LABEL_SHUFFLE
from fedward.common.score_histograms import CoarseHistogram
from fedward.server.companions import LOSO_PREFIX, Companion, TuningSearch
from fedward.server.federation import FederationResult, describe_model
from fedward.server.pooled_metrics import pooled_panel
from fedward.server.report_baselines_collect import FAMILY_NAMES
from fedward.server.report_baselines_markdown import render_markdown
from fedward.server.report_format import fmt_fixed, signed
from fedward.server.report_schemas import check_report
from fedward.server.run_folder import RunFolder

REPORT_JSON = "baselines.json"
REPORT_MD = "baselines.md"
SHUFFLE_CHANCE_MARGIN = 0.1  # a shuffled-label model scoring AUROC above 0.6 learnt something else

# ---- the report ---------------------------------------------------------------------------------


def _z(confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2))


def combine_differences(
    per_site: Mapping[str, Mapping[str, Any]], weights: Mapping[str, float], confidence: float
) -> dict[str, Any] | None:
    """Sites are independent samples: a weighted mean of their paired differences, normal CI.

    Weights are the sites' test rows, so the figure is the test-row-weighted mean difference across
    sites (the pooled AUROC, which also compares rows across sites, is reported separately).
    """
    usable = {
        s: d
        for s, d in per_site.items()
        if d.get("difference") is not None and d.get("se") is not None and weights.get(s)
    }
    if not usable:
        return None
    total = sum(weights[s] for s in usable)
    diff = sum(weights[s] / total * float(d["difference"]) for s, d in usable.items())
    se = math.sqrt(sum((weights[s] / total) ** 2 * float(d["se"]) ** 2 for s, d in usable.items()))
    half = _z(confidence) * se
    return {
        "difference": diff,
        "lo": diff - half,
        "hi": diff + half,
        "se": se,
        "sites": sorted(usable),
        "method": "test-row-weighted mean of the sites' paired bootstrap differences, normal CI",
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _family_section(
    family: str, site_suites: Mapping[str, Mapping[str, Any]], bins: int, confidence: float
) -> dict[str, Any]:
    sites: dict[str, Any] = {}
    hists: dict[str, CoarseHistogram] = {}
    weights: dict[str, float] = {}
    tune: list[float] = []
    fit: list[float] = []
    memorises = None
    for site, suite in sorted(site_suites.items()):
        entry = (suite.get("families") or {}).get(family)
        if entry is None:
            sites[site] = {"status": suite.get("status", "missing"), "reason": suite.get("reason")}
            continue
        memorises = entry.get("memorises_rows", memorises)
        sites[site] = {
            k: entry.get(k)
            for k in (
                "status",
                "reason",
                "params",
                "selection",
                "tune_auroc",
                "fit_seconds",
                "n_configurations",
                "failed_configurations",
            )
        }
        if entry.get("fit_seconds") is not None:
            fit.append(float(entry["fit_seconds"]))
        if entry.get("status") != STATUS_OK:
            continue
        sites[site]["panel"] = entry["panel"]
        sites[site]["difference"] = entry["diff"] or None
        if entry.get("tune_auroc") is not None:
            tune.append(float(entry["tune_auroc"]))
        if entry["panel"].get("n"):
            weights[site] = float(entry["panel"]["n"])
        if entry["hist"]:
            hists[site] = CoarseHistogram.from_record(entry["hist"])
    return {
        "name": FAMILY_NAMES.get(family, family),
        "where": "at each site, on its own splits; only metrics left the site",
        "memorises_rows": memorises,
        "sites": sites,
        "pooled": pooled_panel(hists, bins) if hists else None,
        "mean_tune_auroc": _mean(tune),
        "fit_seconds_total": round(sum(fit), 3),
        "fit_seconds_slowest_site": round(max(fit), 3) if fit else None,
        "difference": combine_differences(
            {s: v.get("difference") or {} for s, v in sites.items()}, weights, confidence
        ),
    }


def _federated_logistic_section(
    companion: Companion, site_suites: Mapping[str, Mapping[str, Any]], confidence: float
) -> dict[str, Any]:
    summary = companion.summary
    test = summary.get("test") or {}
    diffs: dict[str, Any] = {}
    weights: dict[str, float] = {}
    for site, suite in site_suites.items():
        entry = (suite.get("families") or {}).get(FEDERATED_LOGISTIC)
        if entry and entry.get("diff"):
            diffs[site] = entry["diff"]
            n = ((test.get("sites") or {}).get(site) or {}).get("n")
            if n:
                weights[site] = float(n)
    return {
        "name": FAMILY_NAMES[FEDERATED_LOGISTIC],
        "where": "federated like the run's model (FedAvg, same DP and rounds); a shareable model",
        "memorises_rows": False,
        "sites": {
            site: {"panel": panel, "difference": diffs.get(site)}
            for site, panel in sorted((test.get("sites") or {}).items())
        },
        "pooled": test.get("pooled"),
        "mean_tune_auroc": summary.get("tune_auroc"),
        "train_seconds": summary.get("elapsed_s"),
        "status": summary.get("status"),
        "difference": combine_differences(diffs, weights, confidence),
    }


def verdict(run_model: str, best: dict[str, Any] | None, equal_budget: bool) -> str:
    """One plain sentence (and a caveat when the tuning effort was not equal)."""
    if best is None:
        return "No baseline could be fitted and compared on this data; no verdict."
    diff = best.get("difference")
    name = best["name"]
    if diff is None:
        return f"The best baseline ({name}) could not be compared with the run's model on the same rows; no verdict."
    d, lo, hi = diff["difference"], diff["lo"], diff["hi"]
    ci = f"AUROC difference {signed(d)} [{signed(lo)}, {signed(hi)}]"
    if best.get("family") != FEDERATED_LOGISTIC:
        name = f"{name} fitted at each site alone"
    model = f"The federated model ({run_model})"
    if lo > 0:
        text = f"{model} is better than {name} on this data: {ci}."
    elif hi < 0:
        text = f"{model} is worse than {name} on this data: {ci}; prefer the baseline."
    else:
        text = (
            f"{model} is not better than {name} on this data: {ci}, an interval that "
            "includes 0; the simpler model does as well."
        )
    if not equal_budget:
        text += (
            " The run's model was not tuned (one configuration) while each baseline family had "
            "the full search budget: the comparison favours the baselines."
        )
    return text


def baselines_report(
    run: RunConfig,
    result: FederationResult,
    companions: Mapping[str, Companion],
    site_suites: Mapping[str, Mapping[str, Any]],
    *,
    pooled: dict[str, Any] | None,
    search: TuningSearch | None,
) -> dict[str, Any]:
    conf = run.evaluation.confidence
    bins = run.evaluation.histogram_bins
    # Keyed by family name: the run's BaselineFamily names and the federated baseline's.
    families: dict[str, dict[str, Any]] = {
        f: _family_section(f, site_suites, bins, conf)
        for f in run.baselines.families
        if site_suites
    }
    if FEDERATED_LOGISTIC in companions:
        families[FEDERATED_LOGISTIC] = _federated_logistic_section(
            companions[FEDERATED_LOGISTIC], site_suites, conf
        )
    ranked = [
        (sec["mean_tune_auroc"], key)
        for key, sec in families.items()
        if sec.get("mean_tune_auroc") is not None
    ]
    best = None
    if ranked:
        score, key = max(ranked)
        best = {
            "family": key,
            "name": families[key]["name"],
            "tune_auroc": score,
            "selected_on": "mean of the sites' tune AUROCs, never the test split",
            "difference": families[key]["difference"],
        }
    model_desc = describe_model(run)
    tuned = search is not None
    equal = tuned and search is not None and search.budget == run.tuning.budget
    failures = [
        f"{site}: {sec['name']}: {entry.get('reason') or entry.get('status')}"
        for sec in families.values()
        for site, entry in sec["sites"].items()
        if entry.get("status") not in (None, STATUS_OK)
    ]
    failures += [
        f"{site}: baseline suite {suite.get('status')}: {suite.get('reason')}"
        for site, suite in site_suites.items()
        if suite.get("status") != STATUS_OK
    ]
    sites = result.tracker.site_summary()
    return {
        "run_id": result.federation.run_id,
        "metric": "AUROC (higher is better); panels also hold AUPRC, balanced accuracy, Brier, ECE",
        "run_model": {
            "description": model_desc,
            "is_logistic": run.model.kind == "logistic",
            "tuned": tuned,
            "configurations": search.budget if search is not None else 1,
            "train_seconds": round(result.elapsed, 3),
            "test": result.test,
            "epsilon": {s["site"]: s.get("epsilon") for s in sites},
        },
        "budget": {
            "configurations_per_family": run.tuning.budget,
            "search": run.tuning.search,
            "run_model_configurations": search.budget if search is not None else 1,
            "equal": equal,
            "selected_on": "the tune split (AUROC); the test split is read once, by final models",
        },
        "families": families,
        "best_baseline": best,
        "verdict": verdict(model_desc, best, equal),
        "controls": _controls(result, companions),
        "pooled_reference": pooled,
        "tuning": search.to_dict() if search is not None else None,
        "tuning_epsilon": {s["site"]: s.get("epsilon_tuning") for s in sites} if tuned else None,
        "failures": failures,
        "privacy": "Local baselines are not DP: their metrics, chosen settings and fit times are "
        "non-DP aggregates protected only by minimum cell sizes. Fitted kNN, SVM and forest "
        "models never leave their site.",
    }


def _controls(result: FederationResult, companions: Mapping[str, Companion]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    shuffle = companions.get(LABEL_SHUFFLE)
    if shuffle is not None:
        test = shuffle.summary.get("test") or {}
        within = [
            float(panel["auroc"])
            for panel in (test.get("sites") or {}).values()
            if panel.get("auroc") is not None
        ]
        mean = sum(within) / len(within) if within else None
        pooled = (test.get("pooled") or {}).get("auroc")
        passed = mean is not None and abs(mean - 0.5) <= SHUFFLE_CHANCE_MARGIN
        out["label_shuffle"] = {
            "test": test,
            "mean_site_auroc": mean,
            "pooled_auroc": pooled,
            "passed": passed,
            "reading": (
                f"trained on permuted labels, the model scores a mean within-site test AUROC of "
                f"{fmt_fixed(mean)} (chance 0.5): "
                + (
                    "no sign of memorisation or leakage"
                    if passed
                    else "FAILED: above chance on shuffled labels; look for leakage between "
                    "splits or a label-dependent feature"
                )
                + f". Its pooled AUROC ({fmt_fixed(pooled)}) can sit above 0.5 when the sites' "
                "prevalences differ: shuffling within a site keeps its prevalence, so the model "
                "may still learn which site a row comes from."
            ),
        }
    loso = {k: v for k, v in companions.items() if k.startswith(LOSO_PREFIX)}
    if loso:
        main_sites = (result.test or {}).get("sites") or {}
        rows = {}
        for comp in loso.values():
            for site in comp.summary.get("left_out", []):
                held = ((comp.summary.get("test") or {}).get("sites") or {}).get(site) or {}
                own = main_sites.get(site) or {}
                rows[site] = {
                    "auroc_left_out": held.get("auroc"),
                    "auroc_left_out_lo": held.get("auroc_lo"),
                    "auroc_left_out_hi": held.get("auroc_hi"),
                    "auroc_with_site": own.get("auroc"),
                    "status": comp.summary.get("status"),
                    "stopped_reason": comp.summary.get("stopped_reason"),
                    "train_seconds": comp.summary.get("elapsed_s"),
                }
        out["leave_one_site_out"] = {
            "sites": rows,
            "reading": "AUROC on each site's test split of a model trained without that site, "
            "next to the run's model (trained with it): the drop is what a new hospital can expect.",
        }
    return out


def write_baselines_report(folder: RunFolder, report: dict[str, Any]) -> None:
    check_report("baselines", report)
    folder.write_json(REPORT_JSON, report)
    (folder.path / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    folder.event("baselines-report", verdict=report["verdict"])
