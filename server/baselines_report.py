"""The "is the run's model justified?" report: the sites' baseline suites, the federated logistic
baseline, the controls and (in simulation) the pooled reference, side by side with the run's model.

Everything here comes from aggregates the sites chose to send: metric panels, coarsened score
histograms and paired differences computed at the site. The best baseline is chosen on tune AUROC,
never on the test split it is then compared on. "The run's model is not better than logistic
regression on this data" is a valid verdict, and said plainly.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Mapping
from logging import WARNING
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from scipy.stats import norm

from fedward.common.config import RunConfig
from fedward.common.metrics import PANEL_KEYS, CoarseHistogram, pooled_panel
from fedward.common.preprocessing import SharedTransform
from fedward.common.protocol import (
    ARRAYS,
    ARRAYS_FEDERATED_LOGISTIC,
    BASELINE_PREFIX,
    CONFIG,
    FEDERATED_LOGISTIC,
    KEY_BASELINES,
    MSG_BASELINES,
    STATUS_OK,
)
from fedward.common.run_plan import LABEL_SHUFFLE
from fedward.server.companions import LOSO_PREFIX, Companion, TuningSearch
from fedward.server.federation import Federation, FederationResult, describe_model
from fedward.server.run_folder import RunFolder

REPORT_JSON = "baselines.json"
REPORT_MD = "baselines.md"
POOLED_REFERENCE_REF = "fedward.client.pooled_reference:pooled_reference"
SHUFFLE_CHANCE_MARGIN = 0.1  # a shuffled-label model scoring AUROC above 0.6 learnt something else

FAMILY_NAMES = {
    "logistic_regression": "logistic regression",
    "random_forest": "random forest",
    "knn": "k-nearest neighbours",
    "naive_bayes": "naive Bayes",
    "svm": "SVM",
    "hist_gradient_boosting": "gradient boosting",
    FEDERATED_LOGISTIC: "federated logistic regression",
}


# ---- asking the sites -----------------------------------------------------------------------------


def site_baselines(
    grid: Grid, main: Federation, result: FederationResult, companions: Mapping[str, Companion]
) -> dict[str, dict[str, Any]]:
    """Each site that trained tunes and tests the suite; returns its reply's fields, by site.

    A site that refuses or fails is reported as such; the report still completes.
    """
    run = main.run
    spec = {
        "families": list(run.baselines.families),
        "budget": run.tuning.budget,
        "search": run.tuning.search,
    }
    config = ConfigRecord({**main.config(), KEY_BASELINES: json.dumps(spec)})
    nodes = [n for n, rec in result.tracker.sites.items() if rec.status == STATUS_OK]
    content: dict[str, Any] = {ARRAYS: result.final_arrays, CONFIG: config}
    fed_lr = companions.get(FEDERATED_LOGISTIC)
    if fed_lr is not None and fed_lr.arrays is not None:
        content[ARRAYS_FEDERATED_LOGISTIC] = fed_lr.arrays
    messages = [
        Message(RecordDict(dict(content)), dst_node_id=n, message_type=MSG_BASELINES) for n in nodes
    ]
    main.folder.event("baselines-started", sites=len(nodes), **spec)
    out = {
        site: {"status": STATUS_OK, **_unflatten(info)} if info.get("status") == STATUS_OK else info
        for site, info in result.tracker.ask(
            grid, messages, "baselines", run.strategy.round_timeout
        ).items()
    }
    main.folder.event("baselines-finished", sites=sorted(out))
    return out


def _unflatten(info: Mapping[str, Any]) -> dict[str, Any]:
    """``baseline_<family>_<key>`` reply fields -> ``{"families": {family: {...}}}``."""
    families: dict[str, dict[str, Any]] = {}
    names = sorted(FAMILY_NAMES, key=len, reverse=True)
    for key, value in info.items():
        if not key.startswith(BASELINE_PREFIX) or key == "baseline_families":
            continue
        rest = key[len(BASELINE_PREFIX) :]
        family = next((f for f in names if rest.startswith(f + "_")), None)
        if family is None:
            continue
        field = rest[len(family) + 1 :]
        entry = families.setdefault(family, {"panel": {}, "hist": {}, "diff": {}})
        if field in PANEL_KEYS:
            entry["panel"][field] = value
        elif field.startswith("hist_"):
            entry["hist"][field[len("hist_") :]] = value
        elif field.startswith("diff_auroc"):
            entry["diff"][field[len("diff_auroc") :].lstrip("_") or "difference"] = value
        elif field == "params":
            entry["params"] = json.loads(str(value))
        else:
            entry[field] = value
    for entry in families.values():
        for name in entry.pop("undefined_metrics", []) or []:
            entry["panel"].setdefault(str(name), None)
    return {"families": families, "n_train": info.get("n_train")}


def pooled_reference(
    run: RunConfig, sim_site_configs: list[str], transform: SharedTransform, n_sites: int
) -> dict[str, Any]:
    """Simulation only: the run's model and the suite trained on every simulated site's data pooled.

    The developer's machine holds all simulated data anyway; the code lives with the site's (it
    reads site data) and is loaded by reference, as Flower loads the ClientApp.
    """
    module, _, attr = POOLED_REFERENCE_REF.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    try:
        return dict(
            fn(
                run,
                sim_site_configs,
                transform.to_dict(),
                n_sites=n_sites,
                baseline_budget=run.tuning.budget,
                search=run.tuning.search,
                families=list(run.baselines.families),
            )
        )
    except Exception as exc:  # the reference is a nicety: the run's report must still complete
        log(WARNING, "pooled reference failed: %s", exc)
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}


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


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:+.{digits}f}" if digits < 0 else f"{x:.{digits}f}"
    return str(x)


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def verdict(run_model: str, best: dict[str, Any] | None, equal_budget: bool) -> str:
    """One plain sentence (and a caveat when the tuning effort was not equal)."""
    if best is None:
        return "No baseline could be fitted and compared on this data; no verdict."
    diff = best.get("difference")
    name = best["name"]
    if diff is None:
        return f"The best baseline ({name}) could not be compared with the run's model on the same rows; no verdict."
    d, lo, hi = diff["difference"], diff["lo"], diff["hi"]
    ci = f"AUROC difference {_signed(d)} [{_signed(lo)}, {_signed(hi)}]"
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
    families = {
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
                f"{_fmt(mean)} (chance 0.5): "
                + (
                    "no sign of memorisation or leakage"
                    if passed
                    else "FAILED: above chance on shuffled labels; look for leakage between "
                    "splits or a label-dependent feature"
                )
                + f". Its pooled AUROC ({_fmt(pooled)}) can sit above 0.5 when the sites' "
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


# ---- Markdown ---------------------------------------------------------------------------------


def _ci(panel: Mapping[str, Any] | None, key: str = "auroc") -> str:
    if not panel or panel.get(key) is None:
        return "–"
    lo, hi = panel.get(f"{key}_lo"), panel.get(f"{key}_hi")
    if lo is None or hi is None:
        return f"{panel[key]:.3f}"
    return f"{panel[key]:.3f} [{lo:.3f}, {hi:.3f}]"


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


def _diff(d: Mapping[str, Any] | None) -> str:
    if not d or d.get("difference") is None:
        return "–"
    if d.get("lo") is None or d.get("hi") is None:
        return _signed(float(d["difference"]))
    return (
        f"{_signed(float(d['difference']))} [{_signed(float(d['lo']))}, {_signed(float(d['hi']))}]"
    )


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
        f"{_ci(test.get('pooled') or {})} | – | – | {rm['train_seconds']:.1f} s |",
    ]
    for sec in report["families"].values():
        where = "federated" if "federated" in sec["where"] else "local"
        time_s = sec.get("train_seconds", sec.get("fit_seconds_total"))
        lines.append(
            f"| {sec['name']}{' ⁺' if sec.get('memorises_rows') else ''} | {where} | "
            f"{_ci(sec.get('pooled'))} | {_diff(sec.get('difference'))} | "
            f"{_fmt(sec.get('mean_tune_auroc'))} | {_fmt(time_s, 1)} s |"
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
            + " | ".join(_ci((test.get("sites") or {}).get(s)) for s in site_names)
            + " |",
        ]
        for sec in report["families"].values():
            cells = []
            for s in site_names:
                entry = sec["sites"].get(s) or {}
                if entry.get("panel"):
                    cells.append(_ci(entry["panel"]))
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
                    f"| {site} | {_ci({'auroc': row['auroc_left_out'], 'auroc_lo': row['auroc_left_out_lo'], 'auroc_hi': row['auroc_left_out_hi']})} "
                    f"| {_fmt(row['auroc_with_site'])} |"
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
                f"| run model, centralised | {_ci(model.get('test'))} | "
                f"{_fmt(model.get('train_seconds'), 1)} s |"
            )
            for fam, entry in ((pooled.get("baselines") or {}).get("families") or {}).items():
                lines.append(
                    f"| {FAMILY_NAMES.get(fam, fam)}, centralised | {_ci(entry.get('test'))} | "
                    f"{_fmt(entry.get('fit_seconds'), 1)} s |"
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
                lines.append(f"| {site} | {_fmt(e, 2)} | {_fmt(rm['epsilon'].get(site), 2)} |")
            lines.append("")
    if report.get("failures"):
        lines += ["## Baselines that could not be fitted", ""]
        lines += [f"- {f}" for f in report["failures"]]
        lines.append("")
    lines += ["## Privacy", "", report["privacy"], ""]
    return "\n".join(lines)


def write_baselines_report(folder: RunFolder, report: dict[str, Any]) -> None:
    folder.write_json(REPORT_JSON, report)
    (folder.path / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    folder.event("baselines-report", verdict=report["verdict"])
