"""`flwr run` as a Flower user types it: Flower's default local simulation (a SuperLink that the
`flwr` command starts on its own), the app's venv active, no fedward command in between.

Flower's default federation has 2 simulated SuperNodes; heart-disease has 4 hospitals. The run
must stop before any site is asked anything, failed, with the one line to change. With that line
the run trains: it is the run `fedward simulate` makes through `flwr run` (the same ServerApp and
ClientApp, `--federation-config "num-supernodes=4"`), which every simulation test exercises.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from fedward.server.simulation_engine import run_status
from tests.e2e.processes import BIN, flower_env, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
THE_LINE = 'flwr run . --stream --federation-config "num-supernodes=4"'


@pytest.fixture(scope="module")
def local_flower(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh FLWR_HOME and ports of its own, so the user's local SuperLink is never touched."""
    tmp = tmp_path_factory.mktemp("flwr-local")
    home = tmp / "flwr-home"
    env = flower_env(home)
    env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] = str(free_port())
    env["FLWR_LOCAL_CONTROL_API_PORT"] = str(free_port())
    yield {"env": env, "cwd": tmp}
    # `flwr run` leaves its local SuperLink running on purpose; stop the one this test started.
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if str(home) in " ".join(proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):  # it may end between listing and kill
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()


def _flwr(
    local: dict[str, Any], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "flwr"), *args],
        cwd=local["cwd"],
        env=local["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _runs(local: dict[str, Any]) -> list[dict[str, Any]]:
    done = _flwr(local, "ls", "--format", "json", timeout=60)
    return list(json.loads(done.stdout)["runs"])


def test_default_two_supernodes_stop_at_once_with_the_line_to_change(
    local_flower: dict[str, Any],
) -> None:
    started = time.monotonic()
    done = _flwr(local_flower, "run", str(ROOT), "--stream")
    elapsed = time.monotonic() - started
    out = done.stdout + done.stderr
    assert "the simulation has 2 SuperNodes but dataset 'heart-disease' has 4 sites" in out, out[
        -3000:
    ]
    assert THE_LINE in out
    assert "Traceback" not in out, out[-3000:]
    assert "ClientAppActor" not in out  # no site was asked anything
    assert elapsed < 90, elapsed
    # `flwr run` only submits the run (and exits 0 after streaming); the run itself failed.
    (run,) = _runs(local_flower)
    assert run["status"] == "finished:failed", run
    assert THE_LINE in run["status-details"]
    # `fedward simulate` reads a failed run's status and Flower's reason the same way.
    flwr = str(BIN / "flwr")
    status, details = run_status(flwr, local_flower["env"], str(run["run-id"]), "local")
    assert status == "finished:failed" and THE_LINE in details
    assert not (local_flower["cwd"] / "runs").exists()
