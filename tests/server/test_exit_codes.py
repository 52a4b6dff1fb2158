"""The exit codes of `fedward simulate` and `fedward run`, from the run record a run leaves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from fedward.server.exit_codes import (
    EXIT_FAILED,
    EXIT_FINISHED,
    EXIT_NO_MODEL,
    EXIT_SITES_LEFT_OUT,
    closing_line,
    exit_code,
    read_record,
)

if TYPE_CHECKING:
    from fedward.server.flwr_process import FlwrRun

SITES = ["cleveland", "hungary", "switzerland", "va-long-beach"]


def record(status: str = "finished", left: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "stopped_reason": None
        if status == "finished"
        else "round 2: only 0 site(s) can still take part, fewer than the run's minimum of 2; "
        f"left out: {', '.join(f'{s} (refused: schema differs)' for s in left) or 'none'}",
        "participating": [s for s in SITES if s not in left],
        "left_out": [
            {"site": s, "status": "refused", "reason": "schema differs", "details": {}}
            for s in left
        ],
        **extra,
    }


def test_every_outcome_has_its_own_code() -> None:
    codes = {EXIT_FINISHED, EXIT_FAILED, EXIT_NO_MODEL, EXIT_SITES_LEFT_OUT}
    assert len(codes) == 4 and EXIT_FINISHED == 0


def test_success_only_when_every_site_took_part() -> None:
    assert exit_code(record()) == EXIT_FINISHED


def test_a_model_without_some_sites_is_not_success() -> None:
    assert exit_code(record(left=("switzerland", "va-long-beach"))) == EXIT_SITES_LEFT_OUT


@pytest.mark.parametrize("left", [(), ("hungary",), tuple(SITES)])
def test_no_final_model_is_a_failure_whoever_was_left_out(left: tuple[str, ...]) -> None:
    assert exit_code(record("stopped", left)) == EXIT_NO_MODEL


def test_no_run_record_is_a_failure() -> None:
    assert exit_code(None) == EXIT_FAILED


def test_read_record_is_none_for_a_missing_or_torn_record(tmp_path: Path) -> None:
    assert read_record(tmp_path) is None
    (tmp_path / "run_record.json").write_text('{"status": "fini')
    assert read_record(tmp_path) is None
    (tmp_path / "run_record.json").write_text('{"status": "finished", "left_out": []}')
    assert exit_code(read_record(tmp_path)) == EXIT_FINISHED


def test_the_last_line_says_which_file_lists_the_left_out_sites(tmp_path: Path) -> None:
    line = closing_line(tmp_path, record(left=("switzerland", "va-long-beach")))
    assert "exit 4" in line and "2 of 4 sites" in line
    assert "switzerland, va-long-beach" in line
    assert str(tmp_path / "run_record.json") in line and "left_out" in line


def test_the_last_line_of_a_run_without_a_model_says_why_and_where(tmp_path: Path) -> None:
    line = closing_line(tmp_path, record("stopped", ("hungary",)))
    assert line.startswith("stopped, no model (exit 3): round 2: only 0 site(s) can still take")
    assert "1 site(s) left out (hungary)" in line and "schema differs" not in line
    assert str(tmp_path / "run_record.json") in line and "left_out" in line
    failed = closing_line(tmp_path, None, logs="see the SuperLink's log")
    assert "exit 1" in failed and str(tmp_path / "progress.jsonl") in failed
    assert failed.endswith("see the SuperLink's log")


def test_the_last_line_of_a_full_run_names_the_model(tmp_path: Path) -> None:
    line = closing_line(tmp_path, record())
    assert "all 4 sites took part (exit 0)" in line and str(tmp_path / "model.pt") in line
    assert "NOT RELEASABLE" not in line


def test_the_last_line_never_lets_a_model_that_failed_its_audit_look_releasable(
    tmp_path: Path,
) -> None:
    import json

    (tmp_path / "audit.json").write_text(json.dumps({"verdict": "pass"}))
    assert "NOT RELEASABLE" not in closing_line(tmp_path, record())
    (tmp_path / "audit.json").write_text(
        json.dumps({"verdict": "fail: no DP guarantee, leak observed"})
    )
    line = closing_line(tmp_path, record())
    assert line.endswith(
        "; NOT RELEASABLE: its membership audit did not pass (fail: no DP guarantee, leak "
        f"observed); see {tmp_path / 'audit.html'}"
    )
    assert "NOT RELEASABLE" in closing_line(tmp_path, record(left=("switzerland",)))


class _Launched:
    """What `fedward run`'s report asks of the `flwr run` it launched."""

    def tail(self) -> str:
        return "flwr: the ServerApp exited"


def _folder(tmp_path: Path, events: list[dict[str, Any]], rec: dict[str, Any] | None) -> Path:
    import json

    folder = tmp_path / "20260101-000000-run-1"
    folder.mkdir()
    lines = [{"t": 1.0, "event": "run-started", "rounds": 2}, *events]
    (folder / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    if rec is not None:
        (folder / "run_record.json").write_text(json.dumps({"sites": [], **rec}))
        (folder / "metrics.json").write_text(json.dumps({"test": None}))
    return folder


@pytest.mark.parametrize(
    ("events", "rec", "code", "said"),
    [
        ([{"t": 2.0, "event": "run-finished"}], record(), 0, "all 4 sites took part"),
        (
            [{"t": 2.0, "event": "run-finished"}],
            record(left=("switzerland",)),
            4,
            "switzerland left out (refused): schema differs",
        ),
        (
            [{"t": 2.0, "event": "run-stopped", "reason": "only 0 site(s) can still take part"}],
            record("stopped", tuple(SITES)),
            3,
            "hungary left out (refused)",
        ),
        ([], None, 1, "failed, no model (exit 1)"),
    ],
)
def test_fedward_run_exits_with_the_runs_code_and_says_what_to_do_last(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    events: list[dict[str, Any]],
    rec: dict[str, Any] | None,
    code: int,
    said: str,
) -> None:
    from fedward.server.run_cli import _report

    folder = _folder(tmp_path, events, rec)
    assert _report(folder, cast("FlwrRun", _Launched())) == code
    out = " ".join(capsys.readouterr().out.split())
    assert said in out
    last = out.rsplit("run folder: ", 1)[1]
    assert f"(exit {code})" in last
