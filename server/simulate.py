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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedward.server.app import make_server_app
from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.federation_size import count_sites
from fedward.server.run_folder import PROGRESS_FILE
from fedward.server.secagg_app import make_secagg_server_app

CLIENT_APP_REF = "fedward.client.app:app"
# Flower's and Ray's output of a simulation (site tracebacks included) when it is not on the console.
RUN_LOG_FILE = "simulation.log"
# strategy.secure_aggregation: Flower's legacy SecAgg+ pair (see fedward.server.secagg_app).
SECAGG_CLIENT_APP_REF = "fedward.client.secagg_app:app"


def load_client_app(ref: str = CLIENT_APP_REF) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _write_worker_lines(fh: Any) -> Callable[[dict[str, Any]], None]:
    def write(data: dict[str, Any]) -> None:
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who} pid={data.get('pid')}) " if who else ""
        for line in data.get("lines") or []:
            fh.write(f"{prefix}{line}\n")
        fh.flush()

    return write


@contextmanager
def _output_to_run_log(run_dir: Path, backend_init: dict[str, Any]) -> Iterator[Path]:
    """Flower's log lines and the simulated sites' output (Ray's ClientAppActor tracebacks and
    "Manually terminating ClientAppActor" warnings) go to the run's log file, not the console:
    the live view already shows why a site refused, in one line."""
    path = run_dir / RUN_LOG_FILE
    fh = path.open("a", encoding="utf-8")
    handler = logging.StreamHandler(fh)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    flwr_logger = logging.getLogger("flwr")
    saved_level = flwr_logger.level
    saved_handlers = [(h, h.level) for h in flwr_logger.handlers]
    for h, _ in saved_handlers:
        h.setLevel(logging.CRITICAL + 1)  # Flower's console handler stays silent
    flwr_logger.setLevel(logging.INFO)
    flwr_logger.addHandler(handler)
    dispatcher: Any = None
    try:
        import ray._private.worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        # Ray's own debugger silences worker output on the console the same way; the lines
        # still reach the handlers registered with the dispatcher.
        saved_enabled = ray_worker._worker_logs_enabled
        ray_worker._worker_logs_enabled = False
        dispatcher.add_handler("fedward_run_log", _write_worker_lines(fh))
    except (ImportError, AttributeError):
        # Ray changed its internals: keep the console clean; the lines stay in Ray's session logs.
        backend_init["log_to_driver"] = False
    try:
        yield path
    finally:
        if dispatcher is not None:
            dispatcher.remove_handler("fedward_run_log")
            ray_worker._worker_logs_enabled = saved_enabled
        flwr_logger.removeHandler(handler)
        flwr_logger.setLevel(saved_level)
        for h, level in saved_handlers:
            h.setLevel(level)
        fh.close()


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
    from fedward.common.flower_compat import run_in_process_simulation

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
    init_args: dict[str, Any] = {
        "num_cpus": cpus,
        "include_dashboard": False,
        "logging_level": "error",
    }
    try:
        with ExitStack() as quiet:
            if not verbose:
                quiet.enter_context(_output_to_run_log(run_dir, init_args))
            run_in_process_simulation(
                server_app=server_app,
                client_app=load_client_app(client_ref),
                num_supernodes=n_sites,
                backend_config={
                    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                    "init_args": init_args,
                },
                verbose_logging=verbose,
            )
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=5)
    if not (run_dir / "metrics.json").exists():
        log_note = f" and {run_dir / RUN_LOG_FILE}" if not verbose else ""
        raise RuntimeError(
            f"the federation did not finish; see {run_dir / PROGRESS_FILE}{log_note}"
        )
    return run_dir
