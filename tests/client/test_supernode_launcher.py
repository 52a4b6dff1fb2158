"""fedward-supernode's zygote and its flwr-clientapp stand-in, with Flower's real entry point.

A deployment through the launcher is in tests/e2e/test_deployment.py and test_secure_topology.py;
here the mechanics: arguments and streams reach Flower's ``flwr-clientapp``, its exit status comes
back, children draw fresh randomness, and a dead zygote falls back to Flower's own command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedward.client.supernode_launcher import CLIENTAPP_COMMAND, _split_args

DRIVER = textwrap.dedent(
    """
    import sys, signal
    from pathlib import Path
    from fedward.client.supernode_launcher import real_clientapp, start_zygote
    pid = start_zygote(Path(sys.argv[1]), real_clientapp())
    print(pid, flush=True)
    signal.pause()
    """
)


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert driver.stdout is not None
    zygote_pid = int(driver.stdout.readline())
    try:
        yield driver, zygote_pid, tmp_path / CLIENTAPP_COMMAND
    finally:
        for pid in (driver.pid, zygote_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        driver.wait(timeout=10)


def stand_in(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(path), *args], capture_output=True, text=True, timeout=180, check=False
    )


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_forked_clientapp_runs_flowers_entry_point_with_the_callers_streams(
    zygote: tuple[subprocess.Popen[str], int, Path],
) -> None:
    _, zygote_pid, path = zygote
    ok = stand_in(path, "--help")
    assert ok.returncode == 0, ok.stderr
    assert "Run a Flower ClientApp" in ok.stdout  # Flower's own parser, on the stand-in's stdout
    bad = stand_in(path, "--no-such-flag")
    assert bad.returncode == 2
    assert "flwr-clientapp: error: one of the arguments --token --token-file is required" in (
        bad.stderr
    )
    # Forked, not started: the stand-in never imported Flower, and the zygote still serves.
    again = stand_in(path, "--help")
    assert again.returncode == 0 and not gone(zygote_pid, 0.2)


def test_without_its_zygote_the_stand_in_runs_flowers_own_command(
    zygote: tuple[subprocess.Popen[str], int, Path],
) -> None:
    driver, zygote_pid, path = zygote
    assert stand_in(path, "--help").returncode == 0  # served by the zygote, so it has preloaded
    driver.kill()
    driver.wait(timeout=10)
    assert gone(zygote_pid, 10), "the zygote outlived the launcher"
    fallback = stand_in(path, "--help")
    assert fallback.returncode == 0, fallback.stderr
    assert "Run a Flower ClientApp" in fallback.stdout


def test_each_forked_child_draws_fresh_randomness() -> None:
    code = textwrap.dedent(
        """
        import os, random, numpy as np, torch
        from fedward.client.supernode_launcher import _reseed
        torch.manual_seed(0); np.random.seed(0); random.seed(0)
        draws = []
        for _ in range(2):
            r, w = os.pipe()
            if os.fork() == 0:
                _reseed()
                os.write(w, repr((torch.rand(1).item(), np.random.rand(), random.random())).encode())
                os._exit(0)
            os.close(w)
            draws.append(os.read(r, 1000).decode())
            os.wait()
        print(draws[0] != draws[1] and all(d != repr((0.4962565898895264,)) for d in draws))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


