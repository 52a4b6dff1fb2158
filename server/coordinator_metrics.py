"""The coordinator's Prometheus gauges, read from the run folders: rounds, per-site status and ε,
tune AUROC, membership-audit AUCs, runs by state — served by `fedward coordinator metrics`.

The ServerApp lives only as long as one run (and in a fresh process per run), so it cannot hold a
gauge. A separate long-lived process serves ``/metrics`` instead, and its collector reads the run
folders' ``progress.jsonl`` at every scrape (incrementally: only the lines appended since the last
scrape), plus ``run_record.json`` and ``audit.json`` once a run has written them. The numbers are
always the run folders', never a copy the ServerApp pushed.

Everything here is already an aggregate: the coordinator never holds per-patient data, and the
progress events carry only per-site and pooled figures.

A progress file is appended one whole line per event, so a line without its newline is a write in
progress: it is read at a later scrape. A complete line that is not a JSON event (a torn write of a
crashed coordinator, a hand edit) is skipped and counted in
``fedward_coordinator_progress_errors_total``. Folders under the runs folder without a progress file
or manifest (``coordinator-state``, anything else) are not runs and are ignored. This module
imports neither torch nor Flower, so the metrics process stays small.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from fedward.common.errors import FedwardError
from fedward.common.metrics_http import serve_registry

log = logging.getLogger(__name__)

METRIC_PREFIX = "fedward_coordinator_"

# The names RunFolder writes (fedward.server.run_folder); not imported from there because that
# module loads torch and Flower, which a metrics sidecar does not need. A test keeps them equal.
PROGRESS_FILE = "progress.jsonl"
MANIFEST_FILE = "manifest.json"
RUN_RECORD_FILE = "run_record.json"
AUDIT_FILE = "audit.json"

RUN_STATES = ("running", "finished", "stopped")
SITE_STATUSES = ("participating", "refused", "failed", "rejected", "dropped")
# Seconds; a round is one train and one tune evaluation, from a second (loopback) to an hour.
ROUND_DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# A site event's status, as the dashboard groups it (site-error: something broke at the site).
_SITE_EVENT_STATUS = {
    "site-trained": "participating",
    "site-refused": "refused",
    "site-failed": "failed",
    "site-error": "failed",
    "site-rejected": "rejected",
    "site-dropped": "dropped",
}


class CoordinatorMetricsError(FedwardError):
    """The metrics endpoint cannot be served (address in use, no permission)."""


# ---- one run, folded from its progress events ------------------------------------------------


@dataclass
class RunProgress:
    """What the gauges show of one run, folded event by event from its progress file."""

    name: str
    state: str = "running"
    stop_reason: str | None = None
    planned_rounds: int | None = None
    current_round: int = 0
    round_started: dict[int, float] = field(default_factory=dict)
    finished_rounds: set[int] = field(default_factory=set)
    skipped_rounds: set[int] = field(default_factory=set)
    durations: list[float] = field(default_factory=list)
    site_status: dict[str, str] = field(default_factory=dict)
    site_epsilon: dict[str, float] = field(default_factory=dict)
    tune_auroc: float | None = None
    errors: int = 0

    @property
    def rounds_completed(self) -> int:
        """Rounds that finished with an aggregated model (a skipped round also 'finishes')."""
        return len(self.finished_rounds - self.skipped_rounds)

    def apply(self, ev: dict[str, Any]) -> None:
        """Fold one event; raises KeyError/TypeError/ValueError when a known event is malformed."""
        kind = ev["event"]
        if not isinstance(kind, str):
            raise TypeError(f"event kind is {type(kind).__name__}, not a string")
        if kind == "run-started":
            self.planned_rounds = int(ev["rounds"]) if ev.get("rounds") is not None else None
        elif kind == "round-started":
            rnd, t = int(ev["round"]), float(ev["t"])
            # A retried round keeps its first start: its duration includes the retry.
            self.round_started.setdefault(rnd, t)
            self.current_round = max(self.current_round, rnd)
        elif kind == "round-finished":
            rnd, t = int(ev["round"]), float(ev["t"])  # both read before anything changes
            if rnd not in self.finished_rounds:
                self.finished_rounds.add(rnd)
                if rnd in self.round_started:
                    self.durations.append(max(0.0, t - self.round_started[rnd]))
        elif kind == "round-skipped":
            self.skipped_rounds.add(int(ev["round"]))
        elif kind in _SITE_EVENT_STATUS:
            site = str(ev["site"])
            self.site_status[site] = _SITE_EVENT_STATUS[kind]
            eps = _number(ev.get("epsilon"))
            if kind == "site-trained" and eps is not None:
                self.site_epsilon[site] = eps
        elif kind == "evaluated" and ev.get("split") == "tune":
            pooled = ev.get("pooled")
            self.tune_auroc = _number(pooled.get("auroc")) if isinstance(pooled, dict) else None
        elif kind == "run-finished":
            self.state = "finished"
        elif kind == "run-stopped":
            self.state, self.stop_reason = "stopped", str(ev.get("reason"))


def _number(value: Any) -> float | None:
    """A figure as a float; None for anything else (a bool, a string, null, NaN)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


