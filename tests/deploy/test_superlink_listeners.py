"""deploy/superlink_listeners.py: the published listener lets the Fleet API through and nothing else,
and the launcher exits non-zero, instead of serving half, when one of its ports is taken."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import sys
from collections.abc import MutableMapping
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.conftest import REPO
from tests.e2e.processes import flower_env, free_port

LAUNCHER = REPO / "deploy" / "superlink_listeners.py"


def _launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("superlink_listeners", LAUNCHER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call(path: str) -> tuple[int, bool]:
    """(status, whether the wrapped app was reached) for one HTTP request to ``path``."""
    reached = False
    sent: list[MutableMapping[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached
        reached = True
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    wrapped = _launcher().FleetOnly(app)
    asyncio.run(wrapped({"type": "http", "path": path, "method": "POST"}, receive, send))
    return int(sent[0]["status"]), reached


@pytest.mark.parametrize("path", ["/v1/fleet/pull-messages", "/v1/fleet/activate-node"])
def test_the_fleet_api_passes(path: str) -> None:
    assert _call(path) == (200, True)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/control/register-node",
        "/v1/control/list-nodes",
        "/v1/control/unregister-node",
        "/v1/control/stop-run",
        "/v1/runtime/pull-messages",
        "/v1/fleet",  # not under the prefix
        "/docs",
        "/openapi.json",
        "/health",
    ],
)
def test_everything_else_is_not_served(path: str) -> None:
    assert _call(path) == (404, False)


@pytest.mark.slow
def test_a_taken_port_stops_the_launcher_with_an_error(tmp_path: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run(
            [
                sys.executable,
                str(LAUNCHER),
                "--fleet-host",
                "127.0.0.1",
                "--fleet-port",
                str(taken.getsockname()[1]),
                "--",
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--disable-runtime-dependency-installation",
            ],
            env=flower_env(tmp_path / "flwr"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1, done.stderr