@pytest.mark.parametrize(
    ("argv", "env", "shortcuts", "rest"),
    [
        (["--", "--insecure"], {}, False, ["--insecure"]),
        (["--flower-shortcuts", "--", "--insecure"], {}, True, ["--insecure"]),
        (["--insecure", "--superlink", "x:1"], {}, False, ["--insecure", "--superlink", "x:1"]),
        (["--", "--insecure"], {"FEDWARD_FLOWER_SHORTCUTS": "1"}, True, ["--insecure"]),
        (["--no-flower-shortcuts"], {"FEDWARD_FLOWER_SHORTCUTS": "1"}, False, []),
    ],
)
def test_launcher_arguments(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    shortcuts: bool,
    rest: list[str],
) -> None:
    monkeypatch.delenv("FEDWARD_FLOWER_SHORTCUTS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert _split_args(argv) == (shortcuts, rest)


# Restarts: a refused activation is retried, a stale node released (real processes in
# tests/e2e/test_site_restart.py).


def _refusal(code: int = 2004, status: int = 412) -> Exception:
    import httpx

    request = httpx.Request("POST", "https://superlink/v1/fleet/activate-node")
    response = httpx.Response(
        status, request=request, json={"code": code, "detail": "Failed to activate SuperNode."}
    )
    return httpx.HTTPStatusError("refused", request=request, response=response)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_only_the_superlinks_activation_refusal_is_recognised() -> None:
    from fedward.client.supernode_launcher import is_activation_refusal

    assert is_activation_refusal(_refusal())
    assert not is_activation_refusal(_refusal(code=2005))
    assert not is_activation_refusal(_refusal(status=401))
    assert not is_activation_refusal(ConnectionError("down"))


def test_a_refused_activation_is_retried_with_backoff_until_it_succeeds() -> None:
    from fedward.client.supernode_launcher import retry_activation

    clock, answers = _Clock(), [_refusal()] * 5 + ["activated"]

    def activate(request: str) -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return f"{answer} {request}"

    got = retry_activation(activate, "node", wait_s=120, sleep=clock.sleep, clock=clock.time)
    assert got == "activated node"
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_retries_stop_at_the_wait_and_other_errors_are_not_retried() -> None:
    from fedward.client.supernode_launcher import retry_activation

    clock = _Clock()

    def refused(request: str) -> str:
        raise _refusal()

    with pytest.raises(Exception, match="refused"):
        retry_activation(refused, "node", wait_s=20, sleep=clock.sleep, clock=clock.time)
    assert sum(clock.sleeps) == pytest.approx(20.0) and max(clock.sleeps) == 8.0

    clock = _Clock()

    def down(request: str) -> str:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        retry_activation(down, "node", wait_s=120, sleep=clock.sleep, clock=clock.time)
    assert clock.sleeps == []
    with pytest.raises(Exception, match="refused"):
        retry_activation(refused, "node", wait_s=0, sleep=clock.sleep, clock=clock.time)
    assert clock.sleeps == []


def test_the_recorded_node_is_released_before_activation(tmp_path: Path) -> None:
    from fedward.client.supernode_launcher import (
        read_node_id,
        release_stale_node,
        write_node_id,
    )

    record = tmp_path / "state" / ".supernode-node-id"
    asked: list[int] = []

    def deactivate(request: object) -> None:
        asked.append(int(request.node_id))  # type: ignore[attr-defined]

    assert release_stale_node(deactivate, record) is None and asked == []  # nothing recorded
    write_node_id(record, 7269)
    assert read_node_id(record) == 7269 and oct(record.parent.stat().st_mode & 0o777) == "0o700"
    assert release_stale_node(deactivate, record) == "released" and asked == [7269]

    def already_offline(request: object) -> None:
        raise _refusal(code=2005)  # a clean stop deactivated it

    def unregistered(request: object) -> None:
        raise _refusal(code=0, status=401)  # the key no longer belongs to that node

    assert release_stale_node(already_offline, record) == "not-online"
    assert release_stale_node(unregistered, record) == "not-this-key"
    record.write_text("not a number")
    assert read_node_id(record) is None


def test_a_key_no_longer_tied_to_its_node_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a revoked key's release is refused (401), a refused activation exits at once."""
    from fedward.client import supernode_launcher as launcher
    from fedward.common.flower_compat import fleet_http_client

    FleetHttpClient: Any = fleet_http_client()  # a class whose methods the test patches
    assert FleetHttpClient is not None

    record = tmp_path / ".supernode-node-id"
    launcher.write_node_id(record, 42)
    calls: list[str] = []

    def activate(self: object, request: object) -> object:
        calls.append("activate")
        raise _refusal()

    def deactivate(self: object, request: object) -> object:
        calls.append("deactivate")
        raise _refusal(code=0, status=401)

    monkeypatch.setattr(FleetHttpClient, "ActivateNode", activate)
    monkeypatch.setattr(FleetHttpClient, "DeactivateNode", deactivate)
    monkeypatch.setattr(launcher.time, "sleep", lambda s: pytest.fail("waited for a revoked key"))
    assert launcher.install_activation_retry(120.0, record)
    client = FleetHttpClient.__new__(FleetHttpClient)
    with pytest.raises(Exception, match="refused"):
        client.ActivateNode(object())
    assert calls == ["deactivate", "activate"]


def test_the_activation_wait_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedward.client.supernode_launcher import ACTIVATION_WAIT_ENV, activation_wait

    monkeypatch.delenv(ACTIVATION_WAIT_ENV, raising=False)
    assert activation_wait() == 120.0
    monkeypatch.setenv(ACTIVATION_WAIT_ENV, "0")
    assert activation_wait() == 0.0
    monkeypatch.setenv(ACTIVATION_WAIT_ENV, "soon")
    with pytest.raises(SystemExit, match="FEDWARD_ACTIVATION_WAIT_S"):
        activation_wait()
