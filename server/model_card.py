"""The model card of a finished run: what the model is for, how well it did where, what it costs in
privacy, and whether it may leave the coordinator.

The sections are Mitchell et al.'s (2019, "Model Cards for Model Reporting", FAT*): model details,
intended use, factors, metrics, evaluation data, training data, quantitative analyses, ethical
considerations, caveats and recommendations. The JSON is shaped like Google's Model Card Toolkit
schema (v0.0.2 objects; ``data`` with ``train``/``eval`` as in v0.0.1) so that MCT-aware tools can
read its core, with fedward's extensions beside it: ``privacy`` (no model-card tool has one),
``baselines``, ``provenance``, ``training_data_profiles`` and ``verdicts`` (what the release gate
reads). A failed audit or a run without DP is said first: ``warnings`` is the JSON's first key, and
a banner opens the Markdown and the HTML.

Everything here is read from the run folder; nothing is recomputed from data, so the card can be
regenerated at any time (``fedward card RUN_DIR``) and says the same thing for the same folder.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeGuard

from jinja2 import Environment, select_autoescape

from fedward.common.config import CardConfig, RunConfig, run_schema, validate_config
from fedward.common.durable_files import atomic_write_bytes
from fedward.common.errors import FedwardError
from fedward.common.metrics import n_weighted, pooled_coverage
from fedward.common.protocol import PRIVACY_SUMMARY_KEYS
from fedward.server import card_plots
from fedward.server.audit_report import fmt_value
from fedward.server.companions import COMPANIONS_DIR, LOSO_PREFIX
from fedward.server.privacy_figures import trained_rounds_text
from fedward.server.release import (
    RELEASES_FILE,
    SIGNED_FILES,
    SIGNOFFS_FILE,
    sha256_file,
    signoff_signature_problem,
)

CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"
SCHEMA_FILE = "model_card.schema.json"
SCHEMA_VERSION = "fedward-model-card/1"
ENCRYPTED_INFERENCE_FILE = "encrypted_inference.json"
NOT_DONE = "not done"

# What a finished run folder holds, and what its absence means.
REQUIRED_FILES = {
    "manifest.json": "written when a run starts; this is not a fedward run folder",
    "run_config.json": "written when a run starts; this is not a fedward run folder",
    "run_record.json": "written when a run ends; the run has not finished",
    "privacy_summary.json": "written when a run ends; the run has not finished",
    "metrics.json": "written when a run ends; the run has not finished",
    "transform.json": "the frozen preprocessing; the run did not get past its start",
    "model.json": "written only when a run trains to the end; the run stopped or has not finished",
}
OPTIONAL_FILES = {
    "baselines.json": "baselines were switched off for this run (baselines.enabled = false)",
    "audit.json": "the membership-inference audit was switched off (audit.enabled = false) or has "
    "not run; run `fedward audit RUN_DIR`",
    "profiles.json": "the sites' training-data profiles were not collected for this run",
}

# Mitchell et al.'s sections and where each lives in the card's JSON.
MITCHELL_SECTIONS: dict[str, tuple[str, ...]] = {
    "Model details": ("model_details",),
    "Intended use": ("considerations", "use_cases"),
    "Factors": ("factors",),
    "Metrics": ("metrics",),
    "Evaluation data": ("model_parameters", "data", "eval"),
    "Training data": ("model_parameters", "data", "train"),
    "Quantitative analyses": ("quantitative_analysis",),
    "Ethical considerations": ("considerations", "ethical_considerations"),
    "Caveats and recommendations": ("considerations", "limitations"),
}

PANEL_METRICS = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "balanced_accuracy": "balanced accuracy (threshold 0.5)",
    "brier": "Brier score (lower is better)",
    "ece": "expected calibration error (lower is better)",
    "accuracy": "accuracy (threshold 0.5)",
    "recall_at_fdr": "recall at 10% false discovery rate",
    "prevalence": "prevalence (the AUPRC of a random model)",
    "n": "test rows",
}
THRESHOLDED = {"balanced_accuracy", "accuracy"}
POOLED_LOCAL_NOTE = (
    "A local baseline is a separate model at each site: its pooled AUROC mixes scores that no "
    "single model gave, so it reads low. Δ compares the run's model and the baseline on the same "
    "test rows at each site, and is the comparison to read."
)
ATTACK_FIGURES = (
    "auc",
    "auc_lo",
    "auc_hi",
    "tpr_at_fpr_10",
    "tpr_at_fpr_10_lo",
    "tpr_at_fpr_10_hi",
    "tpr_at_fpr_1",
    "tpr_at_fpr_1_lo",
    "tpr_at_fpr_1_hi",
    "tpr_at_fpr_0_1",
    "advantage",
)
PRIVACY_SITE_KEYS = tuple(k for k in PRIVACY_SUMMARY_KEYS if k != "refusals")
REFERENCES = (
    "https://doi.org/10.1145/3287560.3287596",  # Mitchell et al. 2019, model cards
    "https://github.com/tensorflow/model-card-toolkit",
    "https://doi.org/10.1145/2976749.2978318",  # Abadi et al. 2016, DP-SGD
    "https://arxiv.org/abs/2112.03570",  # Carlini et al. 2022, LiRA
    "https://arxiv.org/abs/2305.08846",  # Steinke, Nasr, Jagielski 2023, one-run audit
)
DP_SGD_REFERENCE = REFERENCES[2]
# What a model trained without DP sends out beyond the aggregates the sites list: itself.
NON_DP_MODEL_OUTPUTS = (
    "the model weights (model.pt): trained without DP, nothing bounds what they reveal about "
    "the training rows",
    "every model update the sites sent during training",
)
# Claims an ethics entry can make that only some runs make true, and the control behind each.
_DP_CLAIM = re.compile(r"\bDP\b|DP-SGD|differential(ly)?[ -]priva", re.IGNORECASE)
_CONTROL_CLAIMS = {
    "leave_one_site_out": (
        re.compile(r"leave[- ]one[- ]site[- ]out", re.IGNORECASE),
        "leave-one-site-out evaluation did not run for this run",
    ),
    "label_shuffle": (
        re.compile(r"label[- ]shuffl|shuffled labels|permuted labels", re.IGNORECASE),
        "the label-shuffle control did not run for this run",
    ),
}
# The release line's states, in the order a model moves through them.
RELEASE_STATES = ("not eligible", "eligible for sign-off", "signed off", "released")
# Bundled datasets: (reference, citation, license); see common/datasets/PROVENANCE.md.
BUNDLED_DATA = {
    "heart-disease": (
        "https://doi.org/10.24432/C52P4X",
        "Janosi, A., Steinbrunn, W., Pfisterer, M., Detrano, R. (1988). Heart Disease. UCI "
        "Machine Learning Repository. doi:10.24432/C52P4X.",
        "CC BY 4.0",
    ),
    "breast-cancer": (
        "https://doi.org/10.24432/C5DW2B",
        "Wolberg, W., Street, W., Mangasarian, O. (1995). Breast Cancer Wisconsin (Diagnostic). "
        "UCI Machine Learning Repository. doi:10.24432/C5DW2B.",
        "CC BY 4.0",
    ),
    "digits": (
        "https://doi.org/10.24432/C50P49",
        "Alpaydin, E., Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI Machine "
        "Learning Repository. doi:10.24432/C50P49.",
        "CC BY 4.0",
    ),
}


class RunNotFinished(FedwardError, FileNotFoundError):
    """The folder lacks a file a finished run writes; the message names it and what it means."""


# ---- reading the run folder ---------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunNotFinished(f"{path} cannot be read as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RunNotFinished(f"{path} does not hold a JSON object")
    return data


def load_run(run_dir: str | Path) -> dict[str, dict[str, Any] | None]:
    """Every file the card reads, by name; an optional file that is absent is None."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunNotFinished(f"{path} is not a folder: give a finished fedward run folder")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        record = path / "run_record.json"
        status = ""
        if record.is_file():
            data = _read(record)
            if data.get("status") != "finished":
                status = (
                    f" (run_record.json says the run {data.get('status')}: "
                    f"{data.get('stopped_reason') or 'no reason given'})"
                )
        listing = "; ".join(f"{n} is missing ({REQUIRED_FILES[n]})" for n in missing)
        raise RunNotFinished(f"{path}: no model card for an unfinished run{status}: {listing}")
    out: dict[str, dict[str, Any] | None] = {n: _read(path / n) for n in REQUIRED_FILES}
    for name in (*OPTIONAL_FILES, ENCRYPTED_INFERENCE_FILE):
        out[name] = _read(path / name) if (path / name).is_file() else None
    return out


