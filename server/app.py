"""The coordinator's ServerApp: one shared frozen transform, Flower's strategy wrapped for robustness,
per-round checkpoints and tune metrics, and one final read of every site's sealed test split.

The same code runs in Flower's simulation engine (``fedward simulate``) and in the Deployment Engine
(``flwr run`` against a SuperLink).
"""

from __future__ import annotations

import json
import time
import uuid
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

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
    PURPOSE_RUN,
)
from fedward.common.run_config import RunConfig, run_schema
from fedward.common.schema import DataSchema
from fedward.common.strategy_config import StrategyConfig
from fedward.server.audit_run import SIMULATION_FILE, audit_after_run, audit_run_folder
from fedward.server.baselines_report import baselines_report, write_baselines_report
from fedward.server.checkpoint import (
    checkpoint_of,
    restore_strategy,
    restore_tracker,
    write_checkpoint,
)
from fedward.server.companions import Companion, run_companions, tune_run_model
from fedward.server.coordinator_audit import AUDIT_FILE, CoordinatorAudit
from fedward.server.coordinator_outputs import (
    RunFacts,
    announce_start,
    finish_run,
    model_metadata,
)
from fedward.server.coordinator_settings import (
    CoordinatorSettings,
    coordinator_dir,
    open_run_folder,
    settings_from_context,
    sim_state_root,
)
from fedward.server.data_profiles import collect_profiles
from fedward.server.federation import (
    Federation,
    federate,
    wait_for_nodes,
)
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.reply_polling_grid import reply_polling_grid
from fedward.server.report_baselines_collect import pooled_reference, site_baselines
from fedward.server.resume import (
    LAUNCH_FILE,
    ResumeError,
    ResumePoint,
    RunLock,
    SiteAdmissions,
    resume_point,
)
from fedward.server.run_folder import RunFolder
from fedward.server.site_tracking import SiteTracking, reply_info
from fedward.server.strategies import CentralDPAccounting


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
    replies = tracker.classify(
        0, grid.send_and_receive(msgs, timeout=strategy.round_timeout), "preprocessing"
    )
    aggregates = []
    for msg in replies:
        info = reply_info(msg)
        rec = tracker.site(msg.metadata.src_node_id)
        rec.epsilon = float(info.get("epsilon", 0.0))
        rec.delta = float(info.get("delta", 0.0))
        aggregates.append(json.loads(str(info[KEY_PREPROCESSING_AGGREGATES])))
    if len(aggregates) < min_sites:
        raise FedwardError(
            f"only {len(aggregates)} site(s) released preprocessing aggregates; "
            f"the run needs at least {min_sites}"
        )
    return transform_from_aggregates(schema, aggregates)


# Kept under its old name: tests build strategies through it.


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
            CoordinatorAudit(coordinator_dir(settings, None) / AUDIT_FILE).record(
                "resume-refused",
                run_dir=settings.run_dir,
                flower_run_id=str(context.run_id),
                reason=str(exc),
            )
            raise
        folder = RunFolder.reopen(point.run_dir)
    else:
        folder = open_run_folder(settings, context)
    audit = CoordinatorAudit(coordinator_dir(settings, folder) / AUDIT_FILE)
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
        state_root = sim_state_root(settings, folder)
        shared[KEY_SIM_STATE] = str(state_root.resolve())
        # What `fedward audit RUN_DIR` needs to reach the same simulated sites again.
        folder.write_json(
            SIMULATION_FILE,
            {
                "sim_site_configs": settings.sim_site_configs,
                "sim_state_dir": str(state_root.resolve()),
            },
        )
    heads_path = coordinator_dir(settings, folder) / "ledger_heads.json"
    main = Federation(run, run_id, PURPOSE_RUN, folder, shared, LedgerHeads(heads_path))
    tracker = main.tracker(grid)
    audit_run = {
        "run_id": run_id,
        "flower_run_id": str(context.run_id),
        "run_dir": str(folder.path),
    }
    if point is None:
        folder.write_json(LAUNCH_FILE, settings.launch)
        announce_start(folder, run, run_id, str(context.run_id))
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
    folder.save_model(result.final_arrays, model_metadata(RunFacts(run, run_id, schema, transform)))
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
    """The run's outputs, with central DP's report where the strategy adds noise itself."""
    central = (
        tracker.strategy.report(run.rounds)
        if isinstance(tracker.strategy, CentralDPAccounting)
        else None
    )
    facts = RunFacts(run, run_id, schema, transform)
    return finish_run(tracker.book, facts, test, elapsed, stopped, central_dp=central)


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
    from fedward.common.flower_compat import InMemoryGrid

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
        from fedward.server.federation_size import stop_on_federation_size

        stop_on_federation_size(len(list(grid.get_node_ids())), settings)
        settings.engine = "simulation"
    coordinate(grid, context, settings)


def default_output_dir() -> Path:
    return Path.cwd() / "runs"
