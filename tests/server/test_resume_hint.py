"""`fedward run` says how to resume when a run ends unfinished (its coordinator died or was
stopped): the exact `--resume` command where a checkpoint exists, a fresh start where none does."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import cast

import pytest

from fedward.server.flwr_process import FlwrRun
from fedward.server.run_cli import _report, resume_hint


class _Launched:
    def tail(self) -> str:
        return "flwr: the ServerApp exited"


def _unfinished(tmp_path: Path, checkpoints: int) -> Path:
    folder = tmp_path / "runs" / "20260101-000000-run-1"
    (folder / "checkpoints").mkdir(parents=True)
    events = [{"t": 1.0, "event": "run-started", "rounds": 5}]
    (folder / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    for k in range(1, checkpoints + 1):
        (folder / "checkpoints" / f"state-{k:04d}.pt").write_bytes(b"")
    return folder


def test_a_run_whose_coordinator_died_after_a_checkpoint_prints_the_resume_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _unfinished(tmp_path, checkpoints=2)
    app = tmp_path / "my app"

    code = _report(folder, cast(FlwrRun, _Launched()), resume=(app, "fedward"))

    assert code == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "run failed" in said and "state-0002.pt" in said
    command = said.split("to resume:", 1)[1].split("`")[1]
    assert shlex.split(command) == ["fedward", "run", str(app), "fedward", "--resume", str(folder)]


def test_a_run_with_no_checkpoint_is_started_again_not_resumed(tmp_path: Path) -> None:
    folder = _unfinished(tmp_path, checkpoints=0)
    hint = resume_hint(folder, tmp_path, "fedward")
    assert "no checkpoint yet" in hint and "--resume" not in hint
