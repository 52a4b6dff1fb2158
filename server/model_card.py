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

Layout: report_card_files reads the folder (the only I/O); report_card_sections and
report_card_verdicts build the card's data, checked against model_card.schema.json; the view
(report_card_view), the templates card.md.j2 and card.html.j2 and the figures (card_plots) render it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedward.common.card_config import CardConfig
from fedward.common.config_files import validate_config
from fedward.common.durable_files import atomic_write_bytes
from fedward.server import card_plots
from fedward.server.report_card_files import (
    companion_names,
    load_run,
    release_records,
)
from fedward.server.report_card_markdown import render_markdown
from fedward.server.report_card_sections import (
    BUNDLED_DATA,
    DP_SGD_REFERENCE,
    PANEL_METRICS,
    POOLED_LOCAL_NOTE,
    REFERENCES,
    architecture_text,
    baselines_section,
    data_section,
    input_format_text,
    label_text,
    model_epsilon_scope,
    model_name,
    performance_section,
    privacy_section,
    profiles_section,
    provenance_section,
)
from fedward.server.report_card_verdicts import (
    card_caveats,
    card_tradeoffs,
    card_verdicts,
    controls_that_ran,
    ethics_entries,
    release_state,
)
from fedward.server.report_card_view import card_view
from fedward.server.report_schemas import check_report, report_schema
from fedward.server.report_templates import render

CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"
SCHEMA_FILE = "model_card.schema.json"
SCHEMA_VERSION = "fedward-model-card/1"

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
    privacy = privacy_section(files_, model)
    baselines = baselines_section(files_["baselines.json"])
    verdicts, warnings = card_verdicts(privacy, record)
    verdicts["release"] = release_state(release_records(Path(run_dir)), verdicts)
    controls_ran = controls_that_ran(companion_names(Path(run_dir)), files_["baselines.json"])
    datasets = {s["site"]: s.get("dataset") for s in privacy["sites"] if s.get("dataset")}
    dataset = (config.get("task") or {}).get("dataset")
    arch = architecture_text(model)
    sites = record.get("participating") or sorted(test.get("sites") or {})
    label = label_text(config)
    run_id = str(record.get("run_id") or manifest.get("run_id"))
    overview = (
        f"A {model_name(model)} trained by federated learning (Flower) across {len(sites)} "
        f"site(s) ({', '.join(sites)})"
        + (f" to predict {label}" if label else "")
        + (f" ({dataset})" if dataset else "")
        + (
            f", with sample-level differential privacy at each site (target ε "
            f"{privacy['target_epsilon']} for the released model, {model_epsilon_scope(privacy)})."
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
            "name": f"{manifest.get('name') or 'fedward run'}: {model_name(model)}",
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
            "data": data_section(files_, test, datasets, privacy["dp"]),
            "input_format": input_format_text(transform),
            "output_format": str(model.get("output") or "one logit per row")
            + (f"; the positive class is {label}" if label else ""),
        },
        "considerations": {
            "users": [{"description": u} for u in card_cfg.intended_users],
            "use_cases": [{"description": card_cfg.intended_use}],
            "out_of_scope_uses": [{"description": u} for u in card_cfg.out_of_scope_uses],
            "limitations": [
                {"description": c} for c in card_caveats(card_cfg, files_, test, privacy)
            ],
            "tradeoffs": [{"description": t} for t in card_tradeoffs(privacy, baselines, test)],
            "ethical_considerations": ethics_entries(
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
            "performance_metrics": performance_section(test, files_["baselines.json"]),
            "score_histograms": dict(sorted((test.get("histograms") or {}).items())),
            "score_histograms_note": "each site's coarsened test score histogram (positives = "
            "label 1, equal-width bins of the predicted probability on [0, 1]; every count 0 or "
            "at least the site's minimum cell size): the only data the curves are drawn from",
            "graphics": {"description": "", "collection": []},
        },
        "privacy": privacy,
        "baselines": baselines,
        "provenance": provenance_section(files_),
        "training_data_profiles": profiles_section(files_["profiles.json"]),
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
    return report_schema("model_card")


def render_html(card: Mapping[str, Any], figures: Mapping[str, str] | None = None) -> str:
    """One self-contained page: the banner first, tables, every figure inline, nothing fetched."""
    figs = card_plots.render(card) if figures is None else figures
    return render(
        "card.html.j2",
        card=card,
        v=card_view(card),
        figures=figs,
        pooled_local_note=POOLED_LOCAL_NOTE,
    )


def write_card(run_dir: str | Path) -> list[Path]:
    """(Re)write model_card.json, .md and .html in the run folder; returns their paths."""
    path = Path(run_dir)
    card = build_card(path)
    check_report("model_card", card)
    out = [path / CARD_JSON, path / CARD_MD, path / CARD_HTML]
    # Not sorted: `warnings` must stay the first key a reader sees.
    atomic_write_bytes(out[0], (json.dumps(card, indent=2, ensure_ascii=False) + "\n").encode())
    atomic_write_bytes(out[1], render_markdown(card).encode("utf-8"))
    atomic_write_bytes(out[2], render_html(card).encode("utf-8"))
    return out
