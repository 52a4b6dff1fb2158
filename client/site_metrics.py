"""A site's privacy numbers, read from its ledger: ε spent per dataset, budget, remaining ε, the
ledger's size and integrity — summarised for `fedward site ledger` and served to Prometheus by
`fedward site metrics`.

Flower starts a fresh ClientApp process for every message, so nothing in the ClientApp lives long
enough to hold a gauge. A separate long-lived process serves ``/metrics`` instead, and its collector
re-reads the ledger at every scrape: the numbers are always the ledger's, never a cached copy.

ε is composed over a dataset's whole history with the RDP accountant (``SiteBudget.lifetime_epsilon``)
at the site's lifetime δ (``policy.total_delta``, else the default below 1/(10 n) of the site's table).
Nothing here creates or writes a ledger: a missing ledger file is reported as "no ledger yet".
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fedward.client.accounting import default_delta
from fedward.client.budget import SiteBudget
from fedward.client.ledger import GENESIS, LEDGER_FILE, Ledger, LedgerEntry, VerifyResult, runs_in
from fedward.client.site_audit import LATEST_AUDIT_FILE
from fedward.common.audit_keys import ATTACKS
from fedward.common.datasource import load_table
from fedward.common.errors import FedwardError
from fedward.common.metrics_http import serve_registry
from fedward.common.site_config import SiteConfig

log = logging.getLogger(__name__)

METRIC_PREFIX = "fedward_site_"


class MetricsServerError(FedwardError):
    """The metrics endpoint cannot be served (address in use, no permission)."""


# ---- the numbers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetBudget:
    """One dataset's lifetime spend; ε fields are None when they cannot be computed (``problem``)."""

    dataset: str
    epsilon_spent: float | None
    delta: float | None
    epsilon_budget: float
    epsilon_remaining: float | None
    runs: int
    entries: int
    accountant: str = "rdp"
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "epsilon_spent": self.epsilon_spent,
            "delta": self.delta,
            "epsilon_budget": self.epsilon_budget,
            "epsilon_remaining": self.epsilon_remaining,
            "accountant": self.accountant,
            "runs": self.runs,
            "entries": self.entries,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class LedgerSummary:
    site: str
    ledger_path: Path
    exists: bool
    verify: VerifyResult
    entries: list[LedgerEntry]
    datasets: list[DatasetBudget]

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "ledger": str(self.ledger_path),
            "verify": {
                "ok": self.verify.ok,
                "entries": self.verify.entries,
                "head": self.verify.head,
                "problem": self.verify.problem,
                "bad_seq": self.verify.bad_seq,
            },
            "datasets": [d.to_dict() for d in self.datasets],
        }


def site_dataset(site: SiteConfig) -> str:
    """The ledger key of the site's data: ``data.dataset_id``, else the site name (as the ClientApp)."""
    return site.data.dataset_id or site.name


def ledger_file(site: SiteConfig) -> Path:
    return site.state_path / LEDGER_FILE


def open_existing_ledger(site: SiteConfig) -> Ledger | None:
    """The site's ledger, or None when there is no ledger file yet (never creates one)."""
    return Ledger(site.state_path) if ledger_file(site).is_file() else None


class RowCount:
    """Rows of the site's data table (for the default lifetime δ), reloaded only when the file changes."""

    def __init__(self, site: SiteConfig) -> None:
        self.site = site
        self._key: tuple[int, int] | None = None
        self._rows = 0

    def __call__(self) -> int:
        path = self.site.data_path
        try:
            stat = path.stat()
            key: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = None  # load_table names the missing file
        if key is None or key != self._key:
            table = load_table(
                path, self.site.load_schema(), site=self.site.name, fmt=self.site.data.format
            )
            self._key, self._rows = key, table.n_rows
        return self._rows


def _lifetime_delta(site: SiteConfig, rows: Callable[[], int]) -> float:
    return site.policy.total_delta if site.policy.total_delta else default_delta(rows())


