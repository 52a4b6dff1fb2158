"""Deployment proof: a real flower-superlink and four SuperNodes on loopback, each site with its own
site config and data file, the app launched with `flwr run`. The SuperNodes start as the site image
starts them: Flower's SuperNode inside `fedward-supernode --flower-shortcuts` (the fast path)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedward.common.datasets.bundled import write_site_files
from tests.e2e.processes import (
    BIN,
    ProcessGroup,
    connection_home,
    free_port,
    start_insecure_federation,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deployed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("deploy")
    link_port = free_port()
    _, env = connection_home(tmp, "fedward-test", link_port)
    site_configs = write_site_files("heart-disease", tmp / "sites", seed=3)
    # The run's own defaults, but three configurations per baseline family instead of twenty: every
    # family still runs at every SuperNode (test_simulation.py's run tunes with the same budget).
    run_toml = tmp / "run.toml"
    run_toml.write_text("[tuning]\nbudget = 3\n")
    group = ProcessGroup()
    try:
        start_insecure_federation(group, tmp, env, link_port, site_configs)
        out = tmp / "runs"
        done = subprocess.run(
            [
                str(BIN / "flwr"),
                "run",
                str(REPO),
                "fedward-test",
                "--stream",
                "--run-config",
                f"run-config='{run_toml}' output-dir='{out}' rounds=2 run-name='deployment-proof'",
            ],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs = sorted(out.glob("*-deployment-proof-*"))
        assert len(runs) == 1, f"no run folder under {out}: {done.stdout[-2000:]}"
        yield runs[0]
    finally:
        group.stop()
        for proc in group.procs:
            assert proc.poll() is not None, f"process {proc.pid} still running"


def test_deployment_run_folder_is_complete(deployed_run: Path) -> None:
    for name in (
        "manifest.json",
        "run_config.json",
        "transform.json",
        "metrics.json",
        "run_record.json",
        "model.pt",
        "model.json",
        "progress.jsonl",
    ):
        assert (deployed_run / name).is_file(), name
    assert (deployed_run / "checkpoints" / "round-0002.pt").is_file()
    manifest = json.loads((deployed_run / "manifest.json").read_text())
    assert manifest["engine"] == "deployment" and manifest["packages"]["flwr"].startswith("1.4")


def test_every_site_trained_under_dp_and_was_tested_once(deployed_run: Path) -> None:
    record = json.loads((deployed_run / "run_record.json").read_text())
    assert sorted(record["participating"]) == [
        "cleveland",
        "hungary",
        "switzerland",
        "va-long-beach",
    ]
    for site in record["sites"]:
        # The whole run's spend, not one round's (a retried round is held in reserve).
        assert 0.75 <= site["epsilon"] <= 1.0
    test = json.loads((deployed_run / "metrics.json").read_text())["test"]
    assert set(test["sites"]) == set(record["participating"])
    assert test["pooled"]["auroc"] is not None


def test_each_supernode_ran_the_baseline_suite_and_only_metrics_came_back(
    deployed_run: Path,
) -> None:
    report = json.loads((deployed_run / "baselines.json").read_text())
    sites = {"cleveland", "hungary", "switzerland", "va-long-beach"}
    assert report["pooled_reference"] is None  # simulation only: no site's data is pooled here
    assert report["budget"]["configurations_per_family"] == 3  # the run config reached the app
    for key, sec in report["families"].items():
        assert set(sec["sites"]) == sites, key
        assert sec["pooled"] is not None, key
    assert report["verdict"]
    assert (deployed_run / "baselines.md").is_file()


def test_each_supernode_audited_the_released_model(deployed_run: Path) -> None:
    report = json.loads((deployed_run / "audit.json").read_text())
    sites = report["models"]["run"]["sites"]
    assert set(sites) == {"cleveland", "hungary", "switzerland", "va-long-beach"}
    for site, entry in sites.items():
        assert entry["status"] == "ok", (site, entry)
        assert entry["canary"] is not None and entry["attacks"]["loss"]["auc"] is not None
