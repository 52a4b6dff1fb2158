"""A whole federation on one machine, in Flower's simulation engine (Ray), with a live display.

The run goes through `flwr run` like any Flower app's (``fedward.server.simulation_engine``), so
the apps are loaded by their reference strings and the coordinator package never imports the site
package; the live display follows the run folder's ``progress.jsonl``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import IO, Any

from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.federation_size import count_sites
from fedward.server.run_folder import PROGRESS_FILE
from fedward.server.simulation_engine import (
    MESSAGE_API_APP,
    SECAGG_APP,
    SimulationEngineError,
    app_values,
    run_app,
    write_app,
)

# Flower's and Ray's output of a simulation (site tracebacks included) when it is not on the console.
RUN_LOG_FILE = "simulation.log"
# Flower's status of a run whose ServerApp raised or stopped it.
FAILED = "finished:failed"


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
    """Run the federation through `flwr run` (``fedward.server.simulation_engine``); returns the
    run folder. Without ``verbose`` the engine's output goes to the run's log, not the console."""
    n_sites = count_sites(settings)
    settings.engine = "simulation"
    assert settings.run_dir is not None, "the caller chooses the run folder"
    run_dir = Path(settings.run_dir).resolve()
    settings.run_dir = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    app = SECAGG_APP if settings.run.strategy.secure_aggregation else MESSAGE_API_APP
    stop = threading.Event()
    watcher = None
    if on_update is not None:
        watcher = threading.Thread(
            target=follow_progress, args=(run_dir, on_update, stop), daemon=True
        )
        watcher.start()
    try:
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(TemporaryDirectory(prefix="fedward-simulate-")))
            log = (
                None
                if verbose
                else stack.enter_context((run_dir / RUN_LOG_FILE).open("a", encoding="utf-8"))
            )
            finished = run_app(
                write_app(tmp / "app", app),
                app_values(settings),
                n_sites=n_sites,
                flwr_home=tmp / "flwr-home",
                output=log,
                echo=_echo_to(log),
                verbose=verbose,
            )
    except SimulationEngineError as exc:
        raise RuntimeError(str(exc)) from exc
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=5)
    log_note = "" if verbose else f" and {run_dir / RUN_LOG_FILE}"
    if finished.status == FAILED:
        why = f": {finished.details}" if finished.details else ""
        raise RuntimeError(f"the federation failed{why}; see {run_dir / PROGRESS_FILE}{log_note}")
    if not (run_dir / "metrics.json").exists():
        raise RuntimeError(
            f"the federation did not finish; see {run_dir / PROGRESS_FILE}{log_note}"
        )
    return run_dir


def _echo_to(log: IO[str] | None) -> Callable[[str], None]:
    """Where `flwr run`'s stream of the run's log goes: the run's log file, else the console."""

    def echo(line: str) -> None:
        if log is None:
            sys.stdout.write(line)
            sys.stdout.flush()
        else:
            log.write(line)
            log.flush()

    return echo