def _dataset_budget(
    site: SiteConfig,
    ledger: Ledger | None,
    entries: list[LedgerEntry],
    dataset: str,
    rows: Callable[[], int],
) -> DatasetBudget:
    mine = [e for e in entries if e.dataset == dataset]
    total = site.policy.total_epsilon
    spent: float | None = None
    delta: float | None = None
    problem: str | None = None
    try:
        if ledger is None:
            delta, spent = _lifetime_delta(site, rows), 0.0
        else:
            # Rows are needed only for the default δ; with policy.total_delta the table is not read.
            n_rows = 1 if site.policy.total_delta else rows()
            budget = SiteBudget(
                ledger,
                site.policy,
                site=site.name,
                dataset=dataset,
                n_rows=n_rows,
                accountant=site.policy.accountant,
            )
            delta, spent = budget.lifetime_delta, budget.lifetime_epsilon()
    except FedwardError as exc:
        problem = str(exc)
    return DatasetBudget(
        dataset=dataset,
        epsilon_spent=spent,
        delta=delta,
        epsilon_budget=total,
        epsilon_remaining=None if spent is None else max(0.0, total - spent),
        runs=len(runs_in(mine)),
        entries=len(mine),
        accountant=site.policy.accountant,
        problem=problem,
    )


def summarise(site: SiteConfig, rows: Callable[[], int] | None = None) -> LedgerSummary:
    """Read the ledger once: its entries, its chain check and every dataset's lifetime spend.

    The site's own dataset comes first (even with no entries yet), then every other dataset the
    ledger holds (an earlier ``data.dataset_id``), whose δ also comes from this site's table.
    """
    count = rows or RowCount(site)
    ledger = open_existing_ledger(site)
    if ledger is None:
        entries: list[LedgerEntry] = []
        verify = VerifyResult(True, 0, GENESIS)
    else:
        entries = ledger.entries()
        verify = ledger.verify()
    datasets = [site_dataset(site)]
    for e in entries:
        if e.dataset not in datasets:
            datasets.append(e.dataset)
    return LedgerSummary(
        site=site.name,
        ledger_path=ledger_file(site),
        exists=ledger is not None,
        verify=verify,
        entries=entries,
        datasets=[_dataset_budget(site, ledger, entries, d, count) for d in datasets],
    )


# ---- Prometheus --------------------------------------------------------------------------------

_GAUGES: dict[str, tuple[str, list[str]]] = {
    "epsilon_spent": (
        "Lifetime ε spent from the dataset, composed over every ledger entry (RDP accountant) "
        "at the site's lifetime δ.",
        ["site", "dataset"],
    ),
    "epsilon_budget": (
        "The dataset's lifetime ε budget (policy.total_epsilon).",
        ["site", "dataset"],
    ),
    "epsilon_remaining": (
        "Lifetime ε still available: budget minus spent, at least 0.",
        ["site", "dataset"],
    ),
    "delta": ("The lifetime δ at which the dataset's ε is stated.", ["site", "dataset"]),
    "runs": ("Runs with at least one ledger entry for the dataset.", ["site", "dataset"]),
    "ledger_entries": ("Entries in the site's privacy ledger.", ["site"]),
    "ledger_valid": (
        "1 when the ledger's hash chain verifies, 0 when it is broken or unreadable.",
        ["site"],
    ),
    "audit_auc": (
        "AUC of the latest membership-inference audit's attack on a released model.",
        ["site", "model", "attack"],
    ),
    "audit_tpr_at_1pct_fpr": (
        "TPR at 1% FPR of the latest audit's attack (absent when the audit split is too small).",
        ["site", "model", "attack"],
    ),
    "audit_epsilon_lower_bound": (
        "Empirical ε lower bound of the latest one-run canary audit.",
        ["site", "model"],
    ),
    "audit_timestamp_seconds": (
        "When the latest audit of the model ran (Unix time).",
        ["site", "model"],
    ),
}


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        key: GaugeMetricFamily(METRIC_PREFIX + key, doc, labels=labels)
        for key, (doc, labels) in _GAUGES.items()
    }


