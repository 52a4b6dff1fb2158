"""The closed control plane, with real processes on loopback started by the images' entrypoints.

A site holds ca.pem and can reach the SuperLink's published (Fleet) port. From there, with the `flwr`
CLI, an outsider tries what the Control API allows: register a key of their own, list nodes and
runs, unregister a site, stop a run. Each attempt is refused, pointed at the Fleet port (which
serves /v1/fleet/ only) or at the Control port (whose certificate comes from a CA the sites never
receive), and nothing changes in the SuperLink. The operator's `flwr`, configured by the coordinator
entrypoint inside the coordinator, still registers, lists and unregisters. Where this machine has a
non-loopback address, the Control port is shown unreachable on it while the Fleet port answers.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from fedward.common.datasets.bundled import write_site_files
from tests.e2e.processes import (
    ProcessGroup,
    flower_env,
    flwr,
    free_port,
    tls_connection_home,
    wait_for_port,
    wait_until,
)

# Part of the security suite (`pytest -m security`): real processes, an attacker's moves.
pytestmark = [pytest.mark.slow, pytest.mark.security]
REPO = Path(__file__).resolve().parents[2]
FEDERATION = "fedward"


def _outside_address() -> str | None:
    """This machine's address on a non-loopback interface, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _reachable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


def _node_status(listing: str, node_id: int) -> str | None:
    for line in listing.splitlines():
        if str(node_id) in line:
            for status in ("online", "offline", "registered", "unregistered"):
                if status in line:
                    return status
    return None


def test_an_outsider_with_the_sites_ca_cannot_steer_the_superlink_the_operator_can(
    tmp_path: Path,
) -> None:
    certs = tmp_path / "certs"
    subprocess.run(
        [
            "bash",
            str(REPO / "deploy" / "make-certs.sh"),
            str(certs),
            "--sites",
            "cleveland,intruder",
        ],
        check=True,
        capture_output=True,
    )
    (site_config,) = [
        p
        for p in write_site_files("heart-disease", tmp_path / "sites")
        if p.parent.name == "cleveland"
    ]
    outside = _outside_address()
    fleet_port, control_port = free_port(), free_port()
    operator_home = tmp_path / "operator"
    operator = flower_env(operator_home)
    coordinator_env = {
        **operator,
        "FEDWARD_STATE_DIR": str(tmp_path / "coordinator"),
        # The published port on every interface, as in the image; the Control port as shipped.
        "FEDWARD_SUPERLINK_HOST": "0.0.0.0" if outside else "127.0.0.1",
        "FEDWARD_SUPERLINK_PORT": str(fleet_port),
        "FEDWARD_CONTROL_PORT": str(control_port),
        "FEDWARD_SSL_CERT": str(certs / "superlink.pem"),
        "FEDWARD_SSL_KEY": str(certs / "superlink.key"),
        "FEDWARD_CONTROL_CA_CERT": str(certs / "control-ca.pem"),
        "FEDWARD_CONTROL_CERT": str(certs / "control.pem"),
        "FEDWARD_CONTROL_KEY": str(certs / "control.key"),
        "FEDWARD_METRICS": "0",
    }
    group = ProcessGroup()
    try:
        coordinator = group.start(
            ["bash", str(REPO / "deploy" / "coordinator-entrypoint.sh"), "superlink"],
            env=coordinator_env,
            log=tmp_path / "coordinator.log",
        )
        wait_for_port(control_port, timeout=60)
        wait_for_port(fleet_port, timeout=60)

        # The operator's path: the connection the entrypoint wrote, to the Control listener.
        said = flwr(
            ["supernode", "register", str(certs / "keys" / "cleveland.pub"), FEDERATION], operator
        )
        assert said.returncode == 0, said.stdout + said.stderr
        match = re.search(r"SuperNode (\d+) registered", said.stdout)
        assert match, said.stdout
        node_id = int(match.group(1))
        group.start(
            ["bash", str(REPO / "deploy" / "site-entrypoint.sh"), "supernode"],
            env={
                **flower_env(tmp_path / "site-home"),
                "FEDWARD_SITE_CONFIG": str(site_config),
                "FEDWARD_SUPERLINK": f"127.0.0.1:{fleet_port}",
                "FEDWARD_CA_CERT": str(certs / "ca.pem"),
                "FEDWARD_NODE_KEY": str(certs / "keys" / "cleveland"),
                "FEDWARD_SUPERNODE_PORT": str(free_port()),
                "FEDWARD_FAST_PATH": "0",
                "FEDWARD_METRICS": "0",
            },
            log=tmp_path / "site.log",
        )

        def listing() -> str:
            done = flwr(["supernode", "list", FEDERATION], operator)
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        wait_until(lambda: _node_status(listing(), node_id) == "online", 60, "the site online")

        # The outsider's vantage: ca.pem only, at each port a site can name.
        vantages = {
            "fleet": tls_connection_home(
                tmp_path / "out-fleet", FEDERATION, f"127.0.0.1:{fleet_port}", certs / "ca.pem"
            ),
            "control": tls_connection_home(
                tmp_path / "out-control", FEDERATION, f"127.0.0.1:{control_port}", certs / "ca.pem"
            ),
        }
        attempts = {
            "register": ["supernode", "register", str(certs / "keys" / "intruder.pub"), FEDERATION],
            "list nodes": ["supernode", "list", FEDERATION],
            "list runs": ["list", FEDERATION],
            "unregister": ["supernode", "unregister", str(node_id), FEDERATION],
            "stop": ["stop", "1", FEDERATION],
        }
        for where, env in vantages.items():
            for what, args in attempts.items():
                done = flwr(args, env)
                text = done.stdout + done.stderr
                assert done.returncode != 0, f"{what} via the {where} port succeeded: {text}"
                # Refused by the listener or the TLS handshake, never by an API that answered.
                if where == "fleet":
                    assert "not served on this listener" in text, (what, text)
                else:
                    assert "unavailable" in text.lower(), (what, text)

        # Nothing changed: one node, still online; the intruder's key is unknown.
        nodes = listing()
        assert _node_status(nodes, node_id) == "online", nodes
        assert len(re.findall(r"│\s*\d{6,}\s*│", nodes)) == 1, nodes

        if outside:
            assert _reachable(outside, fleet_port)
            assert not _reachable(outside, control_port), "the Control port listens off loopback"

        # The operator's path still reaches the API (its answer is about the run, not the caller).
        stop = flwr(["stop", "1", FEDERATION], operator)
        assert "unavailable" not in (stop.stdout + stop.stderr).lower(), stop.stdout + stop.stderr
        gone = flwr(["supernode", "unregister", str(node_id), FEDERATION], operator)
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert _node_status(listing(), node_id) in (None, "unregistered")
        coordinator.send_signal(signal.SIGTERM)  # both listeners stop; the container exits cleanly
        assert coordinator.wait(timeout=30) == 0
    finally:
        group.stop()
