"""`fedward site metrics`: Prometheus gauges read from the site's ledger at every scrape."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedward.client.budget import SiteBudget
from fedward.client.ledger import LEDGER_FILE, Ledger
from fedward.client.site_metrics import metrics_registry
from fedward.common.datasets.bundled import write_site_files
from fedward.common.datasource import load_table
from fedward.common.site_config import SiteConfig, load_site_config
from tests.e2e.processes import free_port

FEDWARD = str(Path(sys.executable).parent / "fedward")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def gauge(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def scrape(url: str, proc: subprocess.Popen[bytes], log: Path, wait_s: float = 90.0) -> Samples:
    """Scrape until the endpoint answers (the process may still be importing)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return parse(resp.read().decode())
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                pytest.fail(f"metrics process exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no answer from {url} within {wait_s:g} s:\n{log.read_text()}")
            time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    return proc.returncode


def dp_round(ledger: Ledger, dataset: str, run_id: str, r: int, sigma: float = 1.2) -> None:
    ledger.append(
        dataset=dataset,
        run_id=run_id,
        round=r,
        attempt=f"{run_id}:{r}",
        kind="dp-sgd",
        noise_multiplier=sigma,
        sample_rate=0.2,
        steps=5,
        delta=1e-4,
    )


def site_budget(site: SiteConfig) -> SiteBudget:
    table = load_table(site.data_path, site.load_schema(), site=site.name, fmt=site.data.format)
    return SiteBudget(
        Ledger(site.state_path), site.policy, site=site.name, dataset=site.name, n_rows=table.n_rows
    )


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    return load_site_config(write_site_files("heart-disease", tmp_path, seed=0)[0])


def test_metrics_process_serves_the_ledgers_budget_and_stops_on_sigterm(
    site: SiteConfig, tmp_path: Path
) -> None:
    ledger = Ledger(site.state_path)
    for r in (1, 2):
        dp_round(ledger, site.name, "run-alpha", r)
    dp_round(ledger, site.name, "run-beta", 1)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "metrics.log"
    args = ["site", "metrics", "--site-config", str(Path(site.base_dir) / "site.toml")]
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [FEDWARD, *args, "--host", "127.0.0.1", "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        samples = scrape(url, proc, log)
        budget = site_budget(site)
        spent = budget.lifetime_epsilon()
        labels = {"site": "cleveland", "dataset": "cleveland"}
        assert gauge(samples, "fedward_site_epsilon_spent", **labels) == pytest.approx(spent)
        assert gauge(samples, "fedward_site_epsilon_budget", **labels) == budget.total_epsilon
        assert gauge(samples, "fedward_site_epsilon_remaining", **labels) == pytest.approx(
            budget.total_epsilon - spent
        )
        assert gauge(samples, "fedward_site_delta", **labels) == budget.lifetime_delta
        assert gauge(samples, "fedward_site_runs", **labels) == 2
        assert gauge(samples, "fedward_site_ledger_entries", site="cleveland") == 3
        assert gauge(samples, "fedward_site_ledger_valid", site="cleveland") == 1

        # Every scrape reads the ledger afresh: a new round shows up without a restart.
        dp_round(ledger, site.name, "run-gamma", 1)
        again = scrape(url, proc, log)
        assert gauge(again, "fedward_site_ledger_entries", site="cleveland") == 4
        assert gauge(again, "fedward_site_runs", **labels) == 3
        assert gauge(again, "fedward_site_epsilon_spent", **labels) == pytest.approx(
            budget.lifetime_epsilon()
        )
        assert budget.lifetime_epsilon() > spent

        assert stop(proc) == 0, log.read_text()
        assert "stopped" in log.read_text()
    finally:
        stop(proc)


def test_a_broken_chain_reads_as_an_invalid_ledger(site: SiteConfig) -> None:
    ledger = Ledger(site.state_path)
    for r in (1, 2):
        dp_round(ledger, site.name, "run-alpha", r)
    with sqlite3.connect(site.state_path / LEDGER_FILE) as con:
        con.execute("DROP TRIGGER entries_no_update")
        con.execute("UPDATE entries SET noise_multiplier = 9.0 WHERE seq = 1")

    samples = parse(_exposition(site))

    assert gauge(samples, "fedward_site_ledger_valid", site="cleveland") == 0
    assert gauge(samples, "fedward_site_ledger_entries", site="cleveland") == 2


def test_a_site_without_a_ledger_has_spent_nothing_and_gets_no_ledger_file(
    site: SiteConfig,
) -> None:
    samples = parse(_exposition(site))

    labels = {"site": "cleveland", "dataset": "cleveland"}
    assert gauge(samples, "fedward_site_epsilon_spent", **labels) == 0
    assert gauge(samples, "fedward_site_epsilon_remaining", **labels) == site.policy.total_epsilon
    assert gauge(samples, "fedward_site_ledger_entries", site="cleveland") == 0
    assert not (site.state_path / LEDGER_FILE).exists()


def test_every_dataset_in_the_ledger_gets_its_own_gauges(site: SiteConfig) -> None:
    ledger = Ledger(site.state_path)
    dp_round(ledger, site.name, "run-alpha", 1)
    dp_round(ledger, "cleveland-2019-export", "run-old", 1, sigma=2.0)

    samples = parse(_exposition(site))

    datasets = {
        dict(labels)["dataset"]
        for (name, labels) in samples
        if name == "fedward_site_epsilon_spent"
    }
    assert datasets == {"cleveland", "cleveland-2019-export"}


def _exposition(site: SiteConfig) -> str:
    return generate_latest(metrics_registry(site)).decode()
