"""What `fedward simulate` leaves behind when it is interrupted: no process. The engine starts a
SuperLink, which starts SuperExec, which starts `flwr-simulation`, which starts Ray, each in a
session of its own; a person pressing Ctrl-C must not be left with any of them running. (A failed
run's reason, read from Flower as `fedward simulate` reads it: tests/e2e/test_flwr_run_local.py
and tests/server/test_simulation_engine.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.processes import BIN

pytestmark = pytest.mark.slow


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
