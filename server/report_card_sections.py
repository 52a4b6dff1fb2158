"""The model card's data sections (Mitchell et al.'s, and fedward's privacy, baselines, profiles
and provenance), built as plain dicts from the run folder's files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedward.common.errors import FedwardError
from fedward.common.protocol import PRIVACY_SUMMARY_KEYS
from fedward.common.run_config import RunConfig, run_schema
from fedward.server.report_card_files import ENCRYPTED_INFERENCE_FILE, section_not_done
from fedward.server.report_format import finite

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


# ---- sections -----------------------------------------------------------------------------------


def architecture_text(model: Mapping[str, Any]) -> str:
    n_in = model.get("n_inputs")
    kind = model.get("kind")
    if kind == "logistic":
        return f"logistic regression: {n_in} inputs → 1 logit"
    hidden = "-".join(str(h) for h in model.get("hidden") or [])
    act = model.get("activation", "relu")
    if kind == "cnn":
        return f"convolutional network on images of shape {model.get('image_shape')} → 1 logit"
    return f"multilayer perceptron {n_in}-{hidden}-1 ({act} activations) → 1 logit"


def model_name(model: Mapping[str, Any]) -> str:
    kind = model.get("kind")
    if kind == "logistic":
        return "logistic regression"
    if kind == "cnn":
        return "convolutional network"
    hidden = ", ".join(str(h) for h in model.get("hidden") or [])
    return f"multilayer perceptron ({hidden}; {model.get('activation', 'relu')})"


def label_text(config: Mapping[str, Any]) -> str | None:
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


def input_format_text(transform: Mapping[str, Any]) -> str:
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
    value: Any = panel.get(key)
    if not finite(value):
        return None
    out: dict[str, Any] = {"type": key, "value": float(value), "slice": slice_}
    lo: Any = panel.get(f"{key}_lo")
    hi: Any = panel.get(f"{key}_hi")
    if with_ci and finite(lo) and finite(hi):
        out["confidence_interval"] = {"lower_bound": float(lo), "upper_bound": float(hi)}
    if key in THRESHOLDED:
        out["threshold"] = 0.5
    return out


def performance_section(
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
        n: Any = (prof.get("splits") or {}).get(split)
        if n is None:
            n = fallback.get(site)
        rows.append({"site": site, "rows": int(n) if finite(n) else None})
    return rows


def _train_rows(metrics: Mapping[str, Any]) -> dict[str, Any]:
    for entry in reversed(metrics.get("train") or []):
        sites = entry.get("sites") or {}
        if sites:
            return {s: v.get("num_examples") for s, v in sites.items()}
    return {}


def data_section(
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
        return section_not_done("audit.json")
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


def privacy_section(files_: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
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


def baselines_section(report: Mapping[str, Any] | None) -> dict[str, Any]:
    """Whether the model earns its complexity: the baselines report's verdict and table."""
    if report is None:
        return section_not_done("baselines.json")
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


def profiles_section(profiles: Mapping[str, Any] | None) -> dict[str, Any]:
    """The training data as the coordinator may know it: per-site aggregates, cells suppressed."""
    if profiles is None:
        return section_not_done("profiles.json")
    return {
        "done": True,
        "min_cell_size": profiles.get("min_cell_size"),
        "non_dp": profiles.get("non_dp"),
        "sites": profiles.get("sites") or {},
    }


def provenance_section(files_: Mapping[str, Any]) -> dict[str, Any]:
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


def model_epsilons(privacy: Mapping[str, Any]) -> list[float]:
    """The released model's ε at each site that took part (a dropped site's is a range)."""
    return [
        float(s["epsilon_model"])
        for s in privacy["sites"]
        if s.get("status") == "ok" and finite(s.get("epsilon_model"))
    ]


def model_epsilon_scope(privacy: Mapping[str, Any]) -> str:
    """What the released model's ε composes, from what ran."""
    parts = list(privacy.get("epsilon_covers") or [])
    return "composing " + ", ".join(parts) if parts else "composing the run's training"
