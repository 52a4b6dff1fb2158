"""Start real Flower processes on loopback for end-to-end tests, and stop every one of them by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fedward.server.simulation_engine import free_port

BIN = Path(sys.executable).parent


def flower_env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            # A SuperLink's SuperExec looks for a submitted run every second by default; `fedward
            # simulate` sets the same (fedward.server.simulation_engine.engine_env).
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
        }
    )
    return env


class ProcessGroup:
    """Processes started in their own sessions, so that stopping one stops its children too."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        fh = log.open("wb")
        proc = subprocess.Popen(
            args, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # children of a stopped leader, too
            if proc.poll() is None:
                proc.wait(timeout=10)


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


FAST_SUPERNODE = [str(BIN / "fedward-supernode"), "--flower-shortcuts", "--"]
STOCK_SUPERNODE = [str(BIN / "flower-supernode")]


def connection_home(tmp: Path, name: str, port: int) -> tuple[Path, dict[str, str]]:
    """A FLWR_HOME whose config.toml names an insecure loopback SuperLink, and its environment."""
    home = tmp / "flwr_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    return home, flower_env(home)


def start_superlink(
    group: ProcessGroup, env: dict[str, str], port: int, tmp: Path, *, certs: Path | None = None
) -> subprocess.Popen[bytes]:
    """A loopback SuperLink with its state in ``tmp/superlink.db``, listening once this returns:
    without TLS, or with ``certs``' CA, certificate and key and SuperNode authentication."""
    security = (
        ["--insecure"]
        if certs is None
        else [
            "--ssl-ca-certfile",
            str(certs / "ca.pem"),
            "--ssl-certfile",
            str(certs / "superlink.pem"),
            "--ssl-keyfile",
            str(certs / "superlink.key"),
            "--enable-supernode-auth",
        ]
    )
    link = group.start(
        [
            str(BIN / "flower-superlink"),
            *security,
            "--disable-runtime-dependency-installation",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            str(tmp / "superlink.db"),
        ],
        env=env,
        log=tmp / "superlink.log",
    )
    wait_for_port(port)
    return link


def start_insecure_federation(
    group: ProcessGroup,
    tmp: Path,
    env: dict[str, str],
    port: int,
    site_configs: list[Path],
    supernode: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """A loopback SuperLink (state in ``tmp/superlink.db``) and one SuperNode per site config,
    started as the site image starts them (the fast path) unless ``supernode`` says otherwise."""
    link = start_superlink(group, env, port, tmp)
    for i, cfg in enumerate(site_configs):
        start_supernode(group, env, port, cfg, log=tmp / f"supernode-{i}.log", supernode=supernode)
    return link


def start_supernode(
    group: ProcessGroup,
    env: dict[str, str],
    port: int,
    site_config: Path,
    *,
    log: Path,
    supernode: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """One insecure SuperNode for the site ``site_config`` against the loopback SuperLink."""
    return group.start(
        [
            *(supernode or FAST_SUPERNODE),
            "--insecure",
            "--superlink",
            f"127.0.0.1:{port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--node-config",
            f"site-config='{site_config}'",
        ],
        env=env,
        log=log,
    )


def tls_connection_home(home: Path, name: str, address: str, ca: Path | None) -> dict[str, str]:
    """A FLWR_HOME at ``home`` whose config.toml names one SuperLink connection: over TLS verified
    against ``ca``, or insecure when ``ca`` is None. Returns its environment."""
    home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{ca}"' if ca is not None else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
        f'address = "{address}"\n{security}\n'
    )
    return flower_env(home)


def flwr(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The `flwr` CLI as an operator or an outsider types it; the caller judges the outcome."""
    return subprocess.run(
        [str(BIN / "flwr"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls ``predicate`` every half second; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not after {timeout} s")