class ProgressTail:
    """A run folder's progress file, read incrementally: each refresh folds only the new lines.

    A file that was replaced or truncated (another inode, or shorter than what was read) is read
    again from the start with a fresh fold.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / PROGRESS_FILE
        self.progress = RunProgress(run_dir.name)
        self._offset = 0
        self._identity: tuple[int, int] | None = None

    def refresh(self) -> RunProgress:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self.progress  # a run folder whose first event is not written yet
        identity = (st.st_dev, st.st_ino)
        if identity != self._identity or st.st_size < self._offset:
            self.progress, self._offset, self._identity = (
                RunProgress(self.run_dir.name),
                0,
                identity,
            )
        if st.st_size == self._offset:
            return self.progress
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read(st.st_size - self._offset)
        end = data.rfind(b"\n")
        if end < 0:
            return self.progress  # only a line still being written
        for raw in data[: end + 1].splitlines():
            self._fold(raw)
        self._offset += end + 1
        return self.progress

    def _fold(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            ev = json.loads(raw.decode("utf-8"))
            if not isinstance(ev, dict):
                raise TypeError(f"a JSON {type(ev).__name__}, not an event object")
            self.progress.apply(ev)
        except (ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            self.progress.errors += 1
            log.warning(
                "fedward coordinator metrics: %s: skipped a bad line (%s: %s)",
                self.path,
                type(exc).__name__,
                exc,
            )


def read_run_progress(run_dir: str | Path) -> RunProgress:
    """One run folder's progress as it stands now (used by `fedward run` for the exit status)."""
    return ProgressTail(Path(run_dir)).refresh()


def is_run_folder(path: Path) -> bool:
    """A run folder has a progress file or (before its first event) a manifest."""
    return path.is_dir() and ((path / PROGRESS_FILE).is_file() or (path / MANIFEST_FILE).is_file())


