"""What `fedward simulate` leaves behind when a run fails or is interrupted: Flower's reason, and
no process. The engine starts a SuperLink, which starts SuperExec, which starts `flwr-simulation`,
which starts Ray, each in a session of its own; a person pressing Ctrl-C must not be left with
any of them running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from fedward.server.simulation_engine import run_app
from tests.e2e.processes import BIN

pytestmark = pytest.mark.slow

FAILING_APP = """
from flwr.serverapp import ServerApp

server_app = ServerApp()


@server_app.main()
def _main(grid, context):
    raise ValueError("the coordinator broke on purpose")
"""


def _descendants(pid: int) -> set[psutil.Process]:
    try:
        return set(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return set()


def _commands(procs: set[psutil.Process]) -> str:
    said = []
    for p in procs:
        try:
            said.append(" ".join(p.cmdline()))
        except psutil.Error:
            continue
    return " | ".join(said)


def _still_running(procs: set[psutil.Process], within: float = 10.0) -> list[str]:
    _, alive = psutil.wait_procs(list(procs), timeout=within)
    return [f"{p.pid} {p.cmdline()}" for p in alive if p.is_running()]


def test_a_failing_server_app_is_reported_with_flowers_reason_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "failing.py").write_text(FAILING_APP)
    (app / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "failing"\nversion = "0.1.0"\ndependencies = []\n'
        '[tool.flwr.app]\npublisher = "fedward"\n'
        '[tool.flwr.app.components]\nserverapp = "failing:server_app"\n'
        'clientapp = "fedward.client.app:app"\n'
    )
    seen: set[psutil.Process] = set()
    commands: list[str] = []
    done = threading.Event()

    def sample() -> None:  # the engine's processes, while it runs
        while not done.is_set():
            now = _descendants(os.getpid())
            seen.update(now)
            commands.append(_commands(now))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with (tmp_path / "engine.log").open("w") as log:
            finished = run_app(
                app,
                {},
                n_sites=2,
                flwr_home=tmp_path / "home",
                output=log,
                echo=log.write,
                verbose=False,
            )
    finally:
        done.set()
        sampler.join()
    assert finished.status == "finished:failed", finished
    assert "the coordinator broke on purpose" in finished.details
    ran = " ".join(commands)
    assert "flower-superlink" in ran and "flwr-simulation" in ran, ran[-2000:]
    assert not _still_running(seen), "processes of the engine outlived the run"


def test_ctrl_c_stops_the_simulation_and_every_process_it_started(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    cmd = [str(BIN / "fedward"), "simulate", "--rounds", "30", "--no-baselines", "--no-audit"]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen: set[psutil.Process] = set()
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            seen.update(_descendants(proc.pid))
            progress = list(out.glob("*/progress.jsonl"))
            events = progress[0].read_text().splitlines() if progress else []
            if any(json.loads(e).get("event") == "round-started" for e in events if e):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the federation never started a round: {proc.communicate()[0][-3000:]}")
        seen.update(_descendants(proc.pid))
        commands = _commands(seen)
        assert "flower-superlink" in commands and "flwr-simulation" in commands, commands
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the command
        said, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, said[-3000:]
    assert "interrupted: the simulation was stopped" in said
    assert "Traceback" not in said, said[-3000:]
    assert not _still_running(seen), "processes of the engine outlived the command"
