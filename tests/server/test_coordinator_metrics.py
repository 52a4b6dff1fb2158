"""`fedward coordinator metrics`: Prometheus gauges read from the run folders at every scrape."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedward.client.app import app
from fedward.common.evaluation_config import AuditConfig, BaselinesConfig, EvaluationConfig
from fedward.common.learning_config import ModelConfig
from fedward.common.run_config import RunConfig
from fedward.server import coordinator_metrics, run_folder
from fedward.server.app import coordinate
from fedward.server.coordinator_metrics import CoordinatorMetricsError, serve_metrics
from fedward.server.coordinator_settings import CoordinatorSettings
from tests.e2e.processes import free_port
from tests.server.he_support import train_run
from tests.server.loopback import LoopbackGrid, as_grid, server_context

FEDWARD = str(Path(sys.executable).parent / "fedward")
P = "fedward_coordinator_"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(P + name, tuple(sorted(labels.items())))]


def labelled(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == P + name}


def get(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return parse(resp.read().decode())


@contextlib.contextmanager
def served(runs: Path) -> Iterator[str]:
    """The endpoint on a free port (port 0), in a thread; yields its URL."""
    stop = threading.Event()
    ready: list[str] = []
    thread = threading.Thread(
        target=serve_metrics,
        args=(runs, "127.0.0.1", 0),
        kwargs={"on_ready": ready.append, "stop": stop},
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not ready:
        assert thread.is_alive() and time.monotonic() < deadline, "endpoint did not start"
        time.sleep(0.02)
    try:
        yield ready[0]
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real finished runs of the four heart-disease hospitals (one audited) and a non-run."""
    root = tmp_path_factory.mktemp("runs")
    train_run("logistic", root / "plain-run", rounds=3)
    audited = RunConfig(
        rounds=2,
        model=ModelConfig(kind="logistic"),
        evaluation=EvaluationConfig(bootstrap=20),
        baselines=BaselinesConfig(enabled=False),
        audit=AuditConfig(reference_models=2),
    )
    settings = CoordinatorSettings(
        run=audited, run_dir=str(root / "audited-run"), engine="simulation"
    )
    coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings)
    (root / "coordinator-state").mkdir()
    (root / "coordinator-state" / "ledger_heads.json").write_text("{}")
    (root / "notes.txt").write_text("not a run")
    return root


def events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "progress.jsonl").read_text().splitlines()]


def test_file_names_are_the_run_folders_and_no_torch_is_loaded() -> None:
    assert coordinator_metrics.PROGRESS_FILE == run_folder.PROGRESS_FILE
    probe = "import sys, fedward.server.coordinator_metrics; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"  # the metrics sidecar stays small


def test_finished_runs_are_served_over_http_with_their_figures(runs: Path) -> None:
    with served(runs) as url:
        s = get(url)
    for name, rounds in (("plain-run", 3), ("audited-run", 2)):
        assert value(s, "rounds_completed_total", run=name) == rounds
        assert value(s, "current_round", run=name) == rounds
        assert value(s, "rounds_planned", run=name) == rounds
        assert value(s, "rounds_skipped_total", run=name) == 0
        assert value(s, "progress_errors_total", run=name) == 0
        assert value(s, "round_duration_seconds_count", run=name) == rounds
        assert value(s, "round_duration_seconds_sum", run=name) > 0
        assert value(s, "round_duration_seconds_bucket", run=name, le="+Inf") == rounds
        assert value(s, "sites", run=name, status="participating") == 4
        assert value(s, "sites", run=name, status="refused") == 0
        assert value(s, "sites", run=name, status="failed") == 0
        record = json.loads((runs / name / "run_record.json").read_text())
        for site in record["sites"]:
            got = value(s, "site_epsilon", run=name, site=site["site"])
            assert got == pytest.approx(site["epsilon"]) and 0 < got <= 1.0
        tune = json.loads((runs / name / "metrics.json").read_text())["tune"][-1]
        assert value(s, "tune_auroc", run=name) == pytest.approx(tune["pooled"]["auroc"])
    audit = json.loads((runs / "audited-run" / "audit.json").read_text())
    aucs = labelled(s, "audit_auc")
    assert len(aucs) == 3  # loss, LiRA offline, LiRA online on the run's model
    for attack, pooled in audit["models"]["run"]["pooled"].items():
        assert value(s, "audit_auc", run="audited-run", model="run", attack=attack) == (
            pytest.approx(pooled["auc"])
        )
    assert value(s, "runs", state="finished") == 2
    assert value(s, "runs", state="running") == 0
    assert value(s, "runs", state="stopped") == 0
    named = {dict(labels).get("run") for labels in labelled(s, "current_round")}
    assert named == {"plain-run", "audited-run"}  # coordinator-state and notes.txt are no runs