def _finite(x: Any) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _not_done(name: str) -> dict[str, Any]:
    return {
        "done": False,
        "status": NOT_DONE,
        "reason": f"{name} is missing: {OPTIONAL_FILES[name]}",
    }


# ---- sections -----------------------------------------------------------------------------------


def _architecture(model: Mapping[str, Any]) -> str:
    n_in = model.get("n_inputs")
    kind = model.get("kind")
    if kind == "logistic":
        return f"logistic regression: {n_in} inputs → 1 logit"
    hidden = "-".join(str(h) for h in model.get("hidden") or [])
    act = model.get("activation", "relu")
    if kind == "cnn":
        return f"convolutional network on images of shape {model.get('image_shape')} → 1 logit"
    return f"multilayer perceptron {n_in}-{hidden}-1 ({act} activations) → 1 logit"


def _model_name(model: Mapping[str, Any]) -> str:
    kind = model.get("kind")
    if kind == "logistic":
        return "logistic regression"
    if kind == "cnn":
        return "convolutional network"
    hidden = ", ".join(str(h) for h in model.get("hidden") or [])
    return f"multilayer perceptron ({hidden}; {model.get('activation', 'relu')})"


def _label_text(config: Mapping[str, Any]) -> str | None:
    """The positive class as a rule on the label column, from the run's data schema."""
    try:
        schema = run_schema(RunConfig.model_validate(config))
    except (ValueError, FedwardError, OSError):
        return None
    label = schema.label
    if label.positive_above is not None:
        return f"{label.column} > {label.positive_above:g}"
    if label.positive_values:
        return f"{label.column} in {{{', '.join(str(v) for v in label.positive_values)}}}"
    return f"{label.column} = 1"


def _input_format(transform: Mapping[str, Any]) -> str:
    parts = []
    for col in transform.get("columns") or []:
        if col.get("kind") == "numeric":
            text = f"{col['name']} (numeric, declared range {col.get('lo')}–{col.get('hi')})"
        else:
            text = f"{col['name']} (one of: {', '.join(col.get('categories') or [])})"
        if col.get("missing_indicator"):
            text += " + a missing-value indicator"
        parts.append(text)
    return (
        "One row per patient with the columns "
        + "; ".join(parts)
        + f". Preprocessed by the frozen transform (source: {transform.get('source')}) shipped "
        "as transform.json: missing values imputed with declared values, numbers scaled by "
        "declared ranges, categories one-hot encoded."
    )


def _metric(
    key: str, panel: Mapping[str, Any], slice_: str, *, with_ci: bool = True
) -> dict[str, Any] | None:
    value = panel.get(key)
    if not _finite(value):
        return None
    out: dict[str, Any] = {"type": key, "value": float(value), "slice": slice_}
    lo, hi = panel.get(f"{key}_lo"), panel.get(f"{key}_hi")
    if with_ci and _finite(lo) and _finite(hi):
        out["confidence_interval"] = {"lower_bound": float(lo), "upper_bound": float(hi)}
    if key in THRESHOLDED:
        out["threshold"] = 0.5
    return out


