"""The docker-compose topology as real processes on loopback, started by the images' own entrypoints:
a SuperLink with TLS and SuperNode authentication, four sites whose node keys were registered, a DP
run of several rounds launched with `fedward run`, the coordinator's and the sites' Prometheus
endpoints scraped while it runs, a node with an unregistered key turned away, and a site's key
revoked (its SuperNode cannot return) and rotated (it is online again with the new one). Certificates and keys come from
deploy/make-certs.sh. Every process started is stopped by pid."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from fedward.common.datasets.bundled import write_site_files
from tests.e2e.processes import BIN, ProcessGroup, flower_env, free_port, wait_for_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SITES = ("cleveland", "hungary", "switzerland", "va-long-beach")
ROUNDS = 2
# Only this site's gauges are scraped; the others run without their metrics process (the
# entrypoint's FEDWARD_METRICS=0), which spares three process starts on a small machine.
SCRAPED_SITE = "cleveland"


def _scrape(port: int) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return {}
    values = {}
    for line in text.decode().splitlines():
        if line.startswith("fedward_") and " " in line:
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def _matching(values: dict[str, float], prefix: str) -> list[float]:
    return [v for k, v in values.items() if k.startswith(prefix)]


def _flwr(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "flwr"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _register(public_key: Path, env: dict[str, str]) -> int:
    said = _flwr(["supernode", "register", str(public_key), "fedward"], env)
    match = re.search(r"SuperNode (\d+) registered", said)
    assert match, said
    return int(match.group(1))


def _online(node_id: int, env: dict[str, str]) -> bool:
    listing = _flwr(["supernode", "list", "fedward"], env)
    return any(str(node_id) in line and "online" in line for line in listing.splitlines())


def _log_says(folder: Path, text: str, prefix: str) -> bool:
    return any(text in log.read_text() for log in folder.glob(f"{prefix}*.log"))


def test_secure_topology_runs_dp_rounds_and_turns_away_an_unregistered_node(
    tmp_path: Path,
) -> None:
    home = tmp_path / "flwr"
    home.mkdir()
    env = flower_env(home)
    env["PATH"] = f"{BIN}:{env['PATH']}"
    certs = tmp_path / "certs"
    subprocess.run(
        ["bash", str(REPO / "deploy" / "make-certs.sh"), str(certs), "--sites", ",".join(SITES)],
        check=True,
        capture_output=True,
        env=env,
    )
    subprocess.run(
        [
            "bash",
            str(REPO / "deploy" / "make-certs.sh"),
            str(certs),
            "--keys-only",
            "--sites",
            "intruder",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    site_configs = dict(
        zip(SITES, write_site_files("heart-disease", tmp_path / "sites"), strict=True)
    )
    state = tmp_path / "coordinator"
    run_toml = tmp_path / "run.toml"
    run_toml.write_text(
        f'name = "secure-topology"\nrounds = {ROUNDS}\n\n[baselines]\nenabled = false\n\n'
        "[audit]\nenabled = false\n"
    )
    link_port, coord_metrics = free_port(), free_port()
    coordinator_env = {
        **env,
        "FEDWARD_STATE_DIR": str(state),
        "FEDWARD_SUPERLINK_HOST": "127.0.0.1",
        "FEDWARD_SUPERLINK_PORT": str(link_port),
        "FEDWARD_SSL_CERT": str(certs / "superlink.pem"),
        "FEDWARD_SSL_KEY": str(certs / "superlink.key"),
        # `flwr` and `fedward run` reach the Control listener through the config.toml the
        # entrypoint writes into this FLWR_HOME; the sites only ever see link_port.
        "FEDWARD_CONTROL_PORT": str(free_port()),
        "FEDWARD_CONTROL_CA_CERT": str(certs / "control-ca.pem"),
        "FEDWARD_CONTROL_CERT": str(certs / "control.pem"),
        "FEDWARD_CONTROL_KEY": str(certs / "control.key"),
        "FEDWARD_FEDERATION": "fedward",
        "FEDWARD_METRICS_HOST": "127.0.0.1",
        "FEDWARD_METRICS_PORT": str(coord_metrics),
    }
    group = ProcessGroup()
    try:
        group.start(
            ["bash", str(REPO / "deploy" / "coordinator-entrypoint.sh"), "superlink"],
            env=coordinator_env,
            log=tmp_path / "coordinator.log",
        )
        wait_for_port(link_port, timeout=120)
        wait_for_port(coord_metrics, timeout=120)
        node_ids = {site: _register(certs / "keys" / f"{site}.pub", env) for site in SITES}

        site_metrics = {SCRAPED_SITE: free_port()}

        def start_site(site: str) -> subprocess.Popen[bytes]:
            return group.start(
                ["bash", str(REPO / "deploy" / "site-entrypoint.sh"), "supernode"],
                env={
                    **env,
                    "FEDWARD_SITE_CONFIG": str(site_configs[site]),
                    "FEDWARD_SUPERLINK": f"127.0.0.1:{link_port}",
                    "FEDWARD_CA_CERT": str(certs / "ca.pem"),
                    "FEDWARD_NODE_KEY": str(certs / "keys" / site),
                    "FEDWARD_SUPERNODE_PORT": str(free_port()),
                    **(
                        {
                            "FEDWARD_METRICS_HOST": "127.0.0.1",
                            "FEDWARD_METRICS_PORT": str(site_metrics[site]),
                        }
                        if site in site_metrics
                        else {"FEDWARD_METRICS": "0"}
                    ),
                },
                log=tmp_path / f"site-{site}-{len(group.procs)}.log",
            )

        sites = {site: start_site(site) for site in SITES}

        # A node whose key nobody registered is refused by the SuperLink and gives up.
        intruder = group.start(
            [
                str(BIN / "flower-supernode"),
                "--superlink",
                f"127.0.0.1:{link_port}",
                "--root-certificates",
                str(certs / "ca.pem"),
                "--auth-supernode-private-key",
                str(certs / "keys" / "intruder"),
                "--port",
                str(free_port()),
                "--max-retries",
                "2",
                "--max-wait-time",
                "30",
            ],
            env=env,
            log=tmp_path / "intruder.log",
        )

        # The coordinator's one command: launch against the named federation and follow it.
        run_log = tmp_path / "fedward-run.log"
        launch = group.start(
            [
                str(BIN / "fedward"),
                "run",
                str(REPO),
                "fedward",
                "--run-config",
                f"run-config='{run_toml}' output-dir='{state / 'runs'}'",
            ],
            env={**env, "COLUMNS": "200"},
            log=run_log,
        )
        seen_rounds: list[float] = []
        seen_eps: list[float] = []
        deadline = time.monotonic() + 900
        while launch.poll() is None:
            assert time.monotonic() < deadline, run_log.read_text()[-4000:]
            coordinator = _scrape(coord_metrics)
            seen_rounds += _matching(coordinator, "fedward_coordinator_current_round")
            gauges = _scrape(site_metrics[SCRAPED_SITE])
            seen_eps += _matching(gauges, "fedward_site_epsilon_spent")
            time.sleep(1)
        assert launch.returncode == 0, run_log.read_text()[-4000:]
        assert "run folder: " in run_log.read_text()

        final_coordinator = _scrape(coord_metrics)
        final_site = _scrape(site_metrics[SCRAPED_SITE])
        assert intruder.wait(timeout=120) != 0
        assert "Failed to activate SuperNode" in (tmp_path / "intruder.log").read_text()

        # Revoking a node key: unregistered, the site's SuperNode cannot come back with it.
        _flwr(["supernode", "unregister", str(node_ids["cleveland"]), "fedward"], env)
        os.killpg(sites["cleveland"].pid, signal.SIGTERM)
        sites["cleveland"].wait(timeout=60)
        revoked = start_site("cleveland")
        assert revoked.wait(timeout=180) != 0
        assert _log_says(tmp_path, "Failed to activate SuperNode", "site-cleveland-")
        # Rotating it: a new key pair, registered, and the site is online again.
        subprocess.run(
            [
                "bash",
                str(REPO / "deploy" / "make-certs.sh"),
                str(certs),
                "--keys-only",
                "--force",
                "--sites",
                "cleveland",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        new_id = _register(certs / "keys" / "cleveland.pub", env)
        assert new_id != node_ids["cleveland"]
        start_site("cleveland")
        deadline = time.monotonic() + 180
        while not _online(new_id, env):
            assert time.monotonic() < deadline, "the rotated key's SuperNode never came online"
            time.sleep(0.5)
    finally:
        group.stop()
        for proc in group.procs:
            assert proc.poll() is not None, f"process {proc.pid} still running"

    runs = sorted((state / "runs").glob("*-secure-topology-*"))
    assert len(runs) == 1
    record = json.loads((runs[0] / "run_record.json").read_text())
    assert sorted(record["participating"]) == sorted(SITES)
    assert all(0 < s["epsilon"] <= 1.0 for s in record["sites"])
    checkpoints = sorted((runs[0] / "checkpoints").glob("round-*.pt"))
    assert len(checkpoints) == ROUNDS
    # The metrics moved while the run went on, and the final scrape shows the whole run.
    assert len(set(seen_rounds)) >= 2 and seen_rounds == sorted(seen_rounds), seen_rounds
    assert max(_matching(final_coordinator, "fedward_coordinator_rounds_completed_total")) == ROUNDS
    assert max(seen_eps + _matching(final_site, "fedward_site_epsilon_spent")) > min(
        seen_eps or [0.0]
    )
    assert (state / "superlink.db").is_file()
    name = runs[0].name
    sites_key = f'fedward_coordinator_sites{{run="{name}",status="participating"}}'
    assert final_coordinator[sites_key] == len(SITES)
    for site in record["sites"]:
        key = f'fedward_coordinator_site_epsilon{{run="{name}",site="{site["site"]}"}}'
        assert final_coordinator[key] == pytest.approx(site["epsilon"])
