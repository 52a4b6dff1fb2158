"""The coordinator's audit log: append-only across restarts, chained, durable line by line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fedward.server import coordinator_audit
from fedward.server.coordinator_audit import CoordinatorAudit


def test_a_restarted_coordinator_appends_and_never_truncates(tmp_path: Path) -> None:
    path = tmp_path / "state" / "coordinator_audit.jsonl"
    CoordinatorAudit(path).record("run-started", run_id="r1")
    CoordinatorAudit(path).record("run-resumed", run_id="r1", from_round=2)
    entries = CoordinatorAudit(path).read().entries
    assert [e["event"] for e in entries] == ["run-started", "run-resumed"]
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[1]["prev_hash"] == entries[0]["hash"]
    assert CoordinatorAudit(path).verify() is None


def test_every_line_is_fsynced_before_record_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(coordinator_audit.os, "fsync", spy)
    path = tmp_path / "audit.jsonl"
    CoordinatorAudit(path).record("site-admitted", site="cleveland")
    CoordinatorAudit(path).record("site-refused", site="va-long-beach")
    assert synced.count(str(path)) == 2


def test_an_edited_or_removed_line_breaks_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = CoordinatorAudit(path)
    for site in ("cleveland", "hungary", "switzerland"):
        log.record("site-admitted", site=site)
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["site"] = "va-long-beach"
    path.write_text("\n".join([lines[0], json.dumps(edited), lines[2]]) + "\n")
    assert log.verify() == "entry 2 was edited (its hash does not match)"
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert log.verify() == "entry 2 is missing (found 3)"


def test_a_line_torn_by_a_crash_is_closed_off_not_extended(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = CoordinatorAudit(path)
    log.record("run-started", run_id="r1")
    with path.open("a") as fh:
        fh.write('{"seq": 2, "event": "site-adm')  # SIGKILL mid-write
    log.record("run-resumed", run_id="r1")
    read = log.read()
    assert read.torn_lines == 1
    assert [e["event"] for e in read.entries] == ["run-started", "run-resumed"]
    assert read.entries[1]["seq"] == 2 and log.verify() is None
