"""The images' entrypoints. Insecure mode, and a site whose metrics process dies, run the real
SuperLink, SuperNode and metrics on loopback (free ports, stopped by pid); the secure topology's
real processes are in tests/e2e/test_control_plane.py and test_secure_topology.py. The remaining
tests give the site and HE entrypoints stand-ins for flower-supernode and fedward that record their
arguments, because they check exactly which flags each process gets and the errors that stop a
container before anything starts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedward.common.datasets.bundled import write_site_files
from tests.deploy.conftest import REPO
from tests.e2e.processes import (
    ProcessGroup,
    flower_env,
    flwr,
    free_port,
    wait_for_port,
    wait_until,
)

SITE_ENTRYPOINT = REPO / "deploy" / "site-entrypoint.sh"
COORDINATOR_ENTRYPOINT = REPO / "deploy" / "coordinator-entrypoint.sh"

# Records its arguments (one a line) as <command>[-<sub>-<subsub>].<pid>.args, then runs until SIGTERM;
# `fedward config check` succeeds at once.
STUB = r"""#!/usr/bin/env bash
key=$(basename "$0")
if [ "$key" = fedward ]; then key="$key-$1-$2"; fi
printf '%s\n' "$@" > "$STUB_LOG/$key.$$.args"
[ "$key" = fedward-config-check ] && exit 0
trap 'touch "$STUB_LOG/$key.$$.stopped"; exit 0' TERM
touch "$STUB_LOG/$key.$$.ready"
while :; do sleep 0.05; done
"""


@dataclass
class Started:
    proc: subprocess.Popen[str]
    log: Path

    def args(self, key: str) -> list[str]:
        (found,) = self.log.glob(f"{key}.*.args")
        return found.read_text().splitlines()

    def wait_ready(self, *keys: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(list(self.log.glob(f"{k}.*.ready")) for k in keys):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"entrypoint exited {self.proc.returncode}: {self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"not started after {timeout} s: {keys}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def stopped(self, key: str) -> bool:
        return bool(list(self.log.glob(f"{key}.*.stopped")))

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read()


@pytest.fixture
def run_entrypoint(tmp_path: Path) -> Iterator:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("fedward-supernode", "flower-supernode", "flower-superlink", "fedward"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log"
    log.mkdir()
    started: list[Started] = []

    def start(script: Path, env: dict[str, str], *args: str) -> Started:
        full = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path / "home"),
            "STUB_LOG": str(log),
            **env,
        }
        proc = subprocess.Popen(
            ["bash", str(script), *args], env=full, stderr=subprocess.PIPE, text=True
        )
        started.append(Started(proc, log))
        return started[-1]

    yield start
    for s in started:  # only what this test started, by pid
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(timeout=10)
    for ready in log.glob("*.ready"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(ready.name.split(".")[-2]), signal.SIGKILL)


def files(tmp_path: Path, *names: str) -> dict[str, Path]:
    out = {}
    for name in names:
        path = tmp_path / "mnt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        out[name] = path
    return out


def site_env(tmp_path: Path) -> dict[str, str]:
    f = files(tmp_path, "site.toml", "ca.pem", "node")
    return {
        "FEDWARD_SITE_CONFIG": str(f["site.toml"]),
        "FEDWARD_CA_CERT": str(f["ca.pem"]),
        "FEDWARD_NODE_KEY": str(f["node"]),
    }


def coordinator_env(tmp_path: Path) -> dict[str, str]:
    f = files(tmp_path, "ca.pem", "superlink.pem", "superlink.key")
    return {
        "FEDWARD_STATE_DIR": str(tmp_path / "state"),
        "FEDWARD_SSL_CA_CERT": str(f["ca.pem"]),
        "FEDWARD_SSL_CERT": str(f["superlink.pem"]),
        "FEDWARD_SSL_KEY": str(f["superlink.key"]),
        "FLWR_HOME": str(tmp_path / "flwr"),
    }


# The site image starts its SuperNode through fedward's launcher by default (the fast path).
NODE = "fedward-supernode"


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_site_starts_supernode_with_tls_node_auth_and_site_config(
    run_entrypoint, tmp_path: Path
) -> None:
    env = site_env(tmp_path)
    site = run_entrypoint(SITE_ENTRYPOINT, env)
    site.wait_ready(NODE, "fedward-site-metrics")
    node = site.args(NODE)
    assert flag(node, "--superlink") == "superlink:8000"
    assert flag(node, "--root-certificates") == env["FEDWARD_CA_CERT"]
    assert flag(node, "--auth-supernode-private-key") == env["FEDWARD_NODE_KEY"]
    assert flag(node, "--node-config") == f"site-config='{env['FEDWARD_SITE_CONFIG']}'"
    assert "--insecure" not in node
    assert node[:2] == ["--flower-shortcuts", "--"]  # the launcher's own flags, then Flower's
    metrics = site.args("fedward-site-metrics")
    assert flag(metrics, "--site-config") == env["FEDWARD_SITE_CONFIG"]
    assert (flag(metrics, "--host"), flag(metrics, "--port")) == ("0.0.0.0", "9101")
    assert site.args("fedward-config-check")[2:] == [env["FEDWARD_SITE_CONFIG"], "--kind", "site"]


@pytest.mark.parametrize(
    ("env", "command", "head"),
    [
        ({"FEDWARD_FLOWER_SHORTCUTS": "0"}, NODE, ["--no-flower-shortcuts", "--"]),
        ({"FEDWARD_FAST_PATH": "0"}, "flower-supernode", ["--superlink"]),
    ],
)
def test_site_fast_path_and_shortcuts_can_be_turned_off(
    run_entrypoint, tmp_path: Path, env: dict[str, str], command: str, head: list[str]
) -> None:
    site = run_entrypoint(SITE_ENTRYPOINT, {**site_env(tmp_path), **env})
    site.wait_ready(command)
    node = site.args(command)
    assert node[: len(head)] == head
    assert flag(node, "--auth-supernode-private-key")
    assert site.stop() == 0


def test_sigterm_stops_the_supernode_and_the_metrics(run_entrypoint, tmp_path: Path) -> None:
    site = run_entrypoint(SITE_ENTRYPOINT, site_env(tmp_path))
    site.wait_ready(NODE, "fedward-site-metrics")
    assert site.stop() == 0
    assert site.stopped(NODE) and site.stopped("fedward-site-metrics")


def test_site_refuses_to_start_without_its_ca_naming_the_file(
    run_entrypoint, tmp_path: Path
) -> None:
    env = site_env(tmp_path)
    Path(env["FEDWARD_CA_CERT"]).unlink()
    site = run_entrypoint(SITE_ENTRYPOINT, env)
    assert site.proc.wait(timeout=20) == 2
    assert env["FEDWARD_CA_CERT"] in site.stderr()
    assert not list(site.log.glob("flower-supernode.*"))


def test_site_says_when_a_mounted_file_arrived_as_a_folder(run_entrypoint, tmp_path: Path) -> None:
    env = site_env(tmp_path)
    Path(env["FEDWARD_NODE_KEY"]).unlink()
    Path(env["FEDWARD_NODE_KEY"]).mkdir()  # what Docker makes of a missing bind-mounted file
    site = run_entrypoint(SITE_ENTRYPOINT, env)
    assert site.proc.wait(timeout=20) == 2
    assert "is a folder, not a file" in site.stderr()


def test_site_entrypoint_runs_other_commands_as_given(run_entrypoint, tmp_path: Path) -> None:
    done = run_entrypoint(SITE_ENTRYPOINT, {}, "bash", "-c", "echo ran >&2")
    assert done.proc.wait(timeout=20) == 0
    assert done.stderr().strip() == "ran"


def he_env(tmp_path: Path) -> dict[str, str]:
    f = files(tmp_path, "he.pem", "he.key", "clients.toml")
    return {
        "FEDWARD_HE_MODEL": str(tmp_path / "release"),
        "FEDWARD_HE_CERT": str(f["he.pem"]),
        "FEDWARD_HE_KEY": str(f["he.key"]),
        "FEDWARD_HE_CLIENTS": str(f["clients.toml"]),
        "FEDWARD_HE_STATE": str(tmp_path / "he-state"),
    }


def test_he_waits_for_a_release_and_stops_on_sigterm(run_entrypoint, tmp_path: Path) -> None:
    he = run_entrypoint(COORDINATOR_ENTRYPOINT, he_env(tmp_path), "he")
    time.sleep(0.5)
    assert he.proc.poll() is None and not list(he.log.glob("fedward-he-serve.*"))
    assert he.stop() == 0
    assert f"waiting for a release at {tmp_path / 'release'}" in he.stderr()


def test_he_serves_the_release_with_tls_tokens_state_and_metrics(
    run_entrypoint, tmp_path: Path
) -> None:
    env = he_env(tmp_path)
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "MANIFEST.json").write_text("{}")
    he = run_entrypoint(COORDINATOR_ENTRYPOINT, env, "he")
    he.wait_ready("fedward-he-serve")
    serve = he.args("fedward-he-serve")
    assert flag(serve, "--model") == env["FEDWARD_HE_MODEL"]
    assert flag(serve, "--listen") == "0.0.0.0:50051"
    assert flag(serve, "--tls-cert") == env["FEDWARD_HE_CERT"]
    assert flag(serve, "--tls-key") == env["FEDWARD_HE_KEY"]
    assert flag(serve, "--clients") == env["FEDWARD_HE_CLIENTS"]
    assert flag(serve, "--state") == env["FEDWARD_HE_STATE"]
    assert (flag(serve, "--metrics-host"), flag(serve, "--metrics-port")) == ("0.0.0.0", "9103")
    assert "--insecure" not in serve and "--no-auth" not in serve
    assert he.stop() == 0
    assert he.stopped("fedward-he-serve")


def _listing(env: dict[str, str]) -> str:
    done = flwr(["supernode", "list", "fedward"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.security
def test_insecure_mode_runs_the_real_superlink_and_supernode_without_node_auth_and_says_so(
    tmp_path: Path,
) -> None:
    """FEDWARD_INSECURE=1 on both sides: no TLS, no node authentication (Flower's needs TLS), so a
    site joins without any registration; both entrypoints warn; SIGTERM ends each with status 0."""
    (site_config,) = [
        p
        for p in write_site_files("heart-disease", tmp_path / "sites")
        if p.parent.name == "hungary"
    ]
    fleet_port, control_port = free_port(), free_port()
    operator = flower_env(tmp_path / "operator")
    group = ProcessGroup()
    try:
        coordinator = group.start(
            ["bash", str(COORDINATOR_ENTRYPOINT), "superlink"],
            env={
                **operator,
                "FEDWARD_INSECURE": "1",
                "FEDWARD_STATE_DIR": str(tmp_path / "state"),
                "FEDWARD_SUPERLINK_HOST": "127.0.0.1",
                "FEDWARD_SUPERLINK_PORT": str(fleet_port),
                "FEDWARD_CONTROL_PORT": str(control_port),
                "FEDWARD_METRICS": "0",
            },
            log=tmp_path / "coordinator.log",
        )
        wait_for_port(control_port, timeout=60)
        wait_for_port(fleet_port, timeout=60)
        config = tomllib.loads((tmp_path / "operator" / "config.toml").read_text())
        assert config["superlink"]["fedward"] == {
            "address": f"127.0.0.1:{control_port}",
            "insecure": True,
        }
        # Plain HTTP, and the published port still serves the Fleet API only.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{fleet_port}/v1/control/list-nodes", data=b"", method="POST"
                ),
                timeout=10,
            )
        assert refused.value.code == 404
        site = group.start(
            ["bash", str(SITE_ENTRYPOINT), "supernode"],
            env={
                **flower_env(tmp_path / "site-home"),
                "FEDWARD_INSECURE": "1",
                "FEDWARD_SITE_CONFIG": str(site_config),
                "FEDWARD_SUPERLINK": f"127.0.0.1:{fleet_port}",
                "FEDWARD_CA_CERT": str(tmp_path / "absent-ca.pem"),  # neither needed nor read
                "FEDWARD_NODE_KEY": str(tmp_path / "absent-node-key"),
                "FEDWARD_SUPERNODE_PORT": str(free_port()),
                "FEDWARD_FAST_PATH": "0",
                "FEDWARD_METRICS": "0",
            },
            log=tmp_path / "site.log",
        )
        wait_until(lambda: "online" in _listing(operator), 60, "the unregistered site online")
        site.send_signal(signal.SIGTERM)
        assert site.wait(timeout=30) == 0
        coordinator.send_signal(signal.SIGTERM)
        assert coordinator.wait(timeout=30) == 0
    finally:
        group.stop()
    said = (tmp_path / "coordinator.log").read_text()
    assert "WARNING: FEDWARD_INSECURE=1" in said
    assert "SuperNode authentication is OFF" in said
    site_said = (tmp_path / "site.log").read_text()
    assert "WARNING: FEDWARD_INSECURE=1" in site_said
    assert "no node authentication" in site_said


@pytest.mark.slow
def test_a_real_site_whose_metrics_cannot_start_stops_its_supernode_and_fails(
    tmp_path: Path,
) -> None:
    """The real SuperNode and `fedward site metrics`: the metrics port is taken, so that process
    exits; the entrypoint stops the SuperNode and exits non-zero, for the restart policy to see."""
    (site_config,) = [
        p
        for p in write_site_files("heart-disease", tmp_path / "sites")
        if p.parent.name == "switzerland"
    ]
    group = ProcessGroup()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        try:
            site = group.start(
                ["bash", str(SITE_ENTRYPOINT), "supernode"],
                env={
                    **flower_env(tmp_path / "site-home"),
                    "FEDWARD_INSECURE": "1",
                    "FEDWARD_SITE_CONFIG": str(site_config),
                    "FEDWARD_SUPERLINK": f"127.0.0.1:{free_port()}",  # nobody there: it waits
                    "FEDWARD_SUPERNODE_PORT": str(free_port()),
                    "FEDWARD_FAST_PATH": "0",
                    "FEDWARD_METRICS_HOST": "127.0.0.1",
                    "FEDWARD_METRICS_PORT": str(taken.getsockname()[1]),
                },
                log=tmp_path / "site.log",
            )
            status = site.wait(timeout=60)
        finally:
            group.stop()
    said = (tmp_path / "site.log").read_text()
    assert status != 0, said
    assert "a process exited with status" in said and "stopping the others" in said
