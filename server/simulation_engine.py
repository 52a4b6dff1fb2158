"""Flower's simulation runtime, reached the way Flower supports it: `flwr run` against a SuperLink
in simulation mode.

`fedward simulate` renders fedward's Flower app into a fresh folder (the message-API pair, or the
SecAgg+ pair), starts a SuperLink of its own on a free loopback port, submits the app with every
simulate setting as the app's run config, streams the run's log, and stops the SuperLink and every
process under it when the run ends or the command is interrupted.

A private SuperLink rather than the local one `flwr run` manages: that one listens on fixed ports,
outlives the command and keeps its state in the user's FLWR_HOME; a simulation must leave nothing
running and must not touch a person's Flower connections.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import psutil
from jinja2 import Environment, PackageLoader

from fedward.common.errors import FedwardError
from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.flwr_process import FlwrRun, find_flwr, flwr_message

LOOPBACK = "127.0.0.1"
CONNECTION = "fedward-simulation"
SUPERLINK_START_S = 60.0
# How long the SuperLink, SuperExec and the simulation process get to end on SIGTERM before they
# are killed: by then the run has ended (or is being abandoned) and its outputs are written;
# `flwr-simulation` takes about 2 s to end on its own after a finished run.
STOP_GRACE_S = 0.5
APP_TEMPLATE = "flower_app.toml.j2"
START_TRIES = 3


@dataclass(frozen=True)
class FlowerApp:
    """One Flower app of fedward: its name and its ServerApp/ClientApp pair."""

    name: str
    transport: str
    serverapp: str
    clientapp: str


MESSAGE_API_APP = FlowerApp(
    "fedward", "message-API", "fedward.server.app:app", "fedward.client.app:app"
)
# strategy.secure_aggregation: Flower's legacy SecAgg+ pair (see fedward.server.secagg_app).
SECAGG_APP = FlowerApp(
    "fedward-secagg", "SecAgg+", "fedward.server.secagg_app:app", "fedward.client.secagg_app:app"
)


class SimulationEngineError(FedwardError):
    """The simulation runtime could not be started, or the run could not be submitted."""


@dataclass(frozen=True)
class FinishedRun:
    """A run as the SuperLink reports it once `flwr run` stops streaming."""

    run_id: str | None
    status: str  # Flower's: "finished:completed", "finished:failed", …; "" when unknown
    details: str


def app_pyproject(app: FlowerApp) -> str:
    """The app's pyproject.toml, rendered from the template shipped with the package."""
    env = Environment(
        loader=PackageLoader("fedward.server", "templates"),
        autoescape=False,
        keep_trailing_newline=True,
    )
    return env.get_template(APP_TEMPLATE).render(
        name=app.name,
        version=version("fedward"),
        transport=app.transport,
        serverapp=app.serverapp,
        clientapp=app.clientapp,
    )


def write_app(folder: Path, app: FlowerApp) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(app_pyproject(app), encoding="utf-8")
    return folder


def app_values(settings: CoordinatorSettings) -> dict[str, str | int | float | bool]:
    """Every setting of a simulation as the app's run-config values (``[tool.flwr.app.config]``),
    which the ServerApp reads back with ``settings_from_context``."""
    assert settings.run_dir is not None, "the caller chooses the run folder"
    values: dict[str, str | int | float | bool] = {
        "run-config-json": settings.run.to_json(),
        "output-dir": str(settings.output_dir),
        "engine": "simulation",
        "sites": json.dumps(settings.sim_site_configs),
        "sim-state-dir": settings.sim_state_dir or "",
    }
    if settings.audit_only:
        values["audit-run-dir"] = str(settings.run_dir)
    else:
        values["run-dir"] = str(settings.run_dir)
    return values


def toml_assignments(values: Mapping[str, str | int | float | bool]) -> str:
    """``key = value`` lines: JSON's strings, integers, floats and booleans are TOML's too (JSON's
    string escapes are TOML's basic-string escapes)."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def engine_env(flwr_home: Path) -> dict[str, str]:
    """This environment, with Flower's commands of this Python first on PATH (the SuperLink starts
    ``flower-superexec`` and ``flwr-simulation`` by name) and a FLWR_HOME of the run's own."""
    env = dict(os.environ)
    # Ray's: every site's lines in the run's log, not folded into "repeated N times"; and the
    # GPU variable left as set when a ClientApp is given no GPU. The caller may set others.
    env.setdefault("RAY_DEDUP_LOGS", "0")
    env.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
            # SuperExec looks for the submitted run every second by default.
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
        }
    )
    return env