def test_round_durations_fill_cumulative_buckets(runs: Path) -> None:
    with served(runs) as url:
        s = get(url)
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for labels, v in labelled(s, "round_duration_seconds_bucket").items()
        if dict(labels)["run"] == "plain-run"
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == 3
    ev = events(runs / "plain-run")
    start = {e["round"]: e["t"] for e in ev if e["event"] == "round-started"}
    took = [e["t"] - start[e["round"]] for e in ev if e["event"] == "round-finished"]
    assert value(s, "round_duration_seconds_sum", run="plain-run") == pytest.approx(sum(took))


def test_values_move_as_a_run_appends_its_events(runs: Path, tmp_path: Path) -> None:
    """A real run's events replayed line by line into a new folder: each scrape sees the new ones."""
    lines = (runs / "plain-run" / "progress.jsonl").read_text().splitlines(keepends=True)
    kinds = [json.loads(line)["event"] for line in lines]
    live = tmp_path / "runs" / "live-run"
    live.mkdir(parents=True)
    progress = live / "progress.jsonl"

    def upto(kind: str, nth: int = 1) -> None:
        """Write the log up to and including the nth event of ``kind``."""
        seen = 0
        for i, k in enumerate(kinds):
            seen += k == kind
            if seen == nth:
                progress.write_text("".join(lines[: i + 1]))
                return
        raise AssertionError(f"no {kind} #{nth}")

    with served(tmp_path / "runs") as url:
        assert value(get(url), "runs", state="running") == 0
        upto("run-started")
        s = get(url)
        assert value(s, "runs", state="running") == 1
        assert value(s, "current_round", run="live-run") == 0
        assert value(s, "rounds_planned", run="live-run") == 3
        assert ("fedward_coordinator_tune_auroc", (("run", "live-run"),)) not in s
        upto("round-started")
        s = get(url)
        assert value(s, "current_round", run="live-run") == 1
        assert value(s, "rounds_completed_total", run="live-run") == 0
        upto("site-trained", 4)
        s = get(url)
        assert value(s, "sites", run="live-run", status="participating") == 4
        assert value(s, "site_epsilon", run="live-run", site="cleveland") > 0
        first_eps = value(s, "site_epsilon", run="live-run", site="cleveland")
        upto("round-finished")
        s = get(url)
        assert value(s, "rounds_completed_total", run="live-run") == 1
        assert value(s, "round_duration_seconds_count", run="live-run") == 1
        assert 0 < value(s, "tune_auroc", run="live-run") <= 1
        upto("round-finished", 2)
        s = get(url)
        assert value(s, "current_round", run="live-run") == 2
        assert value(s, "rounds_completed_total", run="live-run") == 2
        assert value(s, "site_epsilon", run="live-run", site="cleveland") > first_eps
        upto("run-finished")
        s = get(url)
        assert value(s, "rounds_completed_total", run="live-run") == 3
        assert value(s, "runs", state="finished") == 1
        assert value(s, "runs", state="running") == 0


