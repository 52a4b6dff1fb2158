"""Audit every model a run would release: right after the run, or later for a finished run folder.

The run's model, and the federated logistic baseline when there is one, are the models that may
leave the coordinator; each is sent back to the sites that trained it, which attack it on their
own rows (``evaluate.audit``) and answer with aggregates only. Local baselines never leave their
site, so there is nothing of theirs to audit.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid

from fedward.common.protocol import (
    FEDERATED_LOGISTIC,
    KEY_PARENT_RUN,
    KEY_RUN,
    KEY_RUN_ID,
    KEY_SCHEMA,
    KEY_SIM_SITES,
    KEY_SIM_STATE,
    KEY_TRANSFORM,
)
from fedward.common.run_config import RunConfig, run_schema
from fedward.common.run_plan import companion_runs
from fedward.server.audit_report import audit_report, write_audit_report
from fedward.server.companions import COMPANIONS_DIR, Companion
from fedward.server.federation import (
    Federation,
    FederationResult,
    describe_model,
    wait_for_nodes,
)
from fedward.server.report_audit_collect import site_audits
from fedward.server.run_folder import RunFolder

SIMULATION_FILE = "simulation.json"


@dataclass
class AuditTarget:
    """One model to audit: its weights, the config its sites trained it under, ε/δ per site."""

    name: str
    description: str
    arrays: ArrayRecord
    config: dict[str, Any]
    epsilon: dict[str, float | None] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)


def run_audits(
    grid: Grid,
    folder: RunFolder,
    run: RunConfig,
    run_id: str,
    targets: list[AuditTarget],
    nodes: list[int],
    names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Audit every target at ``nodes``; write audit.json, audit.md and audit.html."""
    folder.event("audit-started", sites=len(nodes), models=[t.name for t in targets])
    models = {
        t.name: {
            "description": t.description,
            "sites": site_audits(
                grid, nodes, t.config, t.arrays, t.name, run.strategy.round_timeout, names
            ),
            "epsilon": t.epsilon,
        }
        for t in targets
    }
    report = audit_report(run.audit, models, run_id=run_id)
    write_audit_report(folder, report, {t.name: t.delta for t in targets})
    report["_replies"] = models
    return report


def audit_after_run(
    grid: Grid, main: Federation, result: FederationResult, companions: dict[str, Companion]
) -> dict[str, Any]:
    """The audit at the end of a run, at the sites that trained its model."""
    recs = list(result.tracker.sites.values())
    targets = [
        AuditTarget(
            "run",
            f"the run's model ({describe_model(main.run)})",
            result.final_arrays,
            main.config(),
            {r.label: r.epsilon for r in recs},
            {r.label: r.delta or 0.0 for r in recs},
        )
    ]
    fed_lr = companions.get(FEDERATED_LOGISTIC)
    if fed_lr is not None and fed_lr.arrays is not None:
        lr_run = next(c for n, c, _ in companion_runs(main.run) if n == FEDERATED_LOGISTIC)
        sites = fed_lr.summary["sites"]
        targets.append(
            AuditTarget(
                FEDERATED_LOGISTIC,
                "the federated logistic baseline",
                fed_lr.arrays,
                {**main.config(), KEY_RUN: lr_run.to_json(), KEY_RUN_ID: fed_lr.summary["run_id"]},
                {s["site"]: s.get("epsilon") for s in sites},
                {s["site"]: s.get("delta") or 0.0 for s in sites},
            )
        )
    nodes = [n for n, r in result.tracker.sites.items() if r.status == "ok"]
    names = {n: r.label for n, r in result.tracker.sites.items()}
    report = run_audits(grid, main.folder, main.run, main.run_id, targets, nodes, names)
    for model in report.pop("_replies").values():
        for site, info in model["sites"].items():
            rec = next((r for r in recs if r.label == site), None)
            if rec is not None and info.get("status") == "ok":
                rec.non_dp_outputs.update(str(x) for x in info.get("non_dp_outputs", []))
    return report


# ---- a finished run folder --------------------------------------------------------------------


def _load_arrays(path: Path) -> ArrayRecord:
    state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    return ArrayRecord(state)


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def audit_run_folder(grid: Grid, context: Context, run_dir: str | Path) -> dict[str, Any]:
    """Audit a finished run's released models again, with the sites that are connected now.

    Reads only the run folder (config, transform, model weights, privacy summary); the sites
    check the request against their own ledgers as for any message.
    """
    folder = RunFolder(run_dir)
    path = folder.path
    for name in ("run_config.json", "run_record.json", "transform.json", "model.pt"):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path / name} is missing: `fedward audit` needs a finished run folder"
            )
    run = RunConfig.model_validate(_json(path / "run_config.json"))
    record = _json(path / "run_record.json")
    run_id = str(record["run_id"])
    schema = run_schema(run)
    shared: dict[str, Any] = {
        KEY_PARENT_RUN: run.to_json(),
        KEY_SCHEMA: schema.model_dump_json(),
        KEY_TRANSFORM: json.dumps(_json(path / "transform.json")),
        KEY_SIM_SITES: "[]",
    }
    sim = path / SIMULATION_FILE
    if sim.is_file():
        settings = _json(sim)
        shared[KEY_SIM_SITES] = json.dumps(settings["sim_site_configs"])
        shared[KEY_SIM_STATE] = settings["sim_state_dir"]
    privacy = {s["site"]: s for s in _json(path / "privacy_summary.json")["sites"]}
    targets = [
        AuditTarget(
            "run",
            f"the run's model ({describe_model(run)})",
            _load_arrays(path / "model.pt"),
            {**shared, KEY_RUN: run.to_json(), KEY_RUN_ID: run_id},
            {k: v.get("epsilon") for k, v in privacy.items()},
            {k: v.get("delta") or 0.0 for k, v in privacy.items()},
        )
    ]
    lr_dir = path / COMPANIONS_DIR / FEDERATED_LOGISTIC
    if (lr_dir / "model.pt").is_file():
        summary = _json(lr_dir / "summary.json")
        lr_run = next(c for n, c, _ in companion_runs(run) if n == FEDERATED_LOGISTIC)
        targets.append(
            AuditTarget(
                FEDERATED_LOGISTIC,
                "the federated logistic baseline",
                _load_arrays(lr_dir / "model.pt"),
                {**shared, KEY_RUN: lr_run.to_json(), KEY_RUN_ID: summary["run_id"]},
                {s["site"]: s.get("epsilon") for s in summary["sites"]},
                {s["site"]: s.get("delta") or 0.0 for s in summary["sites"]},
            )
        )
    nodes = wait_for_nodes(grid, run.strategy.min_sites, run.strategy.site_wait)
    report = run_audits(grid, folder, run, run_id, targets, nodes)
    replies = report.pop("_replies")
    outputs = sorted(
        {
            str(x)
            for model in replies.values()
            for info in model["sites"].values()
            if info.get("status") == "ok"
            for x in info.get("non_dp_outputs", [])
        }
    )
    record["privacy"]["non_dp_outputs"] = sorted(
        set(record["privacy"]["non_dp_outputs"]) | set(outputs)
    )
    folder.write_json("run_record.json", record)
    return report
