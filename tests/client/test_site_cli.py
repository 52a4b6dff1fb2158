"""`fedward site approve | ledger | verify` as a site operator runs them, on real SQLite ledgers.

A `fedward` process spends seconds importing the coordinator's plugin (torch, scikit-learn), so the
commands run through typer's CliRunner on an app that registers the site group exactly as the entry
point does, with the real options; a real `fedward` process proves the entry point and exit status.
"""

from __future__ import annotations

import csv
import getpass
import json
import sqlite3
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from fedward.client.budget import SiteBudget
from fedward.client.cli import register
from fedward.client.ledger import LEDGER_FILE, Ledger
from fedward.client.request import build_request
from fedward.client.site_console import SiteCommandError
from fedward.common.code_identity import code_hash
from fedward.common.datasets.bundled import write_site_files
from fedward.common.datasource import load_table
from fedward.common.errors import ConfigError, PolicyError
from fedward.common.run_config import load_run_config
from fedward.common.site_config import SiteConfig, load_site_config
from tests.conftest import make_context, wire_config

FEDWARD = str(Path(sys.executable).parent / "fedward")


def fedward(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed `fedward` command, in its own process."""
    return subprocess.run(
        [FEDWARD, *args], capture_output=True, text=True, timeout=120, check=False
    )


def fedward_site(*args: str | Path) -> Result:
    """`fedward site ARGS` through typer's runner (exceptions are kept, as the root CLI sees them)."""
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["site", *map(str, args)])


@pytest.fixture
def site_toml(tmp_path: Path) -> Path:
    """A real site folder (cleveland of the heart-disease hospitals) whose policy needs approvals."""
    path = write_site_files("heart-disease", tmp_path, seed=0)[0]
    path.write_text(path.read_text().replace("auto_approve = true", "auto_approve = false"))
    return path


def spend(site: SiteConfig, run_id: str, rounds: int, dataset: str | None = None) -> Ledger:
    """A run's plan and its DP-SGD rounds, as the ClientApp records them."""
    ledger = Ledger(site.state_path)
    dataset = dataset or site.name
    ledger.append(
        dataset=dataset,
        run_id=run_id,
        round=0,
        attempt="plan",
        kind="plan",
        noise_multiplier=1.2,
        sample_rate=0.2,
        steps=5 * (rounds + 1),
        delta=1e-4,
    )
    for r in range(1, rounds + 1):
        ledger.append(
            dataset=dataset,
            run_id=run_id,
            round=r,
            attempt=f"{run_id}:{r}",
            kind="dp-sgd",
            noise_multiplier=1.2,
            sample_rate=0.2,
            steps=5,
            delta=1e-4,
        )
    return ledger


def site_budget(site: SiteConfig, dataset: str | None = None) -> SiteBudget:
    table = load_table(site.data_path, site.load_schema(), site=site.name, fmt=site.data.format)
    return SiteBudget(
        Ledger(site.state_path),
        site.policy,
        site=site.name,
        dataset=dataset or site.name,
        n_rows=table.n_rows,
    )


# ---- approve ---------------------------------------------------------------------------------


@pytest.fixture
def run_toml(tmp_path: Path) -> Path:
    path = tmp_path / "run.toml"
    path.write_text("rounds = 3\n")
    return path


def approvals(site_toml: Path) -> list[dict[str, str]]:
    return Ledger(load_site_config(site_toml).state_path).approvals()


def test_approve_records_run_config_and_code_so_the_client_app_accepts_the_run(
    site_toml: Path, run_toml: Path
) -> None:
    run = load_run_config(run_toml)
    ctx = make_context({"site-config": str(site_toml)})
    with pytest.raises(PolicyError, match="not approved"):
        build_request(wire_config(run), None, ctx)

    done = fedward_site("approve", run_toml, "--site-config", site_toml, "--note", "IRB 2024-17")

    assert done.exit_code == 0, done.output
    assert run.config_hash() in done.output and code_hash() in done.output
    ledger = Ledger(load_site_config(site_toml).state_path)
    assert ledger.is_approved("run-config", run.config_hash())
    assert ledger.is_approved("code", code_hash())
    build_request(wire_config(run), None, ctx)  # the ClientApp's approval check now passes


def test_approve_records_the_os_user_by_default_and_when(site_toml: Path, run_toml: Path) -> None:
    done = fedward_site("approve", run_toml, "--site-config", site_toml, "--note", "IRB 2024-17")

    recorded = approvals(site_toml)
    assert {(a["approved_by"], a["note"]) for a in recorded} == {(getpass.getuser(), "IRB 2024-17")}
    output = " ".join(done.output.split())
    assert all(a["approved_at"] in output for a in recorded)
    assert f"by {getpass.getuser()}" in output


def test_approve_by_names_the_approver_and_a_second_approval_keeps_the_first(
    site_toml: Path, run_toml: Path
) -> None:
    fedward_site("approve", run_toml, "--site-config", site_toml, "--by", "Dr Ada", "--note", "1st")
    again = fedward_site("approve", run_toml, "--site-config", site_toml, "--by", "someone else")

    assert again.exit_code == 0 and "already approved" in again.output
    recorded = approvals(site_toml)
    assert sorted(a["kind"] for a in recorded) == ["code", "run-config"]
    assert {(a["approved_by"], a["note"]) for a in recorded} == {("Dr Ada", "1st")}