def _performance(
    test: Mapping[str, Any], baselines: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """MCT performance metrics: each site's panel with its bootstrap CI, the pooled panel, LOSO."""
    out = []
    for site, panel in sorted((test.get("sites") or {}).items()):
        for key in PANEL_METRICS:
            if (m := _metric(key, panel or {}, f"site={site}")) is not None:
                out.append(m)
    for key in PANEL_METRICS:
        if (m := _metric(key, test.get("pooled") or {}, "pooled")) is not None:
            out.append(m)
    loso = ((baselines or {}).get("controls") or {}).get("leave_one_site_out") or {}
    for site, row in sorted((loso.get("sites") or {}).items()):
        panel = {
            "auroc": row.get("auroc_left_out"),
            "auroc_lo": row.get("auroc_left_out_lo"),
            "auroc_hi": row.get("auroc_left_out_hi"),
        }
        if (m := _metric("auroc", panel, f"left_out={site}")) is not None:
            out.append(m)
    return out


def _sites_rows(
    profiles: Mapping[str, Any] | None, split: str, fallback: Mapping[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    sites = (profiles or {}).get("sites") or {}
    for site in sorted(set(sites) | set(fallback)):
        prof = sites.get(site) or {}
        n = (prof.get("splits") or {}).get(split)
        if n is None:
            n = fallback.get(site)
        rows.append({"site": site, "rows": int(n) if _finite(n) else None})
    return rows


def _train_rows(metrics: Mapping[str, Any]) -> dict[str, Any]:
    for entry in reversed(metrics.get("train") or []):
        sites = entry.get("sites") or {}
        if sites:
            return {s: v.get("num_examples") for s, v in sites.items()}
    return {}


def _data(
    files_: Mapping[str, Any], test: Mapping[str, Any], datasets: Mapping[str, str], dp: bool
) -> dict[str, Any]:
    """MCT's train and eval datasets: which split at which site, and how many rows."""
    profiles = files_["profiles.json"]
    name = files_["run_config.json"].get("task", {}).get("dataset") or "each site's own table"
    train_sites = _sites_rows(profiles, "train", _train_rows(files_["metrics.json"]))
    eval_sites = _sites_rows(
        profiles, "test", {s: (p or {}).get("n") for s, p in (test.get("sites") or {}).items()}
    )
    sensitive = {
        "sensitive_data": [
            "patient records held by each site; they never left the sites, only aggregates did"
        ]
    }
    for row in train_sites + eval_sites:
        if row["site"] in datasets:
            row["dataset"] = datasets[row["site"]]
    return {
        "train": {
            "name": f"{name}: training splits",
            "sensitive": sensitive,
            "description": "Each site's training split, used only at the site "
            + ("(DP-SGD). " if dp else "(plain training, without differential privacy). ")
            + "The coordinator never saw a row; what it knows is the aggregate profile in "
            "training_data_profiles (small cells suppressed).",
            "sites": train_sites,
        },
        "eval": {
            "name": f"{name}: sealed test splits",
            "sensitive": sensitive,
            "description": "Each site's sealed test split, never trained or tuned on and read "
            "once by the final model. Settings were chosen on separate tune splits. The split is "
            "drawn at each site with the run's seed (stratified by label; patients kept whole).",
            "sites": eval_sites,
        },
    }


def _audit(audit: Mapping[str, Any] | None) -> dict[str, Any]:
    """The audit's verdicts and per-site figures, with the ROC histograms the card plots."""
    if audit is None:
        return _not_done("audit.json")
    models = {}
    for name, model in (audit.get("models") or {}).items():
        sites = {}
        for site, entry in (model.get("sites") or {}).items():
            if entry.get("status") != "ok":
                sites[site] = {
                    "status": entry.get("status"),
                    "reason": entry.get("reason"),
                    "verdict": entry.get("verdict"),
                }
                continue
            canary = entry.get("canary") or {}
            sites[site] = {
                "status": "ok",
                "verdict": entry.get("verdict"),
                "epsilon_accountant": entry.get("epsilon_accountant"),
                "epsilon_lower_bound": canary.get("epsilon_lb"),
                "epsilon_lower_bound_confidence": canary.get("epsilon_lb_confidence"),
                "epsilon_claimed": canary.get("epsilon_claimed"),
                "n_members": entry.get("n_members"),
                "n_nonmembers": entry.get("n_nonmembers"),
                "attacks": {
                    attack: {
                        **{k: r.get(k) for k in ATTACK_FIGURES if k in r},
                        "hist": r.get("hist"),
                    }
                    for attack, r in (entry.get("attacks") or {}).items()
                },
                "flags": list(entry.get("flags") or []),
                "failures": list(entry.get("failures") or []),
                "notes": list(entry.get("notes") or []),
            }
        models[name] = {
            "description": model.get("description", name),
            "verdict": model.get("verdict"),
            "pooled": model.get("pooled") or {},
            "sites": sites,
        }
    flags = [f for m in (audit.get("models") or {}).values() for f in m.get("flags") or []]
    failures = [f for m in (audit.get("models") or {}).values() for f in m.get("failures") or []]
    return {
        "done": True,
        "verdict": str(audit.get("verdict") or "inconclusive"),
        "passed": str(audit.get("verdict") or "").startswith("pass"),
        "thresholds": audit.get("thresholds") or {},
        "flags": flags,
        "failures": failures,
        "caveats": list(audit.get("caveats") or []),
        "how": audit.get("how"),
        "models": models,
    }


def _privacy(files_: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """The privacy extension: the figures exactly as privacy_summary.json states them."""
    summary = files_["privacy_summary.json"]
    record = files_["run_record.json"].get("privacy") or {}
    he = files_[ENCRYPTED_INFERENCE_FILE] or {}
    he_compatible = model.get("kind") == "logistic" or (
        model.get("kind") == "mlp" and model.get("activation") == "square"
    )
    sites = [{k: s.get(k) for k in PRIVACY_SITE_KEYS} for s in summary.get("sites") or []]
    central = dict(summary.get("central_dp") or {"enabled": False})
    secagg = dict(summary.get("secure_aggregation") or {"enabled": False})
    dp = bool(summary.get("dp"))
    non_dp = list(record.get("non_dp_outputs") or [])
    non_dp_note = record.get("non_dp_note")
    if not dp:
        # Plain training clips nothing and no accountant runs: no unit, norm or accountant stated.
        updates = NON_DP_MODEL_OUTPUTS[1] + (
            " (masked by secure aggregation: the coordinator saw only their sum)"
            if secagg.get("enabled")
            else " (in the clear to the coordinator)"
        )
        non_dp = [NON_DP_MODEL_OUTPUTS[0], updates, *non_dp]
        non_dp_note = (
            "Trained without differential privacy: the weights and the updates are protected by "
            "nothing; the aggregates only by the sites' minimum cell sizes, and small-cell "
            "suppression is not differential privacy."
        )
    return {
        "dp": dp,
        "mechanism": "DP-SGD (Abadi et al. 2016) at each site, with Opacus; Poisson sampling"
        if summary.get("dp")
        else "none: trained without differential privacy",
        "privacy_unit": summary.get("privacy_unit") if dp else None,
        "target_epsilon": summary.get("target_epsilon") if dp else None,
        "clipping_norm": summary.get("max_grad_norm") if dp else None,
        "accountant_requested": summary.get("accountant_requested") if dp else None,
        "accountant_note": summary.get("accountant_note") if dp else None,
        "epsilon_covers": list(record.get("epsilon_covers") or []),
        "sites": sites,
        "tuning_epsilon": {s["site"]: s.get("epsilon_tuning") for s in sites},
        "central_dp_used": bool(central.get("enabled")),
        "central_dp": central,
        "secure_aggregation_used": bool(secagg.get("enabled")),
        "secure_aggregation": secagg,
        "audit": _audit(files_["audit.json"]),
        "encrypted_inference": {
            "offered": bool(he.get("offered", False)),
            "he_compatible_model": he_compatible,
            "note": str(
                he.get("note")
                or "Not offered for this run: no encrypted-inference service was set up for it."
                + (
                    " The model is linear or square-activated, so it can be evaluated under CKKS."
                    if he_compatible
                    else " Its activations would need a polynomial approximation under CKKS."
                )
            ),
        },
        "non_dp_outputs": non_dp,
        "non_dp_note": non_dp_note,
    }


def _baselines(report: Mapping[str, Any] | None) -> dict[str, Any]:
    """Whether the model earns its complexity: the baselines report's verdict and table."""
    if report is None:
        return _not_done("baselines.json")
    run_model = report.get("run_model") or {}
    comparison = [
        {
            "model": f"run model ({run_model.get('description')})",
            "where": "federated",
            "pooled_auroc": ((run_model.get("test") or {}).get("pooled") or {}).get("auroc"),
            "difference": None,
            "mean_tune_auroc": None,
        }
    ]
    for sec in (report.get("families") or {}).values():
        comparison.append(
            {
                "model": sec.get("name"),
                "where": "federated" if "federated" in str(sec.get("where")) else "local",
                "pooled_auroc": (sec.get("pooled") or {}).get("auroc"),
                "difference": sec.get("difference"),
                "mean_tune_auroc": sec.get("mean_tune_auroc"),
            }
        )
    best = dict(report.get("best_baseline") or {})
    if best:
        fam = (report.get("families") or {}).get(best.get("family")) or {}
        best["pooled_auroc"] = (fam.get("pooled") or {}).get("auroc")
    controls = {}
    for name, control in (report.get("controls") or {}).items():
        controls[name] = {k: v for k, v in control.items() if k != "test"}
    ref = report.get("pooled_reference") or {}
    pooled_reference = None
    if ref and ref.get("status") != "failed":
        ref_model = ref.get("model") or {}
        pooled_reference = {
            "auroc": (ref_model.get("test") or {}).get("auroc"),
            "epsilon": ref_model.get("epsilon") if ref_model.get("dp") else None,
            "dp": ref_model.get("dp"),
            "note": "simulation only: every site's data pooled in one place, the reference a "
            "federation should approach",
        }
    return {
        "done": True,
        "verdict": report.get("verdict"),
        "metric": report.get("metric"),
        "best_baseline": best or None,
        "comparison": comparison,
        "controls": controls,
        "pooled_reference": pooled_reference,
        "failures": list(report.get("failures") or []),
        "privacy": report.get("privacy"),
    }


def _profiles(profiles: Mapping[str, Any] | None) -> dict[str, Any]:
    """The training data as the coordinator may know it: per-site aggregates, cells suppressed."""
    if profiles is None:
        return _not_done("profiles.json")
    return {
        "done": True,
        "min_cell_size": profiles.get("min_cell_size"),
        "non_dp": profiles.get("non_dp"),
        "sites": profiles.get("sites") or {},
    }


def _provenance(files_: Mapping[str, Any]) -> dict[str, Any]:
    """What it takes to reproduce the run or to tell two runs apart."""
    manifest, record = files_["manifest.json"], files_["run_record.json"]
    model_fp = files_["model.json"].get("transform_fingerprint")
    return {
        "run_id": record.get("run_id"),
        "flower_run_id": manifest.get("run_id"),
        "name": manifest.get("name"),
        "created": manifest.get("created"),
        "engine": manifest.get("engine"),
        # run_record.json's hash is of the config the model was trained with (after tuning).
        "config_hash": record.get("config_hash") or manifest.get("config_hash"),
        "schema_fingerprint": record.get("schema_fingerprint"),
        "seed": files_["run_config.json"].get("seed", manifest.get("seed")),
        "package_versions": manifest.get("packages") or {},
        "git_commit": manifest.get("git_commit"),
        "platform": manifest.get("platform") or {},
        "torch": manifest.get("torch") or {},
        "transform_source": record.get("transform_source"),
        "transform_fingerprint": record.get("transform_fingerprint") or model_fp,
        "model_transform_fingerprint": model_fp,
    }


def _verdicts(
    privacy: Mapping[str, Any], record: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The release gate's three answers and every reason against release; also the top warnings."""
    problems: list[str] = []
    warnings: list[str] = []
    taking_part = [s for s in privacy["sites"] if s.get("status") == "ok"]
    no_eps = [s["site"] for s in taking_part if not _finite(s.get("epsilon"))]
    if not privacy["dp"]:
        text = (
            "NO DIFFERENTIAL PRIVACY: this model was trained without DP, so it carries no "
            "privacy guarantee for the patients it was trained on; it must not be released."
        )
        warnings.append(text)
        problems.append("the run trained without differential privacy")
    elif not taking_part:
        problems.append("no site took part, so there is no DP guarantee to state")
        warnings.append("No site took part in the run: the model has no DP guarantee.")
    elif no_eps:
        problems.append(f"no finite ε reported by {', '.join(no_eps)}: no DP guarantee there")
        warnings.append(
            f"NO DP GUARANTEE for {', '.join(no_eps)}: the site(s) took part but reported no ε."
        )
    dp_guarantee = bool(privacy["dp"]) and bool(taking_part) and not no_eps
    audit = privacy["audit"]
    audit_passed: bool | None
    if not audit["done"]:
        audit_passed = None
        problems.append("no membership-inference audit: audit.json is missing")
        warnings.append(
            "NOT AUDITED: no membership-inference audit was done for this run "
            "(audit.json is missing); run `fedward audit RUN_DIR`."
        )
    else:
        audit_passed = bool(audit["passed"])
        verdict = audit["verdict"]
        if "probable privacy bug" in verdict or audit["flags"]:
            warnings.append(
                f"AUDIT FAILED (verdict: {verdict}): an attack measured more leakage than the "
                "accountant's ε allows; the training did not add the noise it claims, or the "
                "accounting is wrong. Do not use or release this model."
                + "".join(f" {f}." for f in audit["flags"])
            )
            problems.append(f"the membership-inference audit's verdict is '{verdict}'")
        elif not audit_passed:
            warnings.append(
                f"AUDIT {'FAILED' if verdict.startswith('fail') else 'NOT PASSED'} (verdict: "
                f"{verdict}): the released model did not pass its membership-inference audit."
                + "".join(f" {f}." for f in audit["failures"])
            )
            problems.append(f"the membership-inference audit's verdict is '{verdict}'")
    if record.get("status") != "finished":
        problems.append(f"the run's status is '{record.get('status')}', not 'finished'")
    verdicts = {
        "dp_guarantee": dp_guarantee,
        "audit_passed": audit_passed,
        "release_ready": dp_guarantee and audit_passed is True and not problems,
        "problems": problems,
    }
    return verdicts, warnings


def _caveats(
    card_cfg: CardConfig,
    files_: Mapping[str, Any],
    test: Mapping[str, Any],
    privacy: Mapping[str, Any],
) -> list[str]:
    """The run config's caveats, then what the run itself shows the model cannot claim."""
    record = files_["run_record.json"]
    out = list(card_cfg.caveats)
    out.append(
        "The predictions are statistical associations learnt from the sites' records, not "
        "causal effects: they do not say what would happen to a patient under a treatment."
    )
    sites = record.get("participating") or sorted(test.get("sites") or {})
    out.append(
        f"Validated only at the sites that took part ({', '.join(sites)}), on their sealed test "
        "splits; performance at any other hospital is unknown."
    )
    by_site = {s.get("site"): s for s in privacy["sites"]}
    for left in record.get("left_out") or []:
        rounds = (by_site.get(left.get("site")) or {}).get("trained_rounds") or []
        if rounds:
            bound = (by_site.get(left.get("site")) or {}).get("epsilon_bound")
            eps = (
                f" Its ε is at least {bound['at_least']:.2f} and at most {bound['at_most']:g}: "
                f"{bound['reason']}."
                if bound
                else ""
            )
            out.append(
                f"Site {left.get('site')} trained {trained_rounds_text(rounds)}, then "
                f"{left.get('status')} ({left.get('reason')}): its data shaped the model in "
                f"those rounds, but the model was not validated on its test split.{eps}"
            )
            continue
        out.append(
            f"Site {left.get('site')} did not take part ({left.get('status')}: "
            f"{left.get('reason')}): the model was neither trained nor validated on its data."
        )
    hists = test.get("histograms") or {}
    for site, h in sorted(hists.items()):
        if h and (not h.get("pos_counts") or not h.get("neg_counts")):
            out.append(
                f"At {site} one class of the test split is smaller than the minimum cell size, "
                "so its histogram was suppressed: pooled figures leave that site out and its "
                "ROC, precision-recall and calibration curves are not drawn."
            )
    wide = [
        site
        for site, p in sorted((test.get("sites") or {}).items())
        if _finite((p or {}).get("auroc_lo"))
        and _finite((p or {}).get("auroc_hi"))
        and p["auroc_hi"] - p["auroc_lo"] > 0.2
    ]
    if wide:
        out.append(
            f"Small test splits at {', '.join(wide)}: their AUROC intervals are wider than 0.2, "
            "so their point estimates say little."
        )
    if test.get("pooled"):
        out.append(
            "Pooled figures come from the sites' coarsened score histograms (no interval): an "
            "approximation at bin resolution, never computed from raw scores."
        )
        out += _pooled_omissions(test["pooled"], test.get("histograms") or {})
    if privacy["audit"]["done"]:
        out += [f"Audit: {c}." for c in privacy["audit"]["caveats"]]
    out += [f"Run warning: {w}" for w in record.get("warnings") or []]
    if privacy["dp"] and any(s.get("multi_row_patients") for s in privacy["sites"]):
        out.append(
            "Some sites hold several rows per patient: DP protects one row, so a patient with "
            "several rows is protected less than ε says."
        )
    return out


def _pooled_omissions(
    pooled: Mapping[str, Any], histograms: Mapping[str, Any] | None = None
) -> list[str]:
    """Which sites the pooled figures cover and each figure the histograms cannot support."""
    out = []
    if coverage := pooled_coverage(pooled, histograms or {}):
        out.append(f"Pooled figures cover {coverage}.")
    for key in pooled.get("from_sites") or []:
        out.append(
            f"Pooled {PANEL_METRICS.get(key, key)} is the sites' own figures weighted by test "
            "size (exact: a mean over rows)."
        )
    bounds = pooled.get("bounds") or {}
    for key, reason in sorted((pooled.get("omitted") or {}).items()):
        span = bounds.get(key)
        where = f"; it lies between {span[0]:.3f} and {span[1]:.3f}" if span else ""
        out.append(f"No pooled {PANEL_METRICS.get(key, key)}: {reason}{where}.")
    return out


def _tradeoffs(
    privacy: Mapping[str, Any], baselines: Mapping[str, Any], test: Mapping[str, Any]
) -> list[str]:
    """What was given up for what: privacy for accuracy, federation for pooling."""
    out = []
    eps = _model_epsilons(privacy)
    if privacy["dp"] and eps:
        out.append(
            f"Privacy against utility: the released model's ε is between {min(eps):.2f} and "
            f"{max(eps):.2f} at the sites that took part (target "
            f"{privacy.get('target_epsilon')}; {_model_epsilon_scope(privacy)}); a smaller ε "
            "means more noise in training and usually a less accurate model."
        )
    if baselines.get("done"):
        if baselines.get("verdict"):
            out.append(f"Complexity against benefit: {baselines['verdict']}")
        ref = baselines.get("pooled_reference") or {}
        if _finite(ref.get("auroc")) and (fed := _federated_auroc_text(test)):
            out.append(
                f"Federation against pooling (simulation only): the same model trained on all "
                f"sites' data in one place scores test AUROC {ref['auroc']:.3f}, all sites' test "
                f"rows ranked together. {fed}"
            )
    return out


def _federated_auroc_text(test: Mapping[str, Any]) -> str | None:
    """The federated model's AUROC for a comparison: never the histogram point estimate alone.

    The pooled AUROC from coarsened histograms counts ties within a group as one half, which pulls
    it toward 0.5; only its bounds are stated, next to the sites' own AUROCs weighted by n.
    """
    weighted, missing = n_weighted(test.get("sites") or {}, "auroc")
    if weighted is None:
        return None
    text = f"The federated model's sites score AUROC {weighted:.3f} weighted by test size"
    text += f" (not sent by {', '.join(missing)})" if missing else ""
    text += ", each site ranking its own rows, a different measure from a pooled AUROC"
    pooled = test.get("pooled") or {}
    span = (pooled.get("bounds") or {}).get("auroc")
    if span:
        covers = f" over {pooled['coverage']}" if pooled.get("coverage") else ""
        text += (
            f"; its AUROC with all rows ranked together is known only from coarsened histograms"
            f"{covers}: between {span[0]:.3f} and {span[1]:.3f}"
        )
    return text + "."


def _model_epsilons(privacy: Mapping[str, Any]) -> list[float]:
    """The released model's ε at each site that took part (a dropped site's is a range)."""
    return [
        float(s["epsilon_model"])
        for s in privacy["sites"]
        if s.get("status") == "ok" and _finite(s.get("epsilon_model"))
    ]


def _model_epsilon_scope(privacy: Mapping[str, Any]) -> str:
    """What the released model's ε composes, from what ran."""
    parts = list(privacy.get("epsilon_covers") or [])
    return "composing " + ", ".join(parts) if parts else "composing the run's training"


def epsilon_cell(site: Mapping[str, Any], digits: int = 2) -> str:
    """The released model's ε at one site: a number, or a range for a site that stopped answering."""
    bound = site.get("epsilon_bound")
    if bound:
        return f"≥ {_n(bound.get('at_least'), digits)}, ≤ {_n(bound.get('at_most'), digits)}"
    return _n(site.get("epsilon_model"), digits)


def _other_epsilon(site: Mapping[str, Any]) -> str:
    spent = site.get("companion_epsilon") or {}
    return ", ".join(f"{k} {_n(v, 2)}" for k, v in sorted(spent.items())) or "–"


def _controls_ran(run_dir: Path, baselines: Mapping[str, Any] | None) -> set[str]:
    """The controls that actually ran: reported in baselines.json, or left a companion folder."""
    ran = set(((baselines or {}).get("controls") or {}).keys())
    companions = run_dir / COMPANIONS_DIR
    if companions.is_dir():
        names = [p.name for p in companions.iterdir() if p.is_dir()]
        if "label_shuffle" in names:
            ran.add("label_shuffle")
        if any(n.startswith(LOSO_PREFIX) for n in names):
            ran.add("leave_one_site_out")
    return ran


def _ethics(card_cfg: CardConfig, *, dp: bool, controls_ran: set[str]) -> list[dict[str, Any]]:
    """The run config's ethics register, with every entry that claims what did not run rewritten
    (the defaults, whose text the card owns) or flagged (an entry someone wrote)."""
    defaults = CardConfig().ethics
    out: list[dict[str, Any]] = []
    for e in card_cfg.ethics:
        entry: dict[str, Any] = {
            "name": e.concern,
            "mitigation_strategy": e.mitigation,
            "status": e.status,
        }
        text = f"{e.concern} {e.mitigation}"
        untrue = [] if dp or not _DP_CLAIM.search(text) else ["the run trained without DP"]
        untrue += [
            why
            for control, (claim, why) in _CONTROL_CLAIMS.items()
            if control not in controls_ran and claim.search(text)
        ]
        if not untrue:
            out.append(entry)
        elif e == defaults[0]:
            entry.update(
                status="open",
                mitigation_strategy="No differential privacy was applied: the model was trained "
                "without DP, so nothing bounds what its weights reveal about the patients they "
                "were trained on. Raw data did not leave the sites; the weights, the updates and "
                "the aggregates listed under Privacy did, through the egress guard.",
                note="rewritten by the card: the run config's default entry marks this concern "
                "as handled by differential privacy, which this run did not apply",
            )
            out.append(entry)
        elif e == defaults[1]:  # its one claim is leave-one-site-out, which did not run
            entry.update(
                mitigation_strategy="Per-site metrics are reported; leave-one-site-out "
                "evaluation was not run, so how the model does at a hospital it never saw is not "
                "measured; subgroup metrics are not computed in this version.",
                note="rewritten by the card: the run config's default entry says "
                "leave-one-site-out evaluation is reported, but that control did not run",
            )
            out.append(entry)
        else:
            entry.update(
                status="open" if e.status == "mitigated" else e.status,
                mitigation_strategy="NOT TRUE OF THIS RUN: "
                + "; ".join(untrue)
                + f". The run config's entry says: {e.mitigation}",
                note=f"flagged by the card: the run config's entry (status '{e.status}') claims "
                "what this run did not do; check and correct the [card] section",
            )
            out.append(entry)
    return out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The readable JSON objects of an append-only log, oldest first; [] when there is none."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _signoff(run_dir: Path, rec: Mapping[str, Any]) -> dict[str, Any]:
    """One sign-off as the card states it: who, when, signed or not, and what changed since."""
    signature = rec.get("signature")
    signed = "signature" in rec
    problem = signoff_signature_problem(dict(rec), SIGNOFFS_FILE) if signed else None
    hashes = rec.get("sha256") if isinstance(rec.get("sha256"), dict) else {}
    # The card files always differ: this card is written after the sign-off it names.
    changed = [
        f
        for f in SIGNED_FILES
        if not f.startswith("model_card")
        and (
            not (run_dir / f).is_file()
            or not isinstance(hashes, dict)
            or hashes.get(f) != sha256_file(run_dir / f)
        )
    ]
    return {
        "by": str(rec.get("by") or "(no name)"),
        "role": str(rec.get("role") or "no role"),
        "at": str(rec.get("at") or "an unknown time"),
        "signed": signed,
        "signature_valid": None if not signed else problem is None,
        "key_fingerprint": signature.get("key_fingerprint")
        if isinstance(signature, dict)
        else None,
        "changed_since": changed,
    }


def _signoff_text(s: Mapping[str, Any]) -> str:
    text = f"signed off by {s['by']} ({s['role']}) on {s['at']}"
    if not s["signed"]:
        text += ", NOT signed with a key (a receiver with a trust file refuses it)"
    elif s["signature_valid"]:
        text += f", signed with key {s['key_fingerprint']}"
    else:
        text += ", its signature DOES NOT VERIFY (the record was changed after signing)"
    return text


def _release_state(run_dir: Path, verdicts: Mapping[str, Any]) -> dict[str, Any]:
    """Where the model stands now, read from signoffs.jsonl and releases.jsonl."""
    signoffs, releases = _jsonl(run_dir / SIGNOFFS_FILE), _jsonl(run_dir / RELEASES_FILE)
    signoff = _signoff(run_dir, signoffs[-1]) if signoffs else None
    problems = len(verdicts["problems"])
    release: dict[str, Any] | None = None
    if releases:
        last = releases[-1]
        by = last.get("signoff") if isinstance(last.get("signoff"), dict) else {}
        release = {
            "name": Path(str(last.get("release_dir") or "unknown")).name,
            "release_dir": last.get("release_dir"),
            "at": str(last.get("released_at") or "an unknown time"),
            "by": str(last.get("released_by") or "(no name)"),
            "manifest_key_fingerprint": last.get("manifest_key_fingerprint"),
            "signed_off_by": by,
        }
        state = "released"
        who = by or {}
        line = (
            f"released as {release['name']} on {release['at']} by {release['by']} (signed off "
            f"by {who.get('by') or '(no name)'}, {who.get('role') or 'no role'}, on "
            f"{who.get('at') or 'an unknown time'}"
            + (
                f", with key {who['key_fingerprint']}"
                if who.get("key_fingerprint")
                else ", without a signing key"
            )
            + "; MANIFEST "
            + (
                f"signed with key {release['manifest_key_fingerprint']}"
                if release["manifest_key_fingerprint"]
                else "not signed"
            )
            + "). The release holds the card as it was signed off, not this regenerated one"
        )
    elif signoff is not None:
        state = "signed off"
        line = _signoff_text(signoff)
        if signoff["changed_since"]:
            line += (
                f"; {', '.join(signoff['changed_since'])} changed after it, so it no longer counts"
            )
        line += (
            "; this card was written after that sign-off, so the sign-off vouches for an "
            "earlier card: sign off again before a release"
        )
    elif verdicts["release_ready"]:
        state = "eligible for sign-off"
        line = (
            "eligible for sign-off: nobody has signed off yet; nothing is released without a "
            "person's sign-off (`fedward release sign-off RUN_DIR --by NAME --role ROLE --key "
            "KEY`)"
        )
    else:
        state = "not eligible"
        line = f"not eligible for sign-off: {problems} problem(s) against release, listed below"
    if state in ("released", "signed off") and not verdicts["release_ready"]:
        line += f"; the card now finds {problems} problem(s) against release, listed below"
    return {
        "state": state,
        "line": line,
        "signoffs": len(signoffs),
        "latest_signoff": signoff,
        "releases": len(releases),
        "latest_release": release,
    }


def mitchell_section(card: Mapping[str, Any], title: str) -> Any:
    """The part of the card that holds one of Mitchell et al.'s sections (KeyError if absent)."""
    node: Any = card
    for key in MITCHELL_SECTIONS[title]:
        node = node[key]
    return node


def build_card(run_dir: str | Path) -> dict[str, Any]:
    """The card as a JSON-ready dict, read from a finished run folder; ``warnings`` comes first."""
    files_ = load_run(run_dir)
    config = files_["run_config.json"]
    manifest, record = files_["manifest.json"], files_["run_record.json"]
    metrics, model = files_["metrics.json"], files_["model.json"]
    transform = files_["transform.json"]
    assert config is not None and manifest is not None and record is not None
    assert metrics is not None and model is not None and transform is not None
    card_cfg = validate_config(
        CardConfig, config.get("card") or {}, f"{Path(run_dir) / 'run_config.json'} [card]"
    )
    test = metrics.get("test") or {}
    privacy = _privacy(files_, model)
    baselines = _baselines(files_["baselines.json"])
    verdicts, warnings = _verdicts(privacy, record)
    verdicts["release"] = _release_state(Path(run_dir), verdicts)
    controls_ran = _controls_ran(Path(run_dir), files_["baselines.json"])
    datasets = {s["site"]: s.get("dataset") for s in privacy["sites"] if s.get("dataset")}
    dataset = (config.get("task") or {}).get("dataset")
    arch = _architecture(model)
    sites = record.get("participating") or sorted(test.get("sites") or {})
    label = _label_text(config)
    run_id = str(record.get("run_id") or manifest.get("run_id"))
    overview = (
        f"A {_model_name(model)} trained by federated learning (Flower) across {len(sites)} "
        f"site(s) ({', '.join(sites)})"
        + (f" to predict {label}" if label else "")
        + (f" ({dataset})" if dataset else "")
        + (
            f", with sample-level differential privacy at each site (target ε "
            f"{privacy['target_epsilon']} for the released model, {_model_epsilon_scope(privacy)})."
            if privacy["dp"]
            else ", WITHOUT differential privacy."
        )
    )
    references = [{"reference": r} for r in REFERENCES if privacy["dp"] or r != DP_SGD_REFERENCE]
    citations = []
    if dataset in BUNDLED_DATA:
        references.append({"reference": BUNDLED_DATA[dataset][0]})
        citations.append({"style": "text", "citation": BUNDLED_DATA[dataset][1]})
    citations.append(
        {
            "style": "text",
            "citation": f"fedward model card, run {run_id} (config {str(record.get('config_hash'))[:12]}).",
        }
    )
    card: dict[str, Any] = {
        "warnings": warnings,
        "schema_version": SCHEMA_VERSION,
        "model_details": {
            "name": f"{manifest.get('name') or 'fedward run'}: {_model_name(model)}",
            "overview": overview,
            "documentation": card_cfg.intended_use,
            "version": {
                "name": run_id,
                "date": str(manifest.get("created") or "")[:10] or None,
            },
            "owners": [{"name": o} for o in card_cfg.owners],
            "licenses": [
                {
                    "custom_text": "No license is stated for the model weights; ask the owners."
                    + (
                        f" The training data are licensed {card_cfg.data_license}."
                        if card_cfg.data_license
                        else f" The training data are licensed {BUNDLED_DATA[dataset][2]}."
                        if dataset in BUNDLED_DATA
                        else ""
                    )
                }
            ],
            "references": references,
            "citations": citations,
        },
        "model_parameters": {
            "model_architecture": arch,
            "data": _data(files_, test, datasets, privacy["dp"]),
            "input_format": _input_format(transform),
            "output_format": str(model.get("output") or "one logit per row")
            + (f"; the positive class is {label}" if label else ""),
        },
        "considerations": {
            "users": [{"description": u} for u in card_cfg.intended_users],
            "use_cases": [{"description": card_cfg.intended_use}],
            "out_of_scope_uses": [{"description": u} for u in card_cfg.out_of_scope_uses],
            "limitations": [{"description": c} for c in _caveats(card_cfg, files_, test, privacy)],
            "tradeoffs": [{"description": t} for t in _tradeoffs(privacy, baselines, test)],
            "ethical_considerations": _ethics(
                card_cfg, dp=privacy["dp"], controls_ran=controls_ran
            ),
        },
        "factors": {
            "relevant": [
                "hospital (site): case mix, referral patterns, equipment and coding differ "
                "between sites",
                "patient groups within a site (sex, age): outcomes and data quality may differ",
            ],
            "evaluation": [
                "each site's sealed test split on its own",
                "all sites pooled (from coarsened score histograms)",
            ]
            + (
                ["leave-one-site-out: each site scored by a model trained without it"]
                if "leave_one_site_out" in controls_ran
                else []
            ),
            "not_evaluated": [
                "subgroups within a site (e.g. sex, age bands): not computed in this version"
            ],
        },
        "metrics": {
            "performance_measures": [PANEL_METRICS[k] for k in PANEL_METRICS],
            "why": "On imbalanced clinical data accuracy alone flatters a model: AUROC, AUPRC "
            "next to the prevalence, balanced accuracy, Brier score and calibration error are "
            "reported together.",
            "decision_threshold": 0.5,
            "variation_approaches": f"stratified bootstrap percentile intervals at each site "
            f"({(config.get('evaluation') or {}).get('bootstrap')} resamples, "
            f"{(config.get('evaluation') or {}).get('confidence')} confidence); pooled figures "
            "have no interval",
        },
        "quantitative_analysis": {
            "performance_metrics": _performance(test, files_["baselines.json"]),
            "score_histograms": dict(sorted((test.get("histograms") or {}).items())),
            "score_histograms_note": "each site's coarsened test score histogram (positives = "
            "label 1, equal-width bins of the predicted probability on [0, 1]; every count 0 or "
            "at least the site's minimum cell size): the only data the curves are drawn from",
            "graphics": {"description": "", "collection": []},
        },
        "privacy": privacy,
        "baselines": baselines,
        "provenance": _provenance(files_),
        "training_data_profiles": _profiles(files_["profiles.json"]),
        "verdicts": verdicts,
    }
    figures = card_plots.plan(card)
    card["quantitative_analysis"]["graphics"] = {
        "description": "Figures drawn from this card's own data; the images are inline in "
        f"{CARD_HTML}.",
        "collection": [{"name": f.name, "description": f.description} for f in figures],
    }
    return card


def card_schema() -> dict[str, Any]:
    """The card's JSON Schema (draft 2020-12), shipped in the package."""
    text = files("fedward.server").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


# ---- rendering ----------------------------------------------------------------------------------


_n = fmt_value


def _delta(x: Any) -> str:
    return f"{x:.2g}" if _finite(x) else _n(x)


def _yes_no_none(x: bool | None, none: str = NOT_DONE) -> str:
    return none if x is None else ("yes" if x else "no")


def metric_table(card: Mapping[str, Any]) -> tuple[list[str], list[dict[str, str]]]:
    """Rows by slice, one column per metric type: what the Markdown and HTML tables show."""
    by_slice: dict[str, dict[str, str]] = {}
    types: list[str] = []
    for m in card["quantitative_analysis"]["performance_metrics"]:
        if m["type"] not in types:
            types.append(m["type"])
        digits = 0 if m["type"] == "n" else 3
        text = _n(m["value"], digits)
        ci = m.get("confidence_interval")
        if ci:
            text += f" [{_n(ci['lower_bound'])}, {_n(ci['upper_bound'])}]"
        by_slice.setdefault(m["slice"], {"slice": m["slice"]})[m["type"]] = text
    cols = [t for t in PANEL_METRICS if t in types]
    return cols, list(by_slice.values())


def _diff_text(d: Mapping[str, Any] | None) -> str:
    if not d or not _finite(d.get("difference")):
        return "–"
    if _finite(d.get("lo")) and _finite(d.get("hi")):
        return f"{d['difference']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    return f"{d['difference']:+.3f}"


def _epsilon_range(privacy: Mapping[str, Any]) -> str:
    eps = _model_epsilons(privacy)
    if not eps:
        return "–"
    low, high = min(eps), max(eps)
    span = f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}"
    return f"{span} at the sites that took part ({_model_epsilon_scope(privacy)})"


def _view(card: Mapping[str, Any]) -> dict[str, Any]:
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
                _n(s.get("epsilon"), 2),
                _delta(s.get("delta")),
                _other_epsilon(s),
                _n(s.get("epsilon_lifetime"), 2),
                _delta(s.get("delta_lifetime")),
                _n(s.get("epsilon_tuning"), 2),
                _n(s.get("noise_multiplier"), 3),
                _n(s.get("sample_rate"), 3),
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
                aucs = [(a, r["auc"]) for a, r in attacks.items() if _finite(r.get("auc"))]
                top = max(aucs, key=lambda t: t[1]) if aucs else None
                note = e.get("reason") or ""
                audit_cells.append(
                    [
                        name,
                        site,
                        (e.get("verdict") or "–") + (f": {note}" if note else ""),
                        f"{top[1]:.3f} ({top[0]})" if top else "–",
                        *([_n(e.get("epsilon_accountant"), 2)] if dp else []),
                        _n(e.get("epsilon_lower_bound"), 2),
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
            ("privacy unit", _n(privacy["privacy_unit"])),
            ("target ε (per site, the released model)", _n(privacy["target_epsilon"])),
            ("ε of the released model (per site)", _epsilon_range(privacy)),
            ("clipping norm (per-sample gradient L2 bound)", _n(privacy["clipping_norm"])),
            ("accountant requested", _n(privacy["accountant_requested"])),
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
            f"DP guarantee: {_yes_no_none(verdicts['dp_guarantee'])} · membership audit passed: "
            f"{_yes_no_none(verdicts['audit_passed'])}"
            + (f" ({audit['verdict']})" if audit["done"] else "")
            + f" · release: {release['line']}"
        ),
        "diff": _diff_text,
        "n": _n,
    }


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
    v = _view(card)
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
        *[f"- {r['site']}: {_n(r['rows'])} test rows" for r in mp["data"]["eval"]["sites"]],
        "",
        "## Training data",
        "",
        mp["data"]["train"]["description"],
        "",
        *[f"- {r['site']}: {_n(r['rows'])} training rows" for r in mp["data"]["train"]["sites"]],
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
                f"{f} {_n(s.get('missing_fraction'), 2)}"
                for f, s in sorted((p.get("features") or {}).items())
                if s.get("missing_fraction") is None or s.get("missing_fraction", 0) > 0
            ]
            lines.append(
                f"| {site} | {_n(p.get('n_rows'))} | "
                + "/".join(_n(sp.get(k)) for k in ("train", "tune", "test", "audit"))
                + f" | {_n(p.get('prevalence'))} | {', '.join(miss) or 'none'} |"
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
                f"| {c['model']} | {c['where']} | {_n(c['pooled_auroc'])} | "
                f"{_diff_text(c['difference'])} | {_n(c['mean_tune_auroc'])} |"
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


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<link rel="icon" href="data:,">
<title>Model card · {{ card.model_details.name }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.82rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.45rem; text-align: left; vertical-align: top; }
.banner { background: #a40000; color: #fff; padding: 0.8rem 1.2rem; border-radius: 0.3rem; font-weight: bold; }
.banner p { margin: 0.3rem 0; }
.verdicts { font-size: 1.05rem; padding: 0.5rem 0.8rem; background: #f2f2f2; border-radius: 0.3rem; display: inline-block; }
.ready { background: #e3f4e3; } .not-ready { background: #fff4d6; }
.notdone { color: #8a5a00; font-style: italic; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; max-width: 30rem; } figcaption { font-size: 0.78rem; color: #555; }
img.plot { width: 100%; height: auto; border: 1px solid #ddd; }
dt { font-weight: bold; } dd { margin: 0 0 0.4rem 1rem; }
</style></head><body>
{% if card.warnings %}<div class="banner" id="warnings" role="alert">{% for w in card.warnings %}<p>⚠ WARNING: {{ w }}</p>{% endfor %}</div>{% endif %}
<h1>Model card: {{ card.model_details.name }}</h1>
<p>{{ card.model_details.overview }}</p>
<p class="verdicts {{ 'ready' if card.verdicts.release_ready else 'not-ready' }}" id="verdicts">{{ v.verdict_line }}</p>
{% if card.verdicts.problems %}<ul>{% for p in card.verdicts.problems %}<li>not ready: {{ p }}</li>{% endfor %}</ul>{% endif %}

<section id="privacy"><h2>Privacy</h2>
<dl>{% for k, val in v.facts %}<dt>{{ k }}</dt><dd>{{ val }}</dd>{% endfor %}</dl>
<table><tr>{% for h in v.site_head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in v.site_cells %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% set audit = card.privacy.audit %}
{% if audit.done %}
<h3 id="audit">Membership-inference audit: {{ audit.verdict }}</h3>
{% for f in audit.flags %}<p><strong>{{ f }}</strong></p>{% endfor %}
{% for f in audit.failures %}<p>{{ f }}</p>{% endfor %}
<table><tr>{% for h in v.audit_head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in v.audit_cells %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
<div class="plots">
{% for g in card.quantitative_analysis.graphics.collection if g.name.startswith('audit_roc_') %}<figure><img class="plot" id="plot-{{ g.name }}" alt="{{ g.description }}" src="data:image/png;base64,{{ figures[g.name] }}"><figcaption>{{ g.description }}</figcaption></figure>{% endfor %}
</div>
{% else %}<p class="notdone" id="audit">Membership-inference audit: {{ audit.status }} ({{ audit.reason }}).</p>{% endif %}
<p>{{ v.non_dp_heading }}:</p>
<ul>{% for o in card.privacy.non_dp_outputs %}<li>{{ o }}</li>{% endfor %}</ul>
</section>

<section id="model-details"><h2>Model details</h2>
<dl>
<dt>Architecture</dt><dd>{{ card.model_parameters.model_architecture }}</dd>
<dt>Version (fedward run id)</dt><dd>{{ card.model_details.version.name }}, {{ card.model_details.version.date or '–' }}</dd>
<dt>Config hash · seed · git commit</dt><dd><code>{{ card.provenance.config_hash }}</code> · {{ card.provenance.seed }} · <code>{{ card.provenance.git_commit or 'not from a git checkout' }}</code></dd>
<dt>Owners</dt><dd>{% for o in card.model_details.owners %}{{ o.name }}{% if not loop.last %}, {% endif %}{% else %}not stated{% endfor %}</dd>
<dt>License</dt><dd>{% for l in card.model_details.licenses %}{{ l.identifier or l.custom_text }} {% endfor %}</dd>
<dt>Input</dt><dd>{{ card.model_parameters.input_format }}</dd>
<dt>Output</dt><dd>{{ card.model_parameters.output_format }}</dd>
<dt>Packages</dt><dd>{% for k, val in card.provenance.package_versions|dictsort %}{{ k }} {{ val }}{% if not loop.last %}, {% endif %}{% endfor %}</dd>
<dt>References</dt><dd>{% for r in card.model_details.references %}<code>{{ r.reference }}</code>{% if not loop.last %}, {% endif %}{% endfor %}</dd>
<dt>Citations</dt><dd>{% for c in card.model_details.citations %}{{ c.citation }} {% endfor %}</dd>
</dl></section>

<section id="intended-use"><h2>Intended use</h2><ul>
{% for u in card.considerations.use_cases %}<li>Use: {{ u.description }}</li>{% endfor %}
{% for u in card.considerations.users %}<li>Intended user: {{ u.description }}</li>{% endfor %}
{% for u in card.considerations.out_of_scope_uses %}<li>Out of scope: {{ u.description }}</li>{% endfor %}
</ul></section>

<section id="factors"><h2>Factors</h2><ul>
{% for f in card.factors.relevant %}<li>Relevant: {{ f }}</li>{% endfor %}
{% for f in card.factors.evaluation %}<li>Evaluated: {{ f }}</li>{% endfor %}
{% for f in card.factors.not_evaluated %}<li>Not evaluated: {{ f }}</li>{% endfor %}
</ul></section>

<section id="metrics"><h2>Metrics</h2>
<p>{{ card.metrics.why }} Measures: {{ card.metrics.performance_measures|join(', ') }}. Decision threshold {{ card.metrics.decision_threshold }}; variation: {{ card.metrics.variation_approaches }}.</p></section>

<section id="evaluation-data"><h2>Evaluation data</h2><p>{{ card.model_parameters.data.eval.description }}</p>
<ul>{% for r in card.model_parameters.data.eval.sites %}<li>{{ r.site }}: {{ v.n(r.rows) }} test rows</li>{% endfor %}</ul></section>

<section id="training-data"><h2>Training data</h2><p>{{ card.model_parameters.data.train.description }}</p>
<ul>{% for r in card.model_parameters.data.train.sites %}<li>{{ r.site }}: {{ v.n(r.rows) }} training rows</li>{% endfor %}</ul>
{% set prof = card.training_data_profiles %}
{% if prof.done %}
<p>Training-split profiles; cells under {{ prof.min_cell_size }} are suppressed (–).</p>
{% for site, p in prof.sites|dictsort %}
<h3>{{ site }}</h3>
{% if p.status and p.status != 'ok' %}<p class="notdone">{{ p.status }}: {{ p.reason }}</p>{% else %}
<p>{{ v.n(p.n_rows) }} rows (train {{ v.n(p.splits.train) }}, tune {{ v.n(p.splits.tune) }}, test {{ v.n(p.splits.test) }}, audit {{ v.n(p.splits.audit) }}); prevalence {{ v.n(p.prevalence) }}</p>
<table><tr><th>feature</th><th>kind</th><th>missing</th><th>mean</th><th>sd</th><th>categories (count)</th></tr>
{% for f, s in (p.features or {})|dictsort %}<tr><td>{{ f }}</td><td>{{ s.kind }}</td><td>{{ v.n(s.missing_fraction) }}</td><td>{{ v.n(s.mean) }}</td><td>{{ v.n(s.sd) }}</td>
<td>{% for c, k in (s.categories or {})|dictsort %}{{ c }} ({{ v.n(k) }}){% if not loop.last %}, {% endif %}{% endfor %}</td></tr>{% endfor %}
</table>{% endif %}
{% endfor %}
<p>{{ prof.non_dp }}</p>
{% else %}<p class="notdone">Training-data profiles: {{ prof.status }} ({{ prof.reason }}).</p>{% endif %}
</section>

<section id="quantitative-analyses"><h2>Quantitative analyses</h2>
<p>Test split, per site with bootstrap intervals, and pooled{% if v.loso %}; <code>left_out=SITE</code> is a model trained without that site, scored on it{% endif %}.</p>
<table><tr><th>slice</th>{% for c in v.cols %}<th>{{ v.col_names[c] }}</th>{% endfor %}</tr>
{% for row in v.rows %}<tr><td>{{ row.slice }}</td>{% for c in v.cols %}<td>{{ row.get(c, '–') }}</td>{% endfor %}</tr>{% endfor %}
</table>
<div class="plots">
{% for g in card.quantitative_analysis.graphics.collection if not g.name.startswith('audit_roc_') %}<figure><img class="plot" id="plot-{{ g.name }}" alt="{{ g.description }}" src="data:image/png;base64,{{ figures[g.name] }}"><figcaption>{{ g.description }}</figcaption></figure>{% endfor %}
</div></section>

<section id="baselines"><h2>Baselines</h2>
{% set base = card.baselines %}
{% if base.done %}<p><strong>Verdict.</strong> {{ base.verdict }}</p>
<table><tr><th>model</th><th>where</th><th>pooled test AUROC</th><th>Δ run − baseline [CI]</th><th>mean tune AUROC</th></tr>
{% for c in base.comparison %}<tr><td>{{ c.model }}</td><td>{{ c.where }}</td><td>{{ v.n(c.pooled_auroc) }}</td><td>{{ v.diff(c.difference) }}</td><td>{{ v.n(c.mean_tune_auroc) }}</td></tr>{% endfor %}
</table>
<p>{{ pooled_local_note }}</p>
<ul>{% for name, c in base.controls.items() %}<li>{{ name.replace('_', ' ') }}: {{ c.reading }}</li>{% endfor %}</ul>
{% else %}<p class="notdone">Baselines: {{ base.status }} ({{ base.reason }}).</p>{% endif %}
</section>

<section id="ethical-considerations"><h2>Ethical considerations</h2>
<table><tr><th>concern</th><th>status</th><th>mitigation</th></tr>
{% for e in card.considerations.ethical_considerations %}<tr><td>{{ e.name }}</td><td>{{ e.status }}</td><td>{{ e.mitigation_strategy or '–' }}{% if e.note %} <em>({{ e.note }})</em>{% endif %}</td></tr>{% endfor %}
</table></section>

<section id="caveats-and-recommendations"><h2>Caveats and recommendations</h2><ul>
{% for c in card.considerations.limitations %}<li>{{ c.description }}</li>{% endfor %}
{% for t in card.considerations.tradeoffs %}<li>Trade-off: {{ t.description }}</li>{% endfor %}
</ul></section>

<section id="provenance"><h2>Provenance</h2>
<p>fedward run id {{ card.provenance.run_id }} (Flower run {{ card.provenance.flower_run_id }}), {{ card.provenance.engine }}, created {{ card.provenance.created }};
transform <code>{{ card.provenance.transform_fingerprint }}</code> ({{ card.provenance.transform_source }}); schema <code>{{ card.provenance.schema_fingerprint }}</code>.</p>
</section>
</body></html>
"""


def render_html(card: Mapping[str, Any], figures: Mapping[str, str] | None = None) -> str:
    """One self-contained page: the banner first, tables, every figure inline, nothing fetched."""
    figs = card_plots.render(card) if figures is None else figures
    env = Environment(autoescape=select_autoescape(default=True))
    return env.from_string(_HTML).render(
        card=card, v=_view(card), figures=figs, pooled_local_note=POOLED_LOCAL_NOTE
    )


def write_card(run_dir: str | Path) -> list[Path]:
    """(Re)write model_card.json, .md and .html in the run folder; returns their paths."""
    path = Path(run_dir)
    card = build_card(path)
    out = [path / CARD_JSON, path / CARD_MD, path / CARD_HTML]
    # Not sorted: `warnings` must stay the first key a reader sees.
    atomic_write_bytes(out[0], (json.dumps(card, indent=2, ensure_ascii=False) + "\n").encode())
    atomic_write_bytes(out[1], render_markdown(card).encode("utf-8"))
    atomic_write_bytes(out[2], render_html(card).encode("utf-8"))
    return out
