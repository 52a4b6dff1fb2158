"""The coordinator's ServerApp: one shared frozen transform, Flower's strategy wrapped for robustness,
per-round checkpoints and tune metrics, and one final read of every site's sealed test split.

The same code runs in Flower's simulation engine (``fedward simulate``) and in the Deployment Engine
(``flwr run`` against a SuperLink).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedward.common.config import RunConfig, StrategyConfig, load_run_config, run_schema
from fedward.common.errors import ConfigError, FedwardError
from fedward.common.models import set_deterministic
from fedward.common.preprocessing import SharedTransform, transform_from_aggregates
from fedward.common.protocol import (
    CONFIG,
    KEY_PARENT_RUN,
    KEY_PREPROCESSING_AGGREGATES,
    KEY_SCHEMA,
    KEY_SIM_SITES,
    KEY_SIM_STATE,
    KEY_TRANSFORM,
    PRIVACY_SUMMARY_KEYS,
    PURPOSE_RUN,
)
from fedward.common.schema import DataSchema
from fedward.server.audit_run import SIMULATION_FILE, audit_after_run, audit_run_folder
from fedward.server.baselines_report import (
    baselines_report,
    pooled_reference,
    site_baselines,
    write_baselines_report,
)
from fedward.server.checkpoint import (
    checkpoint_of,
    restore_strategy,
    restore_tracker,
    write_checkpoint,
)
from fedward.server.companions import Companion, run_companions, tune_run_model
from fedward.server.coordinator_audit import AUDIT_FILE, CoordinatorAudit
from fedward.server.data_profiles import collect_profiles
from fedward.server.federation import (
    Federation,
    build_run_strategy,
    federate,
    wait_for_nodes,
)
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.privacy_figures import EPSILON_FIGURES, epsilon_bound, model_epsilon
from fedward.server.reply_polling_grid import reply_polling_grid
from fedward.server.resume import (
    LAUNCH_FILE,
    ResumeError,
    ResumePoint,
    RunLock,
    SiteAdmissions,
    resume_point,
)
from fedward.server.run_folder import RunFolder
from fedward.server.site_tracking import SiteTracking, _reply_info
from fedward.server.strategies import CentralDPAccounting


@dataclass
class CoordinatorSettings:
    """What the coordinator needs beyond the run config: where to write, how it was started."""

    run: RunConfig
    output_dir: str = "runs"
    run_dir: str | None = None
    engine: str = "deployment"
    sim_site_configs: list[str] = field(default_factory=list)
    run_id: str | None = None
    # Simulation: the simulated sites' state folders (a fresh one inside the run folder by default,
    # so repeated simulations do not drain a budget by accident).
    sim_state_dir: str | None = None
    # Where the coordinator remembers the sites' ledger heads across runs.
    coordinator_state_dir: str | None = None
    # Audit the finished run in ``run_dir`` again instead of running a federation.
    audit_only: bool = False
    # Continue the run in ``run_dir`` from its last checkpoint (`fedward run --resume RUN_DIR`).
    resume: bool = False
    # The app's run-config values as launched (kept in the run folder, reused by a resume).
    launch: dict[str, Any] = field(default_factory=dict)


def settings_from_context(context: Context) -> CoordinatorSettings:
    """Read `[tool.flwr.app.config]` (and `flwr run --run-config` overrides)."""
    return settings_from_run_config(dict(context.run_config))


def settings_from_run_config(rc: dict[str, Any]) -> CoordinatorSettings:
    """The settings a ServerApp launched with the app run-config values ``rc`` runs with
    (`fedward run --resume` checks a resume's config hash with it before launching)."""
    path = str(rc.get("run-config", "") or "") or None
    run = load_run_config(path)
    updates: dict[str, Any] = {}
    if int(rc.get("rounds", -1)) > 0:
        updates["rounds"] = int(rc["rounds"])
    if int(rc.get("seed", -1)) >= 0:
        updates["seed"] = int(rc["seed"])
    if str(rc.get("run-name", "")):
        updates["name"] = str(rc["run-name"])
    privacy: dict[str, Any] = {}
    # `flwr run -c dp=false` arrives as a bool, a TOML file's dp = "false" as a string.
    dp = rc.get("dp", "")
    if isinstance(dp, bool) or str(dp).lower() in ("true", "false"):
        privacy["dp"] = dp if isinstance(dp, bool) else str(dp).lower() == "true"
    if float(rc.get("target-epsilon", -1.0)) > 0:
        privacy["target_epsilon"] = float(rc["target-epsilon"])
    data = run.model_dump(mode="json")
    data.update(updates)
    data["privacy"].update(privacy)
    run = RunConfig.model_validate(data)
    sites = str(rc.get("sites", "") or "")
    return CoordinatorSettings(
        run=run,
        output_dir=str(rc.get("output-dir", "runs") or "runs"),
        run_dir=str(rc.get("run-dir", "") or "") or None,
        engine=str(rc.get("engine", "deployment") or "deployment"),
        sim_site_configs=[s for s in sites.split(",") if s],
        resume=rc.get("resume") is True or str(rc.get("resume", "")).lower() == "true",
        launch=dict(rc),
    )


def _dp_fitted_transform(
    grid: Grid,
    tracker: SiteTracking,
    base: dict[str, Any],
    schema: DataSchema,
    strategy: StrategyConfig,
) -> SharedTransform:
    """Ask every site for DP-noised training-split aggregates and freeze the transform from their sum."""
    min_sites = strategy.min_sites
    nodes = wait_for_nodes(grid, min_sites, strategy.site_wait)
    msgs = [
        Message(RecordDict({CONFIG: ConfigRecord(dict(base))}), dst_node_id=n, message_type="query")
        for n in nodes
    ]
    replies = tracker._classify(
        0, grid.send_and_receive(msgs, timeout=strategy.round_timeout), "preprocessing"
    )
    aggregates = []
    for msg in replies:
        info = _reply_info(msg)
        rec = tracker._site(msg.metadata.src_node_id)
        rec.epsilon = float(info.get("epsilon", 0.0))
        rec.delta = float(info.get("delta", 0.0))
        aggregates.append(json.loads(str(info[KEY_PREPROCESSING_AGGREGATES])))
    if len(aggregates) < min_sites:
        raise FedwardError(
            f"only {len(aggregates)} site(s) released preprocessing aggregates; "
            f"the run needs at least {min_sites}"
        )
    return transform_from_aggregates(schema, aggregates)


# Kept under its old name: tests and the SecAgg+ coordinator build strategies through it.
_build_strategy = build_run_strategy
_wait_for_nodes = wait_for_nodes


def _after_companions(tracker: SiteTracking, companions: dict[str, Companion]) -> None:
    """The sites' lifetime figures as of the last federation, and each companion's ε per site.

    Companions run after the run itself and spend from the same budgets: the privacy summary
    states the budget as it stands at the end, not as it stood after the run's last round.
    """
    for rec in tracker.sites.values():
        for name, comp in companions.items():
            for site in comp.summary.get("sites", []):
                if site.get("site") != rec.label or site.get("epsilon") is None:
                    continue
                rec.companion_epsilon[name] = float(site["epsilon"])
                lifetime = site.get("epsilon_lifetime")
                if lifetime is not None and lifetime > (rec.epsilon_lifetime or 0.0):
                    rec.epsilon_lifetime = float(lifetime)
                    rec.delta_lifetime = site.get("delta_lifetime", rec.delta_lifetime)
                    rec.epsilon_remaining = site.get("epsilon_remaining", rec.epsilon_remaining)
                    rec.epsilon_tuning = site.get("epsilon_tuning", rec.epsilon_tuning)


def coordinate(grid: Grid, context: Context, settings: CoordinatorSettings) -> RunFolder:
    """Run one federation end to end and leave a complete run folder.

    Around the run itself: an optional tuning search for the run's model (same budget as each
    baseline family), then the companions the run config asks for (the federated logistic
    baseline, the label-shuffle and leave-one-site-out controls), the sites' baseline suite and,
    in simulation, the pooled reference; all of it lands in the baselines report.

    With ``settings.resume`` the run in ``settings.run_dir`` continues from its last checkpoint
    (``fedward.server.resume``). Every start, resume, refused resume, stop, finish and failure, and
    every site admitted or refused, goes to the coordinator's append-only audit log.
    """
    run = settings.run
    if run.strategy.secure_aggregation:
        raise ConfigError(
            None,
            "strategy.secure_aggregation",
            "this ServerApp (fedward.server.app) never runs SecAgg+, and this version runs "
            "SecAgg+ only in `fedward simulate` (fedward.server.secagg_app with "
            "fedward.client.secagg_app); refusing to train without the secure aggregation the "
            "run config asks for",
        )
    set_deterministic(run.seed)
    point: ResumePoint | None = None
    if settings.resume:
        try:
            if not settings.run_dir:
                raise ResumeError("a resume needs run-dir: the folder of the run to resume")
            point = resume_point(settings.run_dir, run)
        except ResumeError as exc:
            CoordinatorAudit(_coordinator_dir(settings, None) / AUDIT_FILE).record(
                "resume-refused",
                run_dir=settings.run_dir,
                flower_run_id=str(context.run_id),
                reason=str(exc),
            )
            raise
        folder = RunFolder.reopen(point.run_dir)
    elif settings.run_dir:
        folder = RunFolder.at(settings.run_dir, run, run_id=context.run_id, engine=settings.engine)
    else:
        folder = RunFolder.create(
            settings.output_dir, run, run_id=context.run_id, engine=settings.engine
        )
    audit = CoordinatorAudit(_coordinator_dir(settings, folder) / AUDIT_FILE)
    run_id = point.checkpoint.run_id if point else settings.run_id or uuid.uuid4().hex
    try:
        lock = RunLock(folder.path).acquire()
    except ResumeError as exc:  # another coordinator is still running this folder
        audit.record(
            "resume-refused" if point else "run-refused",
            run_dir=str(folder.path),
            flower_run_id=str(context.run_id),
            reason=str(exc),
        )
        raise
    try:
        return _coordinate(grid, context, settings, folder, run_id, audit, point)
    except BaseException as exc:
        audit.record(
            "run-failed",
            run_id=run_id,
            flower_run_id=str(context.run_id),
            run_dir=str(folder.path),
            reason=f"{type(exc).__name__}: {exc}",
        )
        raise
    finally:
        lock.release()


def _coordinator_dir(settings: CoordinatorSettings, folder: RunFolder | None) -> Path:
    """The coordinator's state folder: ledger heads and the audit log, across runs."""
    if settings.coordinator_state_dir:
        return Path(settings.coordinator_state_dir)
    if settings.engine == "simulation" and folder is not None:
        return Path(settings.sim_state_dir or folder.path / "site-state")
    return Path(settings.output_dir) / "coordinator-state"


def _coordinate(
    grid: Grid,
    context: Context,
    settings: CoordinatorSettings,
    folder: RunFolder,
    run_id: str,
    audit: CoordinatorAudit,
    point: ResumePoint | None,
) -> RunFolder:
    run = settings.run
    asked_hash = run.config_hash()
    schema = run_schema(run)
    shared: dict[str, Any] = {
        KEY_PARENT_RUN: run.to_json(),
        KEY_SCHEMA: schema.model_dump_json(),
        KEY_SIM_SITES: json.dumps(settings.sim_site_configs),
    }
    if settings.engine == "simulation":
        state_root = Path(settings.sim_state_dir or folder.path / "site-state")
        shared[KEY_SIM_STATE] = str(state_root.resolve())
        # What `fedward audit RUN_DIR` needs to reach the same simulated sites again.
        folder.write_json(
            SIMULATION_FILE,
            {
                "sim_site_configs": settings.sim_site_configs,
                "sim_state_dir": str(state_root.resolve()),
            },
        )
    heads_path = _coordinator_dir(settings, folder) / "ledger_heads.json"
    main = Federation(run, run_id, PURPOSE_RUN, folder, shared, LedgerHeads(heads_path))
    tracker = main.tracker(grid)
    audit_run = {
        "run_id": run_id,
        "flower_run_id": str(context.run_id),
        "run_dir": str(folder.path),
    }
    if point is None:
        folder.write_json(LAUNCH_FILE, settings.launch)
        folder.event(
            "run-started",
            run_id=run_id,
            flower_run_id=str(context.run_id),
            name=run.name,
            rounds=run.rounds,
            dp=run.privacy.dp,
            target_epsilon=run.privacy.target_epsilon,
            folder=str(folder.path),
        )
        audit.record("run-started", **audit_run, name=run.name, config_hash=asked_hash)
    started = time.time()
    if point is not None:
        # The transform was frozen (and, from DP aggregates, paid for) before round 1: reuse it.
        transform = SharedTransform.from_dict(
            json.loads((folder.path / "transform.json").read_text(encoding="utf-8"))
        )
    elif run.preprocessing.source == "dp-aggregates":
        transform = _dp_fitted_transform(grid, tracker, main.config(), schema, run.strategy)
    else:
        transform = SharedTransform.from_schema(schema)
    if point is None:
        folder.write_json("transform.json", transform.to_dict())
    shared[KEY_TRANSFORM] = json.dumps(transform.to_dict())

    search = None
    initial = None
    admissions = SiteAdmissions(audit, run_id)
    if point is not None:
        ckpt = point.checkpoint
        main.run = run = RunConfig.from_json(ckpt.run)  # after a tuning search: the chosen config
        restore_tracker(tracker, ckpt.tracker)
        restore_strategy(tracker.strategy, ckpt.strategy, ckpt.strategy_arrays)
        tracker.round_offset = ckpt.round
        initial = ckpt.arrays
        admissions.restore(tracker)
        where = point.describe(run.rounds)
        log(INFO, "resuming %s", where)
        folder.event(
            "run-resumed",
            run_id=run_id,
            flower_run_id=str(context.run_id),
            from_round=ckpt.round,
            rounds=run.rounds,
            checkpoint=ckpt.path.name if ckpt.path else None,
        )
        audit.record(
            "run-resumed",
            **audit_run,
            from_round=ckpt.round,
            rounds=run.rounds,
            checkpoint=ckpt.path.name if ckpt.path else None,
            config_hash=asked_hash,
        )
    elif run.tuning.deep:
        search = tune_run_model(grid, main, schema, transform.n_outputs)
        main.run = run = search.chosen_run(run)
        folder.write_json("run_config.json", run.model_dump(mode="json"))

    def on_round_end(server_round: int, arrays: ArrayRecord) -> None:
        ckpt = checkpoint_of(
            tracker,
            server_round,
            arrays,
            run_id=run_id,
            config_hash=asked_hash,
            run_json=main.run.to_json(),
        )
        write_checkpoint(folder.path, ckpt)
        admissions.sweep(tracker, server_round)

    tracker.on_round_end = on_round_end
    result = federate(
        grid, main, schema, transform.n_outputs, tracker=tracker, initial_arrays=initial
    )
    admissions.sweep(tracker, None)
    if result.stopped:
        _finish(
            folder, run, run_id, schema, transform, tracker, None, result.elapsed, result.stopped
        )
        audit.record("run-stopped", **audit_run, reason=result.stopped)
        return folder
    folder.save_model(
        result.final_arrays,
        {
            "kind": run.model.kind,
            "hidden": run.model.hidden,
            "activation": run.model.activation,
            "n_inputs": transform.n_outputs,
            "feature_names": transform.feature_names,
            "image_shape": schema.image_shape,
            "output": "one logit per row; sigmoid gives P(positive)",
            "transform_fingerprint": transform.fingerprint(),
        },
    )
    collect_profiles(grid, main, result)
    companions = run_companions(grid, main, result, schema, transform.n_outputs)
    _after_companions(tracker, companions)
    if run.baselines.enabled or companions or search is not None:
        site_suites = (
            site_baselines(grid, main, result, companions) if run.baselines.enabled else {}
        )
        pooled = (
            pooled_reference(
                run, settings.sim_site_configs, transform, len(list(grid.get_node_ids()))
            )
            if settings.engine == "simulation"
            and run.baselines.enabled
            and run.baselines.pooled_reference
            else None
        )
        report = baselines_report(
            run, result, companions, site_suites, pooled=pooled, search=search
        )
        write_baselines_report(folder, report)
    if run.audit.enabled:
        audit_after_run(grid, main, result, companions)
    _finish(
        folder, run, run_id, schema, transform, tracker, result.test, time.time() - started, None
    )
    audit.record("run-finished", **audit_run, rounds=run.rounds)
    _write_card(folder)
    return folder


def _write_card(folder: RunFolder) -> None:
    """Every finished run gets its model card; a card that cannot be drawn never loses the run."""
    from fedward.server.model_card import write_card

    try:
        write_card(folder.path)
    except Exception as exc:  # the run's results are already on disk: report, do not crash
        log(WARNING, "model card not written: %s", exc)
        folder.event("card-failed", reason=f"{type(exc).__name__}: {exc}")
    else:
        folder.event("card-written", file="model_card.html")


def _finish(
    folder: RunFolder,
    run: RunConfig,
    run_id: str,
    schema: DataSchema,
    transform: SharedTransform,
    tracker: SiteTracking,
    test: dict[str, Any] | None,
    elapsed: float,
    stopped: str | None,
) -> RunFolder:
    tracker.save_heads()
    sites = tracker.site_summary()
    folder.write_json(
        "metrics.json",
        {
            "train": tracker.history["train"],
            "tune": tracker.history["tune"],
            "test": test,
            "elapsed_s": round(elapsed, 3),
        },
    )
    record = run_record(run, schema, transform, sites)
    record["run_id"] = run_id
    record["status"] = "stopped" if stopped else "finished"
    record["stopped_reason"] = stopped
    central = (
        tracker.strategy.report(run.rounds)
        if isinstance(tracker.strategy, CentralDPAccounting)
        else None
    )
    if central is not None:
        record["privacy"]["central_dp"] = central
    folder.write_json("run_record.json", record)
    folder.write_json(
        "privacy_summary.json", privacy_summary(run, run_id, sites, central_dp=central)
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


def make_server_app(settings: CoordinatorSettings) -> ServerApp:
    """A ServerApp bound to settings given in-process (used by `fedward simulate`)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        grid = reply_polling_grid(grid)
        if settings.audit_only:
            assert settings.run_dir is not None, "an audit needs the finished run's folder"
            audit_run_folder(grid, context, settings.run_dir)
            return
        folder = coordinate(grid, context, settings)
        settings.run_dir = str(folder.path)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from flwr.superlink.grid import InMemoryGrid

    # `flwr run .` on Flower's local simulation: every SuperNode was registered before this ran.
    simulated = isinstance(grid, InMemoryGrid)
    grid = reply_polling_grid(grid)
    audit_dir = str(context.run_config.get("audit-run-dir", "") or "")
    if audit_dir:
        # `flwr run . FEDERATION --run-config "audit-run-dir='RUN_DIR'"`: audit a finished run.
        audit_run_folder(grid, context, audit_dir)
        return
    settings = settings_from_context(context)
    if simulated:
        from fedward.server.simulate import stop_on_federation_size

        stop_on_federation_size(len(list(grid.get_node_ids())), settings)
        settings.engine = "simulation"
    coordinate(grid, context, settings)


def default_output_dir() -> Path:
    return Path.cwd() / "runs"
