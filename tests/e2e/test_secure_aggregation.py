"""`fedward simulate` with SecAgg+: Flower's legacy workflow, four hospitals, one of them refusing.

One federation is started for the module; each test reads a different part of its run folder.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from fedward.common.datasets.bundled import write_site_files
from tests.e2e.processes import BIN

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("secagg")
    configs = write_site_files("heart-disease", tmp / "sites", seed=5)
    # va-long-beach misspells the label column: it refuses, and to SecAgg+ it is a drop-out.
    va_data = next(p for p in configs if p.parent.name == "va-long-beach").parent / "data.csv"
    lines = va_data.read_text().splitlines()
    lines[0] = lines[0].replace(",num", ",nmu")
    va_data.write_text("\n".join(lines) + "\n")
    run_toml = tmp / "run.toml"
    run_toml.write_text(
        'name = "secagg"\n[strategy]\nsecure_aggregation = true\n[evaluation]\nbootstrap = 50\n'
    )
    out = tmp / "runs"
    args = [str(BIN / "fedward"), "simulate", "--config", str(run_toml), "--rounds", "2"]
    args += ["--out", str(out), "--seed", "5"]
    for p in configs:
        args += ["--site-config", str(p)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    # A model without va-long-beach: `fedward simulate` says so with exit code 4.
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    return {"dir": run_dir, "stdout": done.stdout, "stderr": done.stderr}


def _json(run: dict[str, Any], name: str) -> Any:
    return json.loads((run["dir"] / name).read_text())


def test_the_run_folder_is_complete(federation: dict[str, Any]) -> None:
    for name in ("manifest.json", "metrics.json", "model.pt", "run_record.json"):
        assert (federation["dir"] / name).is_file(), name
    assert (federation["dir"] / "checkpoints" / "round-0002.pt").is_file()
    assert _json(federation, "run_record.json")["status"] == "finished"
    # The transport cannot ask for baselines, an audit or profiles, and the record says so.
    not_asked = _json(federation, "run_record.json")["not_asked"]
    assert set(not_asked) == {"baselines", "audit", "profiles"}
    assert all("SecAgg+" in reason for reason in not_asked.values())


def test_privacy_summary_states_secure_aggregation(federation: dict[str, Any]) -> None:
    secagg = _json(federation, "privacy_summary.json")["secure_aggregation"]
    assert secagg["enabled"] is True
    assert (secagg["num_shares"], secagg["reconstruction_threshold"]) == (3, 2)
    assert "only the sum" in secagg["guarantee"]
    assert any("colluding" in x for x in secagg["does_not_protect"])
    assert "cannot check" in secagg["no_per_update_validation"]
    # Every round unmasked a sum of the three sites that trained; va's masks were removed.
    assert [(r["completed"], r["sites_in_sum"]) for r in secagg["rounds"]] == [(True, 3), (True, 3)]


def test_a_refusing_site_is_a_reported_drop_out(federation: dict[str, Any]) -> None:
    left = {x["site"]: x for x in _json(federation, "run_record.json")["left_out"]}
    assert set(left) == {"va-long-beach"}
    va = left["va-long-beach"]
    assert va["status"] == "refused"
    # The refusal names the schema's label column, never the site's misspelled header cell.
    assert "label column num is missing" in va["reason"] and "nmu" not in va["reason"]


def test_each_site_still_spends_and_reports_its_own_dp_budget(federation: dict[str, Any]) -> None:
    sites = {s["site"]: s for s in _json(federation, "privacy_summary.json")["sites"]}
    for name in ("cleveland", "hungary", "switzerland"):
        assert 0 < sites[name]["epsilon"] <= 1.0
    assert (federation["dir"] / "site-state" / "cleveland" / "ledger.sqlite").is_file()


def test_tune_and_test_metrics_come_from_the_sites_panels(federation: dict[str, Any]) -> None:
    metrics = _json(federation, "metrics.json")
    assert [r["round"] for r in metrics["tune"]] == [1, 2]
    assert set(metrics["test"]["sites"]) == {"cleveland", "hungary", "switzerland"}
    assert 0.5 < metrics["test"]["pooled"]["auroc"] <= 1.0


def test_simulate_says_secure_aggregation_was_on(federation: dict[str, Any]) -> None:
    out = federation["stdout"].replace("\n", " ")
    assert "secure aggregation (SecAgg+" in out and "va-long-beach left out" in out


def test_refusals_leave_no_traceback_on_the_console(federation: dict[str, Any]) -> None:
    # Ray's ClientAppActor tracebacks of the refusing site go to the run's log file instead.
    assert "Traceback" not in federation["stdout"] + federation["stderr"]
    assert "Manually terminating" not in federation["stdout"] + federation["stderr"]
    assert (federation["dir"] / "simulation.log").exists()