class SiteLedgerCollector(Collector):
    """Gauges read from the site's ledger at every scrape (register it on a private registry)."""

    def __init__(self, site: SiteConfig, rows: Callable[[], int] | None = None) -> None:
        self.site = site
        self.rows = rows or RowCount(site)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from _families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fam = _families()
        name = self.site.name
        try:
            summary = summarise(self.site, self.rows)
        except FedwardError as exc:  # unreadable or locked ledger, unreadable schema
            log.warning("fedward site metrics: site '%s': %s", name, exc)
            fam["ledger_valid"].add_metric([name], 0.0)
            yield fam["ledger_valid"]
            return
        fam["ledger_entries"].add_metric([name], float(len(summary.entries)))
        fam["ledger_valid"].add_metric([name], 1.0 if summary.verify.ok else 0.0)
        for d in summary.datasets:
            labels = [name, d.dataset]
            fam["epsilon_budget"].add_metric(labels, d.epsilon_budget)
            fam["runs"].add_metric(labels, float(d.runs))
            if d.problem is not None:
                log.warning("fedward site metrics: site '%s': %s", name, d.problem)
            if d.epsilon_spent is not None and d.epsilon_remaining is not None:
                fam["epsilon_spent"].add_metric(labels, d.epsilon_spent)
                fam["epsilon_remaining"].add_metric(labels, d.epsilon_remaining)
            if d.delta is not None:
                fam["delta"].add_metric(labels, d.delta)
        _audit_gauges(fam, self.site)
        yield from fam.values()


def _audit_gauges(fam: dict[str, GaugeMetricFamily], site: SiteConfig) -> None:
    """The latest audit's figures, as the site's audit handler left them beside the ledger."""
    path = site.state_path / LATEST_AUDIT_FILE
    if not path.exists():
        return
    try:
        latest = json.loads(path.read_text(encoding="utf-8"))
        models = dict(latest.get("models", {}))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("fedward site metrics: site '%s': unreadable %s: %s", site.name, path, exc)
        return
    for model, entry in sorted(models.items()):
        figures = entry.get("figures", {}) if isinstance(entry, dict) else {}
        if isinstance(entry, dict) and isinstance(entry.get("time"), int | float):
            fam["audit_timestamp_seconds"].add_metric([site.name, model], float(entry["time"]))
        for attack in ATTACKS:
            for gauge, key in (
                ("audit_auc", f"mia_{attack}_auc"),
                ("audit_tpr_at_1pct_fpr", f"mia_{attack}_tpr_at_fpr_1"),
            ):
                value = figures.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    fam[gauge].add_metric([site.name, model, attack], float(value))
        lb = figures.get("mia_canary_epsilon_lb")
        if isinstance(lb, int | float) and not isinstance(lb, bool):
            fam["audit_epsilon_lower_bound"].add_metric([site.name, model], float(lb))


def metrics_registry(site: SiteConfig, rows: Callable[[], int] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SiteLedgerCollector(site, rows))
    return registry


def serve_metrics(
    site: SiteConfig,
    host: str,
    port: int,
    *,
    rows: Callable[[], int] | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve ``http://HOST:PORT/metrics`` until SIGTERM or SIGINT (or ``stop`` is set), then close.

    Signal handlers are installed only from the main thread; from any other, set ``stop``.
    """
    registry = metrics_registry(site, rows)

    def cannot_bind(exc: OSError) -> Exception:
        return MetricsServerError(
            f"site '{site.name}': cannot serve metrics on {host}:{port} ({exc.strerror or exc}); "
            "choose another --port or stop the process that holds it"
        )

    serve_registry(registry, host, port, cannot_bind=cannot_bind, on_ready=on_ready, stop=stop)
