"""The coordinator's own audit log: an append-only, hash-chained JSONL of what the coordinator did.

Runs started, resumed, refused a resume, stopped and finished, and sites admitted or refused, one
JSON object per line, each fsynced before the call returns, so a SIGKILL loses at most the line being
written. The file is only ever opened for appending: resuming a run adds to it, never truncates it.
Each line carries its sequence number and the previous line's hash (like the sites' ledgers), so a
deleted or edited line is visible to ``verify``; a torn last line (a crash mid-write) is reported by
``read`` and closed off by the next append rather than glued to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedward.common.durable_files import fsync_dir

AUDIT_FILE = "coordinator_audit.jsonl"
GENESIS = "0" * 64


def _line_hash(entry: dict[str, Any]) -> str:
    payload = {k: v for k, v in entry.items() if k != "hash"}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class AuditRead:
    entries: list[dict[str, Any]]
    torn_lines: int  # lines that are not whole JSON objects (a write cut short by a crash)


class CoordinatorAudit:
    """One coordinator's audit log file (shared by every run that coordinator state folder sees)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> AuditRead:
        """Every whole entry, in order; torn lines are counted, never raised."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return AuditRead([], 0)
        entries: list[dict[str, Any]] = []
        torn = 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                torn += 1
                continue
            if isinstance(entry, dict):
                entries.append(entry)
            else:
                torn += 1
        return AuditRead(entries, torn)

    def _head(self) -> tuple[int, str]:
        entries = self.read().entries
        for entry in reversed(entries):
            if "seq" in entry and "hash" in entry:
                return int(entry["seq"]), str(entry["hash"])
        return 0, GENESIS

    def record(self, event: str, **data: Any) -> dict[str, Any]:
        """Append one event and fsync it (and, for a new file, its folder) before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.exists()
        seq, prev = self._head()
        entry: dict[str, Any] = {
            "seq": seq + 1,
            "t": round(time.time(), 3),
            "event": event,
            **data,
            "prev_hash": prev,
        }
        entry["hash"] = _line_hash(entry)
        line = json.dumps(entry, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:
                # A line cut short by a crash has no newline: close it off, never extend it.
                with self.path.open("rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        line = "\n" + line
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:
            fsync_dir(self.path.parent)
        return entry

    def verify(self) -> str | None:
        """The first problem in the chain (a line removed, edited or reordered), else None."""
        prev, expected = GENESIS, 1
        for entry in self.read().entries:
            if entry.get("seq") != expected:
                return f"entry {expected} is missing (found {entry.get('seq')})"
            if entry.get("prev_hash") != prev:
                return f"entry {expected} does not link to entry {expected - 1}"
            if _line_hash(entry) != entry.get("hash"):
                return f"entry {expected} was edited (its hash does not match)"
            prev, expected = str(entry["hash"]), expected + 1
        return None
