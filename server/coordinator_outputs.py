"""A run's outputs, the same for both transports: metrics.json, run_record.json, privacy_summary.json.

The Message-API coordinator (``fedward.server.app``) and the SecAgg+ one (``fedward.server.secagg_app``)
both finish a run here from their book of sites (``fedward.server.tracking_book``); a mode says
what it adds (central DP's report, the SecAgg+ statement) and nothing else differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedward.common.preprocessing import SharedTransform
from fedward.common.protocol import PRIVACY_SUMMARY_KEYS
from fedward.common.run_config import RunConfig
from fedward.common.schema import DataSchema
from fedward.server.privacy_figures import EPSILON_FIGURES, epsilon_bound, model_epsilon
from fedward.server.run_folder import RunFolder
from fedward.server.tracking_book import SiteBook


@dataclass(frozen=True)
class RunFacts:
    """What every output of a run states about it: its config, id, data schema and frozen transform."""

    run: RunConfig
    run_id: str
    schema: DataSchema
    transform: SharedTransform


def announce_start(
    folder: RunFolder, run: RunConfig, run_id: str, flower_run_id: str, **mode: Any
) -> None:
    """The run's first event: what it is and where it writes (``mode``: e.g. secure aggregation)."""
    folder.event(
        "run-started",
        run_id=run_id,
        flower_run_id=flower_run_id,
        name=run.name,
        rounds=run.rounds,
        dp=run.privacy.dp,
        target_epsilon=run.privacy.target_epsilon,
        **mode,
        folder=str(folder.path),
    )


def model_metadata(facts: RunFacts, **mode: Any) -> dict[str, Any]:
    """What model.json says about the released model: its shape, inputs and output."""
    run, schema, transform = facts.run, facts.schema, facts.transform
    return {
        "kind": run.model.kind,
        "hidden": run.model.hidden,
        "activation": run.model.activation,
        "n_inputs": transform.n_outputs,
        "feature_names": transform.feature_names,
        "image_shape": schema.image_shape,
        "output": "one logit per row; sigmoid gives P(positive)",
        "transform_fingerprint": transform.fingerprint(),
        **mode,
    }


def finish_run(
    book: SiteBook,
    facts: RunFacts,
    test: dict[str, Any] | None,
    elapsed: float,
    stopped: str | None,
    *,
    central_dp: dict[str, Any] | None = None,
    secure_aggregation: dict[str, Any] | None = None,
    mode: str | None = None,
    not_asked: dict[str, str] | None = None,
) -> RunFolder:
    """Write the run's metrics, record and privacy summary, and announce how it ended.

    ``not_asked`` names the companions (baselines, audit, profiles) a transport cannot ask for,
    each with the reason, so that a run without them says so instead of being silent.
    """
    folder, run, run_id = book.folder, facts.run, facts.run_id
    book.save_heads()
    sites = book.site_summary()
    metrics: dict[str, Any] = {
        "train": book.history["train"],
        "tune": book.history["tune"],
        "test": test,
        "elapsed_s": round(elapsed, 3),
    }
    if secure_aggregation is not None:
        metrics["secure_aggregation"] = True
    folder.write_json("metrics.json", metrics)
    record = run_record(run, facts.schema, facts.transform, sites)
    record["run_id"] = run_id
    record["status"] = "stopped" if stopped else "finished"
    record["stopped_reason"] = stopped
    if mode is not None:
        record["mode"] = mode
    if central_dp is not None:
        record["privacy"]["central_dp"] = central_dp
    if secure_aggregation is not None:
        record["privacy"]["secure_aggregation"] = secure_aggregation
    if not_asked:
        record["not_asked"] = not_asked
    folder.write_json("run_record.json", record)
    folder.write_json(
        "privacy_summary.json",
        privacy_summary(
            run, run_id, sites, central_dp=central_dp, secure_aggregation=secure_aggregation
        ),
    )
    if stopped:
        folder.event("run-stopped", elapsed_s=round(elapsed, 3), reason=stopped)
    else:
        folder.event("run-finished", elapsed_s=round(elapsed, 3), test=test)
    return folder