def test_approve_of_an_invalid_run_config_is_an_error_naming_file_and_field(
    site_toml: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "run.toml"
    bad.write_text("rounds = 0\n")

    done = fedward_site("approve", bad, "--site-config", site_toml)

    assert isinstance(done.exception, ConfigError)  # the root CLI prints it as `error: ...`, exit 2
    assert "run.toml" in str(done.exception) and "rounds" in str(done.exception)
    assert not (load_site_config(site_toml).state_path / LEDGER_FILE).exists()


# ---- ledger ----------------------------------------------------------------------------------


def test_ledger_prints_history_and_lifetime_budget(site_toml: Path) -> None:
    site = load_site_config(site_toml)
    spend(site, "run-alpha", 2)
    led = spend(site, "run-beta", 1)

    done = fedward_site("ledger", "--site-config", site_toml)

    assert done.exit_code == 0, done.output
    spent = site_budget(site).lifetime_epsilon()
    for text in ("run-alpha", "run-beta", "plan", "dp-sgd", led.entries()[-1].hash[:10]):
        assert text in done.output
    assert f"{spent:.3f}" in done.output and f"{10 - spent:.3f}" in done.output
    assert "hash chain: OK, 5 entries" in done.output


def test_ledger_exports_json_entries_and_budget_summary(site_toml: Path, tmp_path: Path) -> None:
    site = load_site_config(site_toml)
    spend(site, "run-alpha", 2)
    led = spend(site, "run-beta", 1)
    out = tmp_path / "audit.json"

    done = fedward_site("ledger", "--site-config", site_toml, "--export", out)

    assert done.exit_code == 0, done.output
    data = json.loads(out.read_text())
    assert data["entries"] == [asdict(e) for e in led.entries()]
    budget = site_budget(site)
    (own,) = data["budget"]["datasets"]
    assert own["dataset"] == "cleveland" and own["runs"] == 2 and own["entries"] == 5
    assert own["epsilon_spent"] == pytest.approx(budget.lifetime_epsilon())
    assert own["epsilon_remaining"] == pytest.approx(10.0 - budget.lifetime_epsilon())
    assert own["delta"] == budget.lifetime_delta and own["epsilon_budget"] == 10.0
    assert data["budget"]["verify"]["ok"] is True


def test_ledger_exports_csv_rows_matching_the_entries(site_toml: Path, tmp_path: Path) -> None:
    led = spend(load_site_config(site_toml), "run-alpha", 2)
    out = tmp_path / "audit.csv"

    done = fedward_site("ledger", "--site-config", site_toml, "--export", out)

    assert done.exit_code == 0, done.output
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected = [
        {k: "" if v is None else str(v) for k, v in asdict(e).items()} for e in led.entries()
    ]
    assert rows == expected


def test_ledger_reports_each_dataset_the_ledger_holds(site_toml: Path, tmp_path: Path) -> None:
    site = load_site_config(site_toml)
    spend(site, "run-alpha", 2)
    spend(site, "run-old", 1, dataset="cleveland-2019-export")
    out = tmp_path / "audit.json"

    fedward_site("ledger", "--site-config", site_toml, "--export", out)

    datasets = {d["dataset"]: d for d in json.loads(out.read_text())["budget"]["datasets"]}
    assert list(datasets) == ["cleveland", "cleveland-2019-export"]
    old = site_budget(site, "cleveland-2019-export").lifetime_epsilon()
    assert datasets["cleveland-2019-export"]["epsilon_spent"] == pytest.approx(old)


def test_ledger_export_to_an_unknown_suffix_is_an_error_naming_it(
    site_toml: Path, tmp_path: Path
) -> None:
    spend(load_site_config(site_toml), "run-alpha", 1)
    out = tmp_path / "audit.xlsx"

    done = fedward_site("ledger", "--site-config", site_toml, "--export", out)

    assert isinstance(done.exception, SiteCommandError)
    assert "'.xlsx'" in str(done.exception) and ".json or .csv" in str(done.exception)
    assert not out.exists()


# ---- verify ----------------------------------------------------------------------------------


def test_verify_reports_ok_with_entry_count_and_head(site_toml: Path) -> None:
    led = spend(load_site_config(site_toml), "run-alpha", 2)

    done = fedward_site("verify", "--site-config", site_toml)

    assert done.exit_code == 0, done.output
    output = " ".join(done.output.split())
    assert output.startswith("OK") and "3 entries" in output and led.head()[1] in output


def test_verify_exits_1_naming_an_edited_entry(site_toml: Path) -> None:
    site = load_site_config(site_toml)
    spend(site, "run-alpha", 3)
    with sqlite3.connect(site.state_path / LEDGER_FILE) as con:
        con.execute("DROP TRIGGER entries_no_update")
        con.execute("UPDATE entries SET noise_multiplier = 3.0 WHERE seq = 3")

    done = fedward("site", "verify", "--site-config", str(site_toml))  # the installed command

    assert done.returncode == 1, done.stdout + done.stderr
    output = " ".join(done.stdout.split())
    assert "BROKEN" in output and "entry 3 was edited" in output


def test_verify_of_a_site_without_a_ledger_creates_none(site_toml: Path) -> None:
    done = fedward_site("verify", "--site-config", site_toml)

    assert done.exit_code == 0 and "no privacy ledger" in done.output
    assert not (load_site_config(site_toml).state_path / LEDGER_FILE).exists()
