"""The site's privacy ledger: an append-only, hash-chained SQLite record of every DP release.

Each entry stores exactly what an accountant needs — (noise multiplier, sample rate, steps), Opacus's
accountant history — plus who asked for it (run, round, attempt) and the previous entry's hash. The
site's lifetime ε is recomputed from the whole history of a dataset, across rounds and runs, so it
survives process restarts (Flower starts a fresh ClientApp per message) and can be re-derived by an
auditor with any accountant. Editing or deleting a row breaks the chain (``verify``); truncating the
tail is caught by the coordinator, which remembers every site's last head hash.

SQLite triggers refuse UPDATE and DELETE, so an honest mistake cannot rewrite history; the hash chain
makes a deliberate rewrite visible.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fedward.common.errors import FedwardError
from fedward.common.site_messages import SiteMessage

LEDGER_FILE = "ledger.sqlite"
GENESIS = "0" * 64
SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 10.0

EntryKind = Literal["dp-sgd", "gaussian-release", "plan"]
SPENDING_KINDS: tuple[str, ...] = ("dp-sgd", "gaussian-release")

_COLUMNS = (
    "seq",
    "created_at",
    "dataset",
    "run_id",
    "round",
    "attempt",
    "kind",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "max_grad_norm",
    "delta",
    "config_hash",
    "note",
    "prev_hash",
)

_DDL = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    dataset TEXT NOT NULL,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    attempt TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('dp-sgd', 'gaussian-release', 'plan')),
    noise_multiplier REAL NOT NULL,
    sample_rate REAL NOT NULL,
    steps INTEGER NOT NULL,
    max_grad_norm REAL,
    delta REAL NOT NULL,
    config_hash TEXT NOT NULL,
    note TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS approvals (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    approved_at TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
"""


