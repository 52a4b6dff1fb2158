"""Resuming a run whose coordinator died mid-round, in-process (the real ClientApp, no Flower
processes): same run id, a new attempt for the interrupted round, the lost attempt's spend still
counted at every site and nothing counted twice, the metric history kept, the audit log appended.

The sites are simulated nodes, whose DP noise and training are seeded by (seed, site, round): the
resumed run's model is then exactly the uninterrupted run's, a sharper check than "within noise".
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import typer
from flwr.app import Message

from fedward.client.accounting import epsilon_of
from fedward.client.app import app
from fedward.client.ledger import Ledger
from fedward.common.evaluation_config import AuditConfig, BaselinesConfig, EvaluationConfig
from fedward.common.learning_config import ModelConfig
from fedward.common.run_config import RunConfig
from fedward.server.app import coordinate
from fedward.server.coordinator_audit import AUDIT_FILE, CoordinatorAudit
from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.resume import LOCK_FILE, ResumeError, RunLock
from fedward.server.run_cli import resolve_run_config, resume_run_config
from tests.server.loopback import LoopbackGrid, as_grid, server_context

SITES = ("cleveland", "hungary", "switzerland", "va-long-beach")
ROUNDS, KILLED_IN = 4, 3


class CoordinatorKilled(BaseException):
    """Stands in for SIGKILL: nothing after it runs in the coordinator."""


class DyingGrid(LoopbackGrid):
    """The sites train round ``KILLED_IN``; the coordinator dies before their replies arrive."""

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        messages = list(messages)
        replies = super().send_and_receive(messages, timeout=timeout)
        if any(
            m.metadata.message_type == "train"
            and m.content.config_records["config"]["server-round"] == KILLED_IN
            for m in messages
        ):
            raise CoordinatorKilled
        return replies


def _run_config() -> RunConfig:
    return RunConfig(
        name="resume",
        rounds=ROUNDS,
        model=ModelConfig(kind="logistic"),
        evaluation=EvaluationConfig(bootstrap=20),
        baselines=BaselinesConfig(enabled=False),
        audit=AuditConfig(enabled=False),
    )


def _settings(root: Path, name: str, *, resume: bool = False) -> CoordinatorSettings:
    return CoordinatorSettings(
        run=_run_config(),
        run_dir=str(root / name / "run"),
        engine="simulation",
        sim_state_dir=str(root / name / "sites"),
        coordinator_state_dir=str(root / name / "coordinator"),
        resume=resume,
    )


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted run, and the same run killed in round 3 and resumed."""
    root = tmp_path_factory.mktemp("resume")
    coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), _settings(root, "reference"))
    crashed = _settings(root, "crashed")
    with pytest.raises(CoordinatorKilled):
        coordinate(as_grid(DyingGrid(app, 4)), server_context(run_id=11), crashed)
    run_dir = Path(crashed.run_dir or "")
    (run_dir / "checkpoints" / ".state-0003.pt.x1y2.tmp").write_bytes(b"torn")
    shutil.copytree(root / "crashed", root / "crashed-copy")  # still unfinished, for refusals
    coordinate(
        as_grid(LoopbackGrid(app, 4, run_id=12)),
        server_context(run_id=12),
        _settings(root, "crashed", resume=True),
    )
    return {
        "reference": root / "reference",
        "resumed": root / "crashed",
        "unfinished": root / "crashed-copy",
    }


def test_the_resumed_run_keeps_its_run_id_and_retries_round_3_as_a_new_attempt(
    runs: dict[str, Path],
) -> None:
    events = _events(runs["resumed"] / "run")
    (started,) = [e for e in events if e["event"] == "run-started"]
    (resumed,) = [e for e in events if e["event"] == "run-resumed"]
    assert resumed["run_id"] == started["run_id"] and resumed["from_round"] == KILLED_IN - 1
    summary = json.loads((runs["resumed"] / "run" / "privacy_summary.json").read_text())
    assert summary["run_id"] == started["run_id"]
    attempts = [e["attempt"] for e in events if e["event"] == "round-started"]
    rounds = [e["round"] for e in events if e["event"] == "round-started"]
    assert rounds == [1, 2, 3, 3, 4]
    assert attempts[2] != attempts[3] and len(set(attempts)) == 5


def test_the_metric_history_has_every_round_once(runs: dict[str, Path]) -> None:
    metrics = json.loads((runs["resumed"] / "run" / "metrics.json").read_text())
    assert [e["round"] for e in metrics["train"]] == [1, 2, 3, 4]
    assert [e["round"] for e in metrics["tune"]] == [1, 2, 3, 4]
    assert metrics["test"]["round"] == ROUNDS
    record = json.loads((runs["resumed"] / "run" / "run_record.json").read_text())
    assert sorted(s["site"] for s in record["sites"]) == list(SITES)
    assert {s["rounds_ok"] for s in record["sites"]} == {ROUNDS}


