"""The site's privacy ledger: an append-only, hash-chained SQLite record of every DP release.

Each entry stores exactly what an accountant needs — (noise multiplier, sample rate, steps), Opacus's
accountant history — plus who asked for it (run, round, attempt) and the previous entry's hash. The
site's lifetime ε is recomputed from the whole history of a dataset, across rounds and runs, so it
survives process restarts (Flower starts a fresh ClientApp per message) and can be re-derived by an
auditor with any accountant. Editing or deleting a row breaks the chain (``verify``); truncating the
tail, or editing a row and recomputing every hash after it, is caught by the anchor outside the file
(``ledger_anchor``: the entry count and head the site last wrote, signed under the site's own key),
so the site itself refuses such a ledger even when the coordinator is new.

SQLite triggers refuse UPDATE and DELETE, so an honest mistake cannot rewrite history; the hash chain
makes a deliberate rewrite visible.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fedward.client import ledger_anchor
from fedward.client.ledger_anchor import AnchorError
from fedward.common.errors import FedwardError
from fedward.common.site_messages import SiteMessage

_log = logging.getLogger("fedward.ledger")

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
    # Set when this check adopted a ledger that had no anchor yet: what was trusted, once.
    adopted: str | None = None


class Ledger:
    """One site's ledger file. Cheap to open: open it afresh for every message."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / LEDGER_FILE
        # The open transaction's connection (``transaction``): every read and append inside it.
        self._con: sqlite3.Connection | None = None
        self._written: tuple[bytes, int, str] | None = None
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
        if self._con is not None:  # inside ``transaction``: read what it has written so far
            yield self._con
            return
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
        """The chain (contiguous, every hash recomputed and linked), then the anchor outside it."""
        entries = self.entries()
        chain = self._verify_chain(entries)
        if not chain.ok:
            return chain
        try:
            adopted = self._check_anchor(len(entries), [e.hash for e in entries])
        except AnchorError as exc:
            return VerifyResult(False, len(entries), chain.head, exc.reason, None)
        except OSError as exc:  # a read-only copy, a folder the SuperNode's user cannot write
            reason = f"cannot read or write the anchor beside {self.dir}: {exc.strerror or exc}"
            return VerifyResult(False, len(entries), chain.head, reason, None)
        return VerifyResult(True, len(entries), chain.head, adopted=adopted)

    # ---- the anchor outside the ledger file --------------------------------------------------

    @property
    def key_path(self) -> Path:
        return ledger_anchor.key_path(self.dir)

    @property
    def anchor_path(self) -> Path:
        return ledger_anchor.anchor_path(self.dir)

    def _check_anchor(self, count: int, hashes: Sequence[str]) -> str | None:
        """Raise AnchorError when the ledger does not reach the signed mark; move the mark on when
        the ledger extends it. A ledger with neither key nor anchor is adopted (returns how)."""
        ledger_anchor.finish_rotation(self.dir)
        kpath, apath = self.key_path, self.anchor_path
        if not kpath.exists() and not apath.exists():
            return self._adopt(count, hashes[-1] if hashes else GENESIS)
        if not apath.exists():
            raise AnchorError(
                f"the ledger's anchor {apath} is missing while the site key exists: it was "
                "deleted; restore it from a backup (an auditor should compare the ledger with "
                "the coordinator's last head before the site trains again)"
            )
        key = ledger_anchor.read_key(kpath)
        mark = ledger_anchor.read_anchor(apath)
        ledger_anchor.check(key, mark)
        if count < mark.seq:
            raise AnchorError(
                f"the ledger has {count} entries but the site wrote {mark.seq} (its anchor says "
                f"so): {mark.seq - count} entr{'y was' if mark.seq - count == 1 else 'ies were'} "
                "deleted or the file was truncated or rolled back"
            )
        at_mark = GENESIS if mark.seq == 0 else hashes[mark.seq - 1]
        if at_mark != mark.head:
            raise AnchorError(
                f"entry {mark.seq} is not the one the site wrote (its hash differs from the "
                "signed anchor): entries were edited and the chain recomputed"
            )
        if count > mark.seq:  # a crash between the ledger's commit and the anchor's write
            ledger_anchor.write_anchor(apath, ledger_anchor.sign(key, count, hashes[-1]))
        return None

    def _adopt(self, count: int, head: str) -> str:
        """Anchor a ledger made before anchors existed, trusting it as it stands now."""
        kpath = self.key_path
        key = ledger_anchor.new_key(kpath, exclusive=True)
        ledger_anchor.write_anchor(self.anchor_path, ledger_anchor.sign(key, count, head))
        message = (
            f"adopted: the ledger {self.path} had no anchor; its {count} entries (head "
            f"{head[:12]}) are trusted as they stand now and signed under a new site key "
            f"{kpath} (mode 0600)"
        )
        if count:
            _log.warning("%s", message)
        return message

    def rotate_key(self) -> tuple[str, str]:
        """Verify the ledger under the current key, then re-sign its mark under a new key."""
        result = self.require_valid()
        return ledger_anchor.rotate(self.dir, result.entries, result.head)

    def _verify_chain(self, entries: Sequence[LedgerEntry]) -> VerifyResult:
        prev = GENESIS
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
            what = "anchor check failed" if result.bad_seq is None else "hash chain broken"
            raise LedgerError(
                self.path,
                f"{what}: {result.problem}; the site will not train until an auditor "
                "has looked at it (`fedward site verify`)",
            )
        return result

    # ---- writing -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE): what is read inside it, and what is appended,
        is one consistent ledger that no other process can write to until it commits.

        A budget check and the append it allows therefore never race another writer. The anchor
        moves on once, to the last entry, after the commit. One ``Ledger`` object serves one
        thread (open one per message, as the ClientApp does).
        """
        if self._con is not None:
            raise RuntimeError(f"privacy ledger '{self.path}': a transaction is already open")
        with self._connect() as con:
            con.execute("PRAGMA synchronous = FULL")
            con.execute("BEGIN IMMEDIATE")
            self._con, self._written = con, None
            try:
                yield
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                self._con = None
        written, self._written = self._written, None
        if written is None:
            return
        # After the commit: a crash in between leaves the ledger one entry past the mark, which
        # the next check accepts because that entry extends the signed head.
        try:
            self._advance_anchor(*written)
        except (
            OSError
        ) as exc:  # the entry stands; the next check re-anchors a ledger that extends it
            _log.warning("ledger %s: the anchor was not moved on: %s", self.path, exc)

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
        """Commit one entry (durably, before anything it describes leaves the site); inside an
        open ``transaction`` it commits with that transaction."""
        if self._con is None:
            with self.transaction():
                return self.append(
                    dataset=dataset,
                    run_id=run_id,
                    round=round,
                    attempt=attempt,
                    kind=kind,
                    noise_multiplier=noise_multiplier,
                    sample_rate=sample_rate,
                    steps=steps,
                    delta=delta,
                    max_grad_norm=max_grad_norm,
                    config_hash=config_hash,
                    note=note,
                )
        con = self._con
        row = con.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (1, GENESIS) if row is None else (int(row["seq"]) + 1, str(row["hash"]))
        key = self._anchored_key(con, seq - 1, prev)
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
        self._written = (key, seq, fields["hash"])
        return LedgerEntry(**fields)

    def _anchored_key(self, con: sqlite3.Connection, count: int, head: str) -> bytes:
        """The site key, once the current tail is known to reach the signed mark (under the
        ledger's write lock, so two processes never adopt at once)."""
        ledger_anchor.finish_rotation(self.dir)
        try:
            if not self.key_path.exists() and not self.anchor_path.exists():
                self._adopt(count, head)
                return ledger_anchor.read_key(self.key_path)
            key = ledger_anchor.read_key(self.key_path)
            mark = ledger_anchor.read_anchor(self.anchor_path)
            ledger_anchor.check(key, mark)
        except AnchorError as exc:
            raise LedgerError(self.path, f"anchor check failed: {exc.reason}") from None
        except OSError as exc:
            raise LedgerError(
                self.path,
                f"cannot read or write the anchor beside {self.dir}: {exc.strerror or exc}",
            ) from None
        if mark.seq > count:
            raise LedgerError(
                self.path,
                f"anchor check failed: the ledger has {count} entries but the site wrote "
                f"{mark.seq}; nothing is appended to a truncated ledger (`fedward site verify`)",
            )
        at_mark = GENESIS if mark.seq == 0 else None
        if at_mark is None:
            row = con.execute("SELECT hash FROM entries WHERE seq = ?", (mark.seq,)).fetchone()
            at_mark = None if row is None else str(row["hash"])
        if at_mark != mark.head:
            raise LedgerError(
                self.path,
                f"anchor check failed: entry {mark.seq} is not the one the site wrote; nothing "
                "is appended to a rewritten ledger (`fedward site verify`)",
            )
        return key

    def _advance_anchor(self, key: bytes, seq: int, head: str) -> None:
        try:
            current = ledger_anchor.read_anchor(self.anchor_path)
        except AnchorError:
            current = None
        if current is None or current.seq < seq:  # never move the mark backwards (a racing writer)
            ledger_anchor.write_anchor(self.anchor_path, ledger_anchor.sign(key, seq, head))

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