def test_bad_lines_are_skipped_and_counted_and_a_half_written_line_waits(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "garbled"
    run.mkdir(parents=True)
    good = [
        {"t": 10.0, "event": "run-started", "rounds": 2},
        {"t": 11.0, "event": "round-started", "round": 1, "attempt": "a"},
    ]
    with (run / "progress.jsonl").open("wb") as fh:
        fh.write((json.dumps(good[0]) + "\n").encode())
        fh.write(b'{"t": 10.5, "event": "round-sta\n')  # torn: not JSON
        fh.write(b"[1, 2, 3]\n")  # JSON, but not an event
        fh.write(b'{"t": 10.6, "event": "round-started", "round": "one"}\n')  # malformed event
        fh.write(b"\xff\xfe not utf-8\n")
        fh.write(b"\n")  # a blank line is no error
        fh.write((json.dumps(good[1]) + "\n").encode())
        fh.write(b'{"t": 12.5, "event": "round-fin')  # still being written
    with served(tmp_path / "runs") as url:
        s = get(url)
        assert value(s, "progress_errors_total", run="garbled") == 4
        assert value(s, "current_round", run="garbled") == 1
        assert value(s, "rounds_completed_total", run="garbled") == 0
        with (run / "progress.jsonl").open("ab") as fh:
            fh.write(b'ished", "round": 1}\n')
        s = get(url)
        assert value(s, "rounds_completed_total", run="garbled") == 1
        assert value(s, "round_duration_seconds_sum", run="garbled") == pytest.approx(1.5)
        assert value(s, "progress_errors_total", run="garbled") == 4


def test_refused_failed_and_stopped_runs_are_told_apart(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "stopped-run"
    run.mkdir(parents=True)
    evs = [
        {"t": 1, "event": "run-started", "rounds": 3},
        {"t": 2, "event": "round-started", "round": 1},
        {"t": 3, "event": "site-trained", "round": 1, "site": "a", "epsilon": 0.3},
        {"t": 3, "event": "site-trained", "round": 1, "site": "b", "epsilon": 0.2},
        {"t": 3, "event": "site-failed", "round": 1, "site": "c", "reason": "timeout"},
        {"t": 3, "event": "site-refused", "round": 1, "site": "d", "reason": "budget"},
        {"t": 4, "event": "round-finished", "round": 1},
        {"t": 5, "event": "round-started", "round": 2},
        {"t": 6, "event": "site-trained", "round": 2, "site": "c", "epsilon": 0.25},
        {"t": 6, "event": "site-error", "round": 2, "site": "a", "reason": "disk full"},
        {"t": 6, "event": "round-skipped", "round": 2, "reason": "1 site(s) answered"},
        {"t": 7, "event": "round-finished", "round": 2},
        {"t": 8, "event": "run-stopped", "reason": "round 3: only 1 site(s) can still take part"},
    ]
    (run / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    with served(tmp_path / "runs") as url:
        s = get(url)
    assert value(s, "sites", run="stopped-run", status="participating") == 2  # b, c
    assert value(s, "sites", run="stopped-run", status="failed") == 1  # a, at its latest
    assert value(s, "sites", run="stopped-run", status="refused") == 1  # d, never asked again
    assert value(s, "rounds_completed_total", run="stopped-run") == 1
    assert value(s, "rounds_skipped_total", run="stopped-run") == 1
    assert value(s, "current_round", run="stopped-run") == 2
    assert value(s, "site_epsilon", run="stopped-run", site="c") == 0.25
    assert value(s, "runs", state="stopped") == 1


def test_a_replaced_progress_file_is_read_again_from_the_start(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "redo"
    run.mkdir(parents=True)
    one = [{"t": 1, "event": "round-started", "round": r} for r in (1, 2, 3)]
    (run / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in one))
    with served(tmp_path / "runs") as url:
        assert value(get(url), "current_round", run="redo") == 3
        (run / "progress.jsonl").write_text(json.dumps(one[0]) + "\n")  # shorter: a new file
        assert value(get(url), "current_round", run="redo") == 1


def test_a_missing_runs_folder_serves_no_runs_until_one_appears(tmp_path: Path) -> None:
    root = tmp_path / "not-yet"
    with served(root) as url:
        s = get(url)
        assert {value(s, "runs", state=k) for k in ("running", "finished", "stopped")} == {0}
        assert not labelled(s, "current_round")
        (root / "coordinator-state").mkdir(parents=True)
        (root / "first").mkdir()
        (root / "first" / "manifest.json").write_text("{}")  # made, no event yet
        s = get(url)
        assert value(s, "runs", state="running") == 1
        assert value(s, "current_round", run="first") == 0


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with served(tmp_path) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(CoordinatorMetricsError, match=f"127.0.0.1:{port}.*--port"):
            serve_metrics(tmp_path, "127.0.0.1", port, stop=threading.Event())


def test_the_command_serves_until_sigterm(runs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "runs"
    shutil.copytree(runs / "plain-run", copy / "plain-run")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "metrics.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [FEDWARD, "coordinator", "metrics", "--runs", str(copy), "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                s = get(url)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert value(s, "rounds_completed_total", run="plain-run") == 3
        assert "1 run folder under" in log.read_text()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
        assert "stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_a_file_given_as_runs_folder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.txt"
    path.write_text("x")
    done = subprocess.run(
        [FEDWARD, "coordinator", "metrics", "--runs", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    said = " ".join((done.stdout + done.stderr).replace("│", " ").split())
    assert f"{path} is a file, not a folder of runs" in said