class _JsonFile:
    """A JSON report re-read only when the file changes (audit.json holds histograms)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int] | None = None
        self._data: dict[str, Any] | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._key, self._data = None, None
            return None
        key = (st.st_mtime_ns, st.st_size)
        if key != self._key:
            self._key = key
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self._data = data if isinstance(data, dict) else None
            except (OSError, ValueError) as exc:
                log.warning("fedward coordinator metrics: unreadable %s: %s", self.path, exc)
                self._data = None
        return self._data


@dataclass
class _RunWatch:
    tail: ProgressTail
    record: _JsonFile
    audit: _JsonFile


# ---- Prometheus --------------------------------------------------------------------------------

_HELP = {
    "rounds_completed": "Rounds of the run that finished with an aggregated model.",
    "rounds_skipped": "Rounds of the run skipped because too few sites answered.",
    "rounds_planned": "Rounds the run config asks for.",
    "current_round": "The round the run is in (the latest round started).",
    "round_duration_seconds": "Wall time of each round, from its (first) start to its end, "
    "training and tune evaluation included.",
    "sites": "Sites of the run by their latest status: participating (trained in its latest "
    "round), refused (the site declined; not asked again), failed (an error at the site), "
    "rejected (the coordinator dropped its latest update: broken or out of bounds), dropped "
    "(no reply in its latest round: crashed, disconnected or timed out).",
    "site_epsilon": "ε the site spent on this run so far (the site's own accountant, as reported).",
    "tune_auroc": "Pooled tune-split AUROC of the latest evaluated round (from score histograms).",
    "audit_auc": "Pooled AUC of a membership-inference attack on a released model (audit.json).",
    "runs": "Run folders by state: running, finished or stopped (too few sites).",
    "progress_errors": "Lines of the run's progress file that are not JSON events (skipped).",
}


def _family(key: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(METRIC_PREFIX + key, _HELP[key], labels=labels)


def _counter(key: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(METRIC_PREFIX + key + "_total", _HELP[key], labels=labels)


def histogram_buckets(
    durations: list[float], bounds: tuple[float, ...] = ROUND_DURATION_BUCKETS
) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs ending with ``+Inf``, as Prometheus histograms expect."""
    out = [(_le(b), float(sum(1 for d in durations if d <= b))) for b in bounds]
    out.append(("+Inf", float(len(durations))))
    return out


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