def _healthy(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/health", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop_tree(proc: subprocess.Popen[Any], also: Sequence[psutil.Process] = ()) -> None:
    """Stop ``proc`` and everything it started (SuperExec, the simulation process, Ray), and the
    processes ``also`` names: Flower starts them in sessions of their own, so a process group
    would miss them. All are asked at once, then whatever is left after the grace period is
    killed."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    tree += [p for p in also if p not in tree]
    for member in reversed(tree):  # the deepest first: nothing is restarted on its way out
        with contextlib.suppress(psutil.Error):
            member.terminate()
    _, alive = psutil.wait_procs(tree, timeout=STOP_GRACE_S)
    for member in alive:
        with contextlib.suppress(psutil.Error):
            member.kill()
    psutil.wait_procs(alive, timeout=STOP_GRACE_S)
    proc.wait(timeout=10)


@dataclass(frozen=True)
class SuperLinkHandle:
    """The simulation's SuperLink: where it listens, and its process."""

    address: str
    proc: subprocess.Popen[Any]
    # Workers asked to end early: once their parent is gone they are no longer in the
    # SuperLink's tree, so the stop waits for them (and kills them) by name.
    released: list[psutil.Process] = field(default_factory=list)

    def release_workers(self) -> None:
        """Ask SuperExec and the simulation process to end, without waiting: once a run has
        ended they have nothing left to do, and only the SuperLink answers for its status."""
        with contextlib.suppress(psutil.Error):
            self.released.extend(psutil.Process(self.proc.pid).children(recursive=True))
        for worker in self.released:
            with contextlib.suppress(psutil.Error):
                worker.terminate()


class _PortTaken(Exception):
    """The SuperLink ended at start: most likely another process took the port in between."""


def _start_superlink(
    env: dict[str, str], output: IO[str] | None, port: int
) -> subprocess.Popen[Any]:
    """``flower-superlink`` on ``port``, once it answers its health check (and is the one that
    answers: a process that ended meanwhile never is)."""
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "flower-superlink"),
            "--insecure",
            "--simulation",
            "--disable-runtime-dependency-installation",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )
    deadline = time.monotonic() + SUPERLINK_START_S
    try:
        while not (_healthy(f"{LOOPBACK}:{port}") and proc.poll() is None):
            if proc.poll() is not None:
                raise _PortTaken(proc.returncode)
            if time.monotonic() > deadline:
                raise SimulationEngineError(
                    f"the simulation's SuperLink did not answer on {LOOPBACK}:{port} within "
                    f"{SUPERLINK_START_S:g} s"
                )
            time.sleep(0.1)
    except BaseException:
        stop_tree(proc)
        raise
    return proc


@contextmanager
def simulation_superlink(env: dict[str, str], output: IO[str] | None) -> Iterator[SuperLinkHandle]:
    """A SuperLink in simulation mode on a free loopback port, its output to ``output`` (None:
    the console); yields it and stops it, and all it started, on the way out. A port
    taken between choosing it and binding it is chosen again, up to ``START_TRIES`` times."""
    for attempt in range(1, START_TRIES + 1):
        port = free_port()
        try:
            proc = _start_superlink(env, output, port)
            break
        except _PortTaken as exc:
            if attempt == START_TRIES:
                raise SimulationEngineError(
                    f"the simulation's SuperLink ended at start with exit code {exc.args[0]}, "
                    f"on {START_TRIES} port(s) in turn (the last {port}); its output is in the "
                    "run's log"
                ) from None
    handle = SuperLinkHandle(f"{LOOPBACK}:{port}", proc)
    try:
        yield handle
    finally:
        stop_tree(proc, also=handle.released)


def write_connection(flwr_home: Path, address: str) -> None:
    """A FLWR_HOME whose one SuperLink connection is the simulation's SuperLink."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "{address}"\ninsecure = true\n',
        encoding="utf-8",
    )


def federation_config(n_sites: int, cpus: int, verbose: bool) -> str:
    """One simulated SuperNode per site, each ClientApp on one CPU and no GPU, Ray quiet."""
    return " ".join(
        [
            f"num-supernodes={n_sites}",
            "client-resources-num-cpus=1",
            "client-resources-num-gpus=0.0",
            f"init-args-num-cpus={cpus}",
            'init-args-logging-level="error"',
            f"verbose={'true' if verbose else 'false'}",
        ]
    )


def run_status(
    flwr: str, env: dict[str, str], run_id: str, connection: str = CONNECTION
) -> tuple[str, str]:
    """The run's status and its details, as `flwr ls` reports them ("" when it cannot say)."""
    done = subprocess.run(
        [flwr, "ls", connection, "--run-id", run_id, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        runs = json.loads(done.stdout)["runs"]
    except (ValueError, KeyError, TypeError):
        return "", ""
    for run in runs:
        if str(run.get("run-id")) == run_id:
            return str(run.get("status", "")), str(run.get("status-details", ""))
    return "", ""


def run_app(
    app_dir: Path,
    values: Mapping[str, str | int | float | bool],
    *,
    n_sites: int,
    flwr_home: Path,
    output: IO[str] | None,
    echo: Callable[[str], object],
    verbose: bool,
) -> FinishedRun:
    """`flwr run APP_DIR` on a SuperLink of its own; returns once the run has ended."""
    env = engine_env(flwr_home)
    flwr = find_flwr()
    overrides = flwr_home / "run-config.toml"
    flwr_home.mkdir(parents=True, exist_ok=True)
    overrides.write_text(toml_assignments(values), encoding="utf-8")
    cpus = max(1, os.cpu_count() or 1)
    with simulation_superlink(env, output) as superlink:
        write_connection(flwr_home, superlink.address)
        cmd = [
            flwr,
            "run",
            str(app_dir),
            CONNECTION,
            "--stream",
            "--run-config",
            str(overrides),
            "--federation-config",
            federation_config(n_sites, cpus, verbose),
        ]
        submitted = FlwrRun(cmd, env=env, echo=echo)
        code = submitted.wait()
        if submitted.run_id is None:
            raise SimulationEngineError(
                f"`flwr run` did not start the simulation (exit code {code}): "
                f"{flwr_message(list(submitted.lines))}"
            )
        superlink.release_workers()  # they end while `flwr ls` asks the SuperLink
        status, details = run_status(flwr, env, submitted.run_id)
    return FinishedRun(submitted.run_id, status, details)
