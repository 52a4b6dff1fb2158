"""A whole federation on one machine, in Flower's simulation engine (Ray), with a live display.

The ClientApp is loaded by its reference string, exactly as Flower loads it from pyproject's
components, so the coordinator package never imports the site package.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedward.common.datasets.bundled import bundled_federation
from fedward.server.app import CoordinatorSettings, make_server_app
from fedward.server.run_folder import PROGRESS_FILE
from fedward.server.secagg_app import make_secagg_server_app

CLIENT_APP_REF = "fedward.client.app:app"
# strategy.secure_aggregation: Flower's legacy SecAgg+ pair (see fedward.server.secagg_app).
SECAGG_CLIENT_APP_REF = "fedward.client.secagg_app:app"


def load_client_app(ref: str = CLIENT_APP_REF) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def count_sites(settings: CoordinatorSettings) -> int:
    if settings.sim_site_configs:
        return len(settings.sim_site_configs)
    task = settings.run.task
    if task.dataset is None:
        raise ValueError("give site configs or a bundled dataset")
    fed = bundled_federation(
        task.dataset,
        n_sites=task.n_sites,
        partition=task.partition,
        alpha=task.dirichlet_alpha,
        seed=settings.run.seed,
    )
    return len(fed.sites)


@dataclass
class ProgressState:
    """What the live display shows, folded from the run folder's progress events."""

    rounds: int = 0
    current_round: int = 0
    sites: dict[str, dict[str, Any]] | None = None
    pooled: dict[str, Any] | None = None
    finished: bool = False
    messages: list[str] | None = None
    phase: str | None = None  # what runs besides the rounds: tuning trials, companions, baselines

    def apply(self, ev: dict[str, Any]) -> None:
        self.sites = self.sites or {}
        self.messages = self.messages or []
        kind = ev.get("event")
        if kind == "run-started":
            self.rounds = int(ev.get("rounds", 0))
        elif kind == "round-started":
            self.current_round = int(ev["round"])
        elif kind == "site-trained":
            s = self.sites.setdefault(ev["site"], {})
            s.update(
                status="trained",
                epsilon=ev.get("epsilon_model", ev.get("epsilon")),
                loss=ev.get("train_loss"),
            )
        elif kind in ("site-refused", "site-error", "site-failed", "site-rejected"):
            s = self.sites.setdefault(ev["site"], {})
            s.update(status=kind.removeprefix("site-"), reason=ev.get("reason"))
            self.messages.append(f"{ev['site']}: {ev.get('reason')}")
        elif kind == "evaluated" and ev.get("split") == "tune":
            for name, panel in (ev.get("sites") or {}).items():
                self.sites.setdefault(name, {})["auroc"] = panel.get("auroc")
                self.sites[name]["accuracy"] = panel.get("accuracy")
            self.pooled = ev.get("pooled")
        elif kind == "companion-started":
            self.phase = f"companion federation {ev['name']} ({ev.get('purpose')})"
        elif kind == "companion-finished":
            self.phase = f"companion federation {ev['name']} {ev.get('status')}"
        elif kind == "baselines-started":
            self.phase = (
                f"baseline suite at {ev.get('sites')} sites ({ev.get('budget')} configurations "
                "per family)"
            )
        elif kind == "baselines-report":
            self.phase = "baselines report written"
        elif kind == "run-finished":
            self.finished = True


def follow_progress(
    run_dir: Path, on_update: Callable[[ProgressState], None], stop: threading.Event
) -> ProgressState:
    """Tail progress.jsonl until ``stop`` is set; works for simulation and deployment alike."""
    state = ProgressState()
    path = run_dir / PROGRESS_FILE
    offset = 0
    while True:
        if path.exists():
            with path.open("r", encoding="utf-8") as fh:
                fh.seek(offset)
                while line := fh.readline():
                    if not line.endswith("\n"):
                        break
                    offset += len(line.encode())
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a damaged line must not end the live view of a run
                    if isinstance(event, dict):
                        state.apply(event)
            on_update(state)
        if stop.is_set():
            return state
        time.sleep(0.2)


def run_simulation(
    settings: CoordinatorSettings,
    *,
    on_update: Callable[[ProgressState], None] | None = None,
    verbose: bool = False,
) -> Path:
    """Run the federation; returns the run folder."""
    from flwr.simulation import run_simulation as flwr_run_simulation

    for key, value in {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }.items():
        os.environ.setdefault(key, value)
    n_sites = count_sites(settings)
    settings.engine = "simulation"
    assert settings.run_dir is not None, "the caller chooses the run folder"
    run_dir = Path(settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not verbose:
        # Flower's per-round INFO lines and its deprecation notice for the Python simulation API
        # would drown the live display; site failures are shown there instead.
        logging.getLogger("flwr").setLevel(logging.ERROR)

    stop = threading.Event()
    watcher = None
    if on_update is not None:
        watcher = threading.Thread(
            target=follow_progress, args=(run_dir, on_update, stop), daemon=True
        )
        watcher.start()
    cpus = max(1, os.cpu_count() or 1)
    if settings.run.strategy.secure_aggregation:
        server_app, client_ref = make_secagg_server_app(settings), SECAGG_CLIENT_APP_REF
    else:
        server_app, client_ref = make_server_app(settings), CLIENT_APP_REF
    try:
        flwr_run_simulation(
            server_app=server_app,
            client_app=load_client_app(client_ref),
            num_supernodes=n_sites,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {
                    "num_cpus": cpus,
                    "include_dashboard": False,
                    "logging_level": "error",
                },
            },
            verbose_logging=verbose,
        )
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=5)
    if not (run_dir / "metrics.json").exists():
        raise RuntimeError(f"the federation did not finish; see {run_dir / PROGRESS_FILE}")
    return run_dir
