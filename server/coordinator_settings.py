"""What a coordinator runs with beyond the run config, for both transports (Message API, SecAgg+).

The settings come from the app's run-config values (``[tool.flwr.app.config]`` and ``flwr run
--run-config`` overrides) or from `fedward simulate` in-process; ``coordinator_dir`` is where either
coordinator keeps its state across runs (the sites' ledger heads, the audit log).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Context

from fedward.common.errors import ConfigError
from fedward.common.run_config import RunConfig, load_run_config
from fedward.server.run_folder import RunFolder


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
    inline = str(rc.get("run-config-json", "") or "")
    if inline:
        run = RunConfig.from_json(inline, source="the app's run-config-json")
    else:
        run = load_run_config(str(rc.get("run-config", "") or "") or None)
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
    return CoordinatorSettings(
        run=run,
        output_dir=str(rc.get("output-dir", "runs") or "runs"),
        run_dir=str(rc.get("run-dir", "") or "") or None,
        engine=str(rc.get("engine", "deployment") or "deployment"),
        sim_site_configs=_site_configs(rc.get("sites", "")),
        sim_state_dir=str(rc.get("sim-state-dir", "") or "") or None,
        resume=rc.get("resume") is True or str(rc.get("resume", "")).lower() == "true",
        launch=dict(rc),
    )


def _site_configs(value: Any) -> list[str]:
    """The ``sites`` value: a JSON list of site config paths (a path may hold a comma), or the
    paths joined by commas as a person types them."""
    text = str(value or "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            paths = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError("the app's run config", "sites", f"not a JSON list: {exc}") from exc
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ConfigError("the app's run config", "sites", "not a list of paths")
        return [p for p in paths if p]
    return [p for p in text.split(",") if p]


def sim_state_root(settings: CoordinatorSettings, folder: RunFolder) -> Path:
    """Simulation: where the simulated sites keep their state (inside the run folder by default)."""
    return Path(settings.sim_state_dir or folder.path / "site-state")


def coordinator_dir(settings: CoordinatorSettings, folder: RunFolder | None) -> Path:
    """The coordinator's state folder: ledger heads and the audit log, across runs."""
    if settings.coordinator_state_dir:
        return Path(settings.coordinator_state_dir)
    if settings.engine == "simulation" and folder is not None:
        return sim_state_root(settings, folder)
    return Path(settings.output_dir) / "coordinator-state"


def open_run_folder(settings: CoordinatorSettings, context: Context) -> RunFolder:
    """The new run's folder: ``run_dir`` if given (`fedward simulate`), else a fresh one."""
    run = settings.run
    if settings.run_dir:
        return RunFolder.at(settings.run_dir, run, run_id=context.run_id, engine=settings.engine)
    return RunFolder.create(settings.output_dir, run, run_id=context.run_id, engine=settings.engine)