def privacy_summary(
    run: RunConfig,
    run_id: str,
    sites: list[dict[str, Any]],
    *,
    central_dp: dict[str, Any] | None = None,
    secure_aggregation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per site: ε/δ this run and over the dataset's lifetime, budget left, refusals.

    ``central_dp`` (``CentralDPAccounting.report``) and ``secure_aggregation`` (the SecAgg+ mode's
    statement) say what the optional modes guarantee and what they do not; a mode that is off is
    stated as ``{"enabled": false}``.
    """
    multi_row = any(s.get("multi_row_patients") for s in sites)
    return {
        "run_id": run_id,
        "dp": run.privacy.dp,
        "privacy_unit": "record (one row of one site's table)"
        + (
            "; some patients have several rows, so a patient is protected only per row"
            if multi_row
            else ""
        ),
        "accountant_requested": run.privacy.accountant,
        "accountant_note": "each site composes its ledger with the accountant its own policy names (sites[].accountant)",
        "target_epsilon": run.privacy.target_epsilon if run.privacy.dp else None,
        "max_grad_norm": run.privacy.max_grad_norm,
        "budget_planning": "each site plans its noise once per run for the rounds asked plus one "
        "retried round, within min(run target, its per-run cap, its remaining lifetime budget)",
        "central_dp": central_dp or {"enabled": False},
        "secure_aggregation": secure_aggregation or {"enabled": False},
        "figures": EPSILON_FIGURES if run.privacy.dp else None,
        "sites": [
            {
                **{key: s.get(key) for key in PRIVACY_SUMMARY_KEYS},
                "epsilon_model": model_epsilon(s),
                "epsilon_bound": epsilon_bound(run, s),
            }
            for s in sites
        ],
    }


def run_record(
    run: RunConfig, schema: DataSchema, transform: SharedTransform, sites: list[dict[str, Any]]
) -> dict[str, Any]:
    """The privacy statement of the run: what was DP, what was not, who took part and who did not."""
    dp_covered = ["model updates (DP-SGD)"] if run.privacy.dp else []
    if run.privacy.dp and run.tuning.deep:
        dp_covered.insert(0, "the tuning trials that chose the model's settings (DP-SGD)")
    if run.preprocessing.source == "dp-aggregates":
        dp_covered.append("preprocessing aggregates (Gaussian mechanism)")
    non_dp = sorted({o for s in sites for o in s["non_dp_outputs"]})
    return {
        "config_hash": run.config_hash(),
        "schema_fingerprint": schema.fingerprint(),
        "transform_source": run.preprocessing.source,
        "transform_fingerprint": transform.fingerprint(),
        "privacy": {
            "dp": run.privacy.dp,
            "privacy_unit": "one patient row at one site (sample-level DP)",
            "target_epsilon": run.privacy.target_epsilon if run.privacy.dp else None,
            "accountant_requested": run.privacy.accountant,
            "accountant_note": "each site composes its ledger with the accountant its own policy names (sites[].accountant)",
            "max_grad_norm": run.privacy.max_grad_norm,
            "epsilon_covers": dp_covered,
            "non_dp_outputs": non_dp,
            "non_dp_note": "These aggregates are protected only by the sites' minimum cell sizes; "
            "small-cell suppression is not differential privacy.",
        },
        "sites": sites,
        "participating": [s["site"] for s in sites if s["status"] == "ok"],
        "left_out": [
            {
                "site": s["site"],
                "status": s["status"],
                "reason": s["reason"],
                "details": s["details"],
            }
            for s in sites
            if s["status"] != "ok"
        ],
        "warnings": sorted({f"{s['site']}: {w}" for s in sites for w in s["warnings"]}),
    }