class LedgerError(FedwardError):
    """The ledger cannot be read, is locked, or its hash chain is broken."""

    def __init__(self, path: str | Path, reason: str, *, site: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.site = site
        super().__init__(f"privacy ledger '{self.path}': {reason}")

    def _default_message(self, site: str) -> SiteMessage:
        return SiteMessage("ledger-invalid", {"site": site})


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    created_at: str
    dataset: str
    run_id: str
    round: int
    attempt: str
    kind: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float | None
    delta: float
    config_hash: str
    note: str
    prev_hash: str
    hash: str

    @property
    def spends(self) -> bool:
        return self.kind in SPENDING_KINDS and self.steps > 0

    def history_item(self) -> tuple[float, float, int]:
        return (self.noise_multiplier, self.sample_rate, self.steps)


def entry_hash(fields: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of every column but the hash itself (prev_hash included)."""
    payload = {k: fields[k] for k in _COLUMNS}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    head: str
    problem: str | None = None
    bad_seq: int | None = None


class Ledger:
    """One site's ledger file. Cheap to open: open it afresh for every message."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / LEDGER_FILE
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(self.path, f"cannot create the state folder: {exc}") from exc
        with self._connect() as con:
            try:
                ready = con.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'approvals'"
                ).fetchone()
                if ready is None:  # a new ledger: create it (reads never take a write lock)
                    con.executescript(_DDL)
            except sqlite3.DatabaseError as exc:
                raise self._db_error(exc) from exc

    # ---- plumbing ------------------------------------------------------------------------------

    def _db_error(self, exc: sqlite3.Error) -> LedgerError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return LedgerError(
                self.path,
                f"locked by another process for more than {LOCK_TIMEOUT_S:g} s; "
                "wait for it to finish or stop it, then retry",
            )
        return LedgerError(
            self.path,
            f"not a readable ledger ({text}); restore it from a backup — never delete it: "
            "deleting the ledger does not reset the budget, the coordinator detects it",
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._db_error(exc) from exc
        try:
            con.row_factory = sqlite3.Row
            yield con
        except sqlite3.Error as exc:
            raise self._db_error(exc) from exc
        finally:
            con.close()

    # ---- reading -------------------------------------------------------------------------------

    def entries(self, dataset: str | None = None) -> list[LedgerEntry]:
        with self._connect() as con:
            rows = con.execute("SELECT * FROM entries ORDER BY seq").fetchall()
        try:
            out = [LedgerEntry(**dict(r)) for r in rows]
        except TypeError:
            # Another program's table, or one whose columns were altered: never read as empty.
            columns = ", ".join(rows[0].keys()) if rows else "?"
            raise LedgerError(
                self.path,
                f"its entries table does not have the ledger's columns ({columns}); restore the "
                "ledger from a backup — the site will not train on a history it cannot read",
            ) from None
        return [e for e in out if dataset is None or e.dataset == dataset]

    def history(self, dataset: str, run_id: str | None = None) -> list[tuple[float, float, int]]:
        """Opacus accountant history of every release from ``dataset`` (optionally one run's)."""
        return [
            e.history_item()
            for e in self.entries(dataset)
            if e.spends and (run_id is None or e.run_id == run_id)
        ]

    def head(self) -> tuple[int, str]:
        with self._connect() as con:
            row = con.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS) if row is None else (int(row["seq"]), str(row["hash"]))

    def hash_at(self, seq: int) -> str | None:
        if seq == 0:
            return GENESIS
        with self._connect() as con:
            row = con.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row["hash"])

    def verify(self) -> VerifyResult:
        """Walk the chain: contiguous sequence numbers, each hash recomputed and linked."""
        prev = GENESIS
        entries = self.entries()
        for i, e in enumerate(entries, start=1):
            if e.seq != i:
                return VerifyResult(False, len(entries), prev, f"entry {i} is missing", i)
            if e.prev_hash != prev:
                return VerifyResult(
                    False,
                    len(entries),
                    prev,
                    f"entry {e.seq} does not link to entry {e.seq - 1}",
                    e.seq,
                )
            try:
                recomputed = entry_hash(asdict(e))
            except (TypeError, ValueError):  # a value SQLite holds but JSON cannot: inf, bytes
                recomputed = None
            if recomputed != e.hash:
                return VerifyResult(
                    False,
                    len(entries),
                    prev,
                    f"entry {e.seq} was edited (its hash does not match)",
                    e.seq,
                )
            prev = e.hash
        return VerifyResult(True, len(entries), prev)

    def require_valid(self) -> VerifyResult:
        result = self.verify()
        if not result.ok:
            raise LedgerError(
                self.path,
                f"hash chain broken: {result.problem}; the site will not train until an auditor "
                "has looked at it (`fedward site verify`)",
            )
        return result

    # ---- writing -------------------------------------------------------------------------------

    def append(
        self,
        *,
        dataset: str,
        run_id: str,
        round: int,
        attempt: str,
        kind: EntryKind,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        delta: float,
        max_grad_norm: float | None = None,
        config_hash: str = "",
        note: str = "",
    ) -> LedgerEntry:
        """Commit one entry (durably, before anything it describes leaves the site)."""
        with self._connect() as con:
            con.execute("PRAGMA synchronous = FULL")
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute(
                    "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, prev = (1, GENESIS) if row is None else (int(row["seq"]) + 1, str(row["hash"]))
                fields: dict[str, Any] = {
                    "seq": seq,
                    "created_at": datetime.now(UTC).isoformat(),
                    "dataset": dataset,
                    "run_id": run_id,
                    "round": int(round),
                    "attempt": attempt,
                    "kind": kind,
                    "noise_multiplier": float(noise_multiplier),
                    "sample_rate": float(sample_rate),
                    "steps": int(steps),
                    "max_grad_norm": None if max_grad_norm is None else float(max_grad_norm),
                    "delta": float(delta),
                    "config_hash": config_hash,
                    "note": note,
                    "prev_hash": prev,
                }
                fields["hash"] = entry_hash(fields)
                con.execute(
                    f"INSERT INTO entries ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
                    tuple(fields.values()),
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return LedgerEntry(**fields)

    # ---- approvals (run configs and code the site operator approved) ---------------------------

    def approve(self, kind: str, value: str, *, by: str, note: str = "") -> None:
        with self._connect() as con:
            con.execute(
                "INSERT OR IGNORE INTO approvals (kind, value, approved_at, approved_by, note) "
                "VALUES (?, ?, ?, ?, ?)",
                (kind, value, datetime.now(UTC).isoformat(), by, note),
            )

    def is_approved(self, kind: str, value: str) -> bool:
        with self._connect() as con:
            row = con.execute(
                "SELECT 1 FROM approvals WHERE kind = ? AND value = ?", (kind, value)
            ).fetchone()
        return row is not None

    def approvals(self) -> list[dict[str, str]]:
        with self._connect() as con:
            return [dict(r) for r in con.execute("SELECT * FROM approvals ORDER BY approved_at")]

    # ---- export for auditors -------------------------------------------------------------------

    def export(self, path: str | Path, fmt: Literal["json", "csv"] = "json") -> Path:
        p = Path(path)
        rows = [asdict(e) for e in self.entries()]
        if fmt == "json":
            p.write_text(json.dumps({"ledger": str(self.path), "entries": rows}, indent=2) + "\n")
        else:
            with p.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=[*_COLUMNS, "hash"])
                writer.writeheader()
                writer.writerows(rows)
        return p


def runs_in(entries: Sequence[LedgerEntry]) -> list[str]:
    seen: dict[str, None] = {}
    for e in entries:
        seen.setdefault(e.run_id, None)
    return list(seen)
