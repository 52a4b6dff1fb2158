"""A site whose container crashed and restarted at once rejoins by itself, with real processes.

The coordinator entrypoint starts a SuperLink with TLS and node authentication; the operator
registers one site's key; the site entrypoint starts its SuperNode (the image's fast path). The
site's whole process group is then SIGKILLed, as a crashed container is, and started again at once
with the same key. The SuperLink still counts the dead node as online until its heartbeats are
overdue (Flower 1.42: twice the 30 s heartbeat interval), and refuses to activate the key meanwhile
(HTTP 412 "Failed to activate SuperNode"). Before, the SuperNode exited at once and a restart
policy looped for about a minute. Now the launcher recorded the node id in the site's state folder
at the first activation; the restarted one releases that node (a DeactivateNode signed with the
same key) and is activated at once. Its fallback, retrying the refusal with backoff until the
SuperLink lets it (measured at 64 s after the crash with no record), is unit-tested in
tests/client/test_supernode_launcher.py, to keep this test short.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fedward.common.datasets.bundled import write_site_files
from fedward.common.site_config import load_site_config
from tests.e2e.processes import (
    ProcessGroup,
    flower_env,
    flwr,
    free_port,
    wait_for_port,
    wait_until,
)

# Part of the security suite (`pytest -m security`): real processes, an attacker's moves.
pytestmark = [pytest.mark.slow, pytest.mark.security]
REPO = Path(__file__).resolve().parents[2]
FEDERATION = "fedward"
# Flower 1.42 marks a node offline HEARTBEAT_PATIENCE (2) x its 30 s heartbeat interval after its
# last heartbeat; released, the restarted site is activated within it (8.5 s on an idle machine;
# the bound leaves room for a loaded CI runner while staying under the window it replaces).
REJOIN_WITHIN_S = 50


def _activations(log: Path) -> int:
    return len(re.findall(r"Activated node_id=", log.read_text(errors="replace")))


def test_a_site_killed_and_restarted_at_once_rejoins_without_an_operator(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    subprocess.run(
        ["bash", str(REPO / "deploy" / "make-certs.sh"), str(certs), "--sites", "cleveland"],
        check=True,
        capture_output=True,
    )
    (site_config,) = [
        p
        for p in write_site_files("heart-disease", tmp_path / "sites")
        if p.parent.name == "cleveland"
    ]
    fleet_port, control_port = free_port(), free_port()
    operator = flower_env(tmp_path / "operator")
    coordinator_env = {
        **operator,
        "FEDWARD_STATE_DIR": str(tmp_path / "coordinator"),
        "FEDWARD_SUPERLINK_HOST": "127.0.0.1",
        "FEDWARD_SUPERLINK_PORT": str(fleet_port),
        "FEDWARD_CONTROL_PORT": str(control_port),
        "FEDWARD_SSL_CERT": str(certs / "superlink.pem"),
        "FEDWARD_SSL_KEY": str(certs / "superlink.key"),
        "FEDWARD_CONTROL_CA_CERT": str(certs / "control-ca.pem"),
        "FEDWARD_CONTROL_CERT": str(certs / "control.pem"),
        "FEDWARD_CONTROL_KEY": str(certs / "control.key"),
        "FEDWARD_METRICS": "0",
    }
    site_env = {
        **flower_env(tmp_path / "site-home"),
        "FEDWARD_SITE_CONFIG": str(site_config),
        "FEDWARD_SUPERLINK": f"127.0.0.1:{fleet_port}",
        "FEDWARD_CA_CERT": str(certs / "ca.pem"),
        "FEDWARD_NODE_KEY": str(certs / "keys" / "cleveland"),
        "FEDWARD_SUPERNODE_PORT": str(free_port()),
        "FEDWARD_METRICS": "0",
    }
    site_cmd = ["bash", str(REPO / "deploy" / "site-entrypoint.sh"), "supernode"]
    link_log = tmp_path / "coordinator.log"
    group = ProcessGroup()
    try:
        group.start(
            ["bash", str(REPO / "deploy" / "coordinator-entrypoint.sh"), "superlink"],
            env=coordinator_env,
            log=link_log,
        )
        wait_for_port(control_port, timeout=60)
        wait_for_port(fleet_port, timeout=60)
        said = flwr(
            ["supernode", "register", str(certs / "keys" / "cleveland.pub"), FEDERATION], operator
        )
        assert said.returncode == 0, said.stdout + said.stderr
        first = group.start(site_cmd, env=site_env, log=tmp_path / "site-1.log")
        wait_until(lambda: _activations(link_log) >= 1, 60, "the site activated")
        node_ids = re.findall(r"Activated node_id=(\d+)", link_log.read_text(errors="replace"))
        record = load_site_config(site_config).state_path / ".supernode-node-id"
        wait_until(record.is_file, 10, "the node id recorded in the site's state folder")
        assert record.read_text().strip() == node_ids[0]

        os.killpg(first.pid, signal.SIGKILL)  # the container crashed: no deactivation is sent
        first.wait(timeout=10)
        crashed = time.monotonic()
        second = group.start(site_cmd, env=site_env, log=tmp_path / "site-2.log")
        wait_until(
            lambda: _activations(link_log) >= 2 or second.poll() is not None,
            REJOIN_WITHIN_S,
            "the restarted site activated",
        )
        rejoined = time.monotonic() - crashed
        site_log = (tmp_path / "site-2.log").read_text(errors="replace")
        assert second.poll() is None, f"the restarted site exited:\n{site_log[-3000:]}"
        assert _activations(link_log) == 2
        assert f"released node {node_ids[0]}, left online by a previous process" in site_log
        assert "Deactivated node_id=" + node_ids[0] in link_log.read_text(errors="replace")
        print(f"rejoined {rejoined:.1f} s after the crash")
        listing = flwr(["supernode", "list", FEDERATION], operator)
        assert listing.returncode == 0 and "online" in listing.stdout, listing.stdout
    finally:
        group.stop()