def test_every_site_counts_the_lost_attempt_once_and_nothing_twice(
    runs: dict[str, Path],
) -> None:
    events = _events(runs["resumed"] / "run")
    lost, retried = [e["attempt"] for e in events if e["event"] == "round-started"][2:4]
    summary = json.loads((runs["resumed"] / "run" / "privacy_summary.json").read_text())
    reported = {s["site"]: s for s in summary["sites"]}
    for site in SITES:
        ledger = Ledger(runs["resumed"] / "sites" / site)
        assert ledger.verify().ok
        spends = [e for e in ledger.entries() if e.kind == "dp-sgd"]
        assert Counter(e.attempt for e in spends).most_common(1)[0][1] == 1  # no attempt twice
        assert sorted(e.round for e in spends) == [1, 2, 3, 3, 4]
        assert {e.attempt for e in spends if e.round == KILLED_IN} == {lost, retried}
        # The ε the site reports composes all five releases, the lost one included.
        history = [e.history_item() for e in spends]
        delta = spends[0].delta
        assert reported[site]["epsilon"] == pytest.approx(epsilon_of(history, delta), rel=1e-6)
        assert reported[site]["epsilon"] > epsilon_of(history[:-1], delta)


def test_the_resumed_model_is_the_uninterrupted_runs(runs: dict[str, Path]) -> None:
    ref = json.loads((runs["reference"] / "run" / "metrics.json").read_text())
    got = json.loads((runs["resumed"] / "run" / "metrics.json").read_text())
    # Pooled Brier is the n-weighted mean of the sites' own figures: a checkpoint's float32
    # round trip of the weights moves it in the ninth decimal, never more.
    for key in ("auroc", "brier"):
        assert got["test"]["pooled"][key] == pytest.approx(ref["test"]["pooled"][key], abs=1e-7)
    for a, b in zip(ref["tune"], got["tune"], strict=True):
        assert b["pooled"]["auroc"] == pytest.approx(a["pooled"]["auroc"], abs=1e-9)


def test_the_audit_log_holds_start_crash_resume_and_finish(runs: dict[str, Path]) -> None:
    audit = CoordinatorAudit(runs["resumed"] / "coordinator" / AUDIT_FILE)
    assert audit.verify() is None
    kinds = [e["event"] for e in audit.read().entries]
    assert kinds[0] == "run-started" and kinds[-1] == "run-finished"
    assert kinds.count("run-resumed") == 1 and kinds.count("run-failed") == 1
    assert kinds.count("site-admitted") == len(SITES)  # admitted once, not again on resume


def test_a_resume_with_another_run_config_is_refused(runs: dict[str, Path]) -> None:
    settings = _settings(runs["unfinished"].parent, "crashed-copy", resume=True)
    settings.run = settings.run.model_copy(update={"rounds": ROUNDS + 2})
    with pytest.raises(ResumeError, match=r"config hash .* was started with"):
        coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings)


def test_a_finished_run_is_not_resumed(runs: dict[str, Path]) -> None:
    with pytest.raises(ResumeError, match="already finished"):
        coordinate(
            as_grid(LoopbackGrid(app, 4)),
            server_context(),
            _settings(runs["resumed"].parent, "crashed", resume=True),
        )
    kinds = [
        e["event"]
        for e in CoordinatorAudit(runs["resumed"] / "coordinator" / AUDIT_FILE).read().entries
    ]
    assert "resume-refused" in kinds


def test_a_run_folder_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "fresh", resume=True)
    run_dir = Path(settings.run_dir or "")
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"config_hash": "x"}))
    with pytest.raises(ResumeError, match="has no checkpoint"):
        coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings)


def test_a_run_a_live_coordinator_holds_is_refused(tmp_path: Path) -> None:
    held = RunLock(tmp_path).acquire()
    try:
        with pytest.raises(ResumeError, match="still running"):
            RunLock(tmp_path).acquire()
    finally:
        held.release()
    RunLock(tmp_path).acquire().release()  # free again once released
    assert (tmp_path / LOCK_FILE).is_file()


APP_KEYS = {
    "run-config": "",
    "output-dir": "runs",
    "rounds": -1,
    "run-name": "",
    "dp": "",
    "target-epsilon": -1.0,
    "audit-run-dir": "",
    "run-dir": "",
    "resume": False,
}


def test_fedward_run_refuses_a_resume_before_launching_anything(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "manifest.json").write_text('{"config_hash": "x"}')
    with pytest.raises(typer.BadParameter, match="has no checkpoint"):
        resume_run_config(tmp_path, None, None, APP_KEYS)
    # The built-in defaults are not the run config this run was started with.
    with pytest.raises(typer.BadParameter, match="config hash"):
        resume_run_config(runs["unfinished"] / "run", None, None, APP_KEYS)
    with pytest.raises(typer.BadParameter, match="--resume RUN_DIR"):
        resolve_run_config(["resume=true"], None, APP_KEYS)