class RunsCollector(Collector):
    """Gauges of every run folder under ``runs_dir``, read at every scrape (register it on a private
    registry). ``runs_dir`` may not exist yet: the first run creates it."""

    def __init__(self, runs_dir: str | Path) -> None:
        self.runs_dir = Path(runs_dir)
        self._watches: dict[Path, _RunWatch] = {}
        self._lock = threading.Lock()  # the HTTP server may scrape from several threads

    def describe(self) -> Iterator[Metric]:
        yield from self._empty().values()

    @staticmethod
    def _empty() -> dict[str, Metric]:
        return {
            "rounds_completed": _counter("rounds_completed", ["run"]),
            "rounds_skipped": _counter("rounds_skipped", ["run"]),
            "rounds_planned": _family("rounds_planned", ["run"]),
            "current_round": _family("current_round", ["run"]),
            "round_duration_seconds": HistogramMetricFamily(
                METRIC_PREFIX + "round_duration_seconds",
                _HELP["round_duration_seconds"],
                labels=["run"],
            ),
            "sites": _family("sites", ["run", "status"]),
            "site_epsilon": _family("site_epsilon", ["run", "site"]),
            "tune_auroc": _family("tune_auroc", ["run"]),
            "audit_auc": _family("audit_auc", ["run", "model", "attack"]),
            "runs": _family("runs", ["state"]),
            "progress_errors": _counter("progress_errors", ["run"]),
        }

    def run_folders(self) -> list[Path]:
        """The runs under ``runs_dir`` (and ``runs_dir`` itself when it is one run's folder)."""
        found = [self.runs_dir] if is_run_folder(self.runs_dir) else []
        try:
            children = sorted(self.runs_dir.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return found
        except OSError as exc:
            log.warning("fedward coordinator metrics: cannot list %s: %s", self.runs_dir, exc)
            return found
        return found + [c for c in children if is_run_folder(c)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            fam = self._empty()
            states = dict.fromkeys(RUN_STATES, 0)
            folders = self.run_folders()
            for gone in set(self._watches) - set(folders):
                del self._watches[gone]
            for folder in folders:
                watch = self._watches.get(folder)
                if watch is None:
                    watch = _RunWatch(
                        ProgressTail(folder),
                        _JsonFile(folder / RUN_RECORD_FILE),
                        _JsonFile(folder / AUDIT_FILE),
                    )
                    self._watches[folder] = watch
                try:
                    progress = watch.tail.refresh()
                except OSError as exc:  # vanished or unreadable between listing and reading
                    log.warning("fedward coordinator metrics: %s: %s", folder, exc)
                    continue
                state = _add_run(fam, progress, watch.record.read(), watch.audit.read())
                states[state] += 1
            for state, count in states.items():
                _add(fam["runs"], [state], float(count))
        yield from fam.values()


def _add_run(
    fam: dict[str, Metric],
    p: RunProgress,
    record: dict[str, Any] | None,
    audit: dict[str, Any] | None,
) -> str:
    """Add one run's samples; returns its state (the run record's word when the events lack it)."""
    run = [p.name]
    _add(fam["rounds_completed"], run, float(p.rounds_completed))
    _add(fam["rounds_skipped"], run, float(len(p.skipped_rounds)))
    _add(fam["current_round"], run, float(p.current_round))
    _add(fam["progress_errors"], run, float(p.errors))
    if p.planned_rounds is not None:
        _add(fam["rounds_planned"], run, float(p.planned_rounds))
    hist = fam["round_duration_seconds"]
    assert isinstance(hist, HistogramMetricFamily)
    hist.add_metric(run, histogram_buckets(p.durations), sum_value=float(sum(p.durations)))
    counts = dict.fromkeys(SITE_STATUSES, 0)
    for status in p.site_status.values():
        counts[status] += 1
    for status, n in counts.items():
        _add(fam["sites"], [p.name, status], float(n))
    epsilon = dict(p.site_epsilon)
    for site in (record or {}).get("sites") or []:
        # The run record's figure is the run's final word on each site's spend.
        eps = _number(site.get("epsilon")) if isinstance(site, dict) else None
        if eps is not None:
            epsilon[str(site.get("site"))] = eps
    for site, eps in sorted(epsilon.items()):
        _add(fam["site_epsilon"], [p.name, site], eps)
    if p.tune_auroc is not None:
        _add(fam["tune_auroc"], run, p.tune_auroc)
    for model, attack, auc in audit_aucs(audit):
        _add(fam["audit_auc"], [p.name, model, attack], auc)
    state = p.state
    if state == "running" and (record or {}).get("status") in ("finished", "stopped"):
        state = str((record or {})["status"])  # its terminal event was lost (a torn line)
    return state


def _add(family: Metric, labels: list[str], value: float) -> None:
    assert isinstance(family, GaugeMetricFamily | CounterMetricFamily)
    family.add_metric(labels, value)


def audit_aucs(audit: dict[str, Any] | None) -> list[tuple[str, str, float]]:
    """``(model, attack, pooled AUC)`` of every audited model in an audit report."""
    out: list[tuple[str, str, float]] = []
    models = (audit or {}).get("models")
    if not isinstance(models, dict):
        return out
    for model, entry in sorted(models.items()):
        pooled = entry.get("pooled") if isinstance(entry, dict) else None
        if not isinstance(pooled, dict):
            continue
        for attack, figures in sorted(pooled.items()):
            auc = _number(figures.get("auc")) if isinstance(figures, dict) else None
            if auc is not None:
                out.append((str(model), str(attack), auc))
    return out


def metrics_registry(runs_dir: str | Path) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunsCollector(runs_dir))
    return registry


def serve_metrics(
    runs_dir: str | Path,
    host: str,
    port: int,
    *,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve ``http://HOST:PORT/metrics`` until SIGTERM or SIGINT (or ``stop`` is set), then close.

    Signal handlers are installed only from the main thread; from any other, set ``stop``.
    """
    registry = metrics_registry(runs_dir)

    def cannot_bind(exc: OSError) -> Exception:
        return CoordinatorMetricsError(
            f"cannot serve coordinator metrics on {host}:{port} ({exc.strerror or exc}); "
            "choose another --port or stop the process that holds it"
        )

    serve_registry(registry, host, port, cannot_bind=cannot_bind, on_ready=on_ready, stop=stop)


def describe_runs_dir(runs_dir: str | Path) -> str:
    """One line for the start-up message: how many runs the folder holds now."""
    path = Path(runs_dir)
    if not path.exists():
        return f"{path} does not exist yet; runs appear as the coordinator writes them"
    if not path.is_dir():
        return f"{path} is not a folder"
    n = len(RunsCollector(path).run_folders())
    return f"{n} run folder{'s' if n != 1 else ''} under {path}"
