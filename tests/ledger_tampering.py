"""The three ways to rewrite a privacy ledger that its hash chain alone cannot see, as a forger with
write access to ``ledger.sqlite`` (but not the site key) would do them: triggers dropped, rows
removed or edited, and every hash after the change recomputed so the chain verifies again."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fedward.client.ledger import GENESIS, LEDGER_FILE, Ledger, entry_hash


def _rewrite(state_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Replace every entry by ``rows``, renumbered from 1 and re-chained from genesis."""
    prev = GENESIS
    for seq, row in enumerate(rows, start=1):
        row["seq"] = seq
        row["prev_hash"] = prev
        row["hash"] = entry_hash(row)
        prev = row["hash"]
    con = sqlite3.connect(state_dir / LEDGER_FILE)
    con.execute("DROP TRIGGER IF EXISTS entries_no_update")
    con.execute("DROP TRIGGER IF EXISTS entries_no_delete")
    con.execute("DELETE FROM entries")
    for row in rows:
        con.execute(
            f"INSERT INTO entries ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
    con.commit()
    con.close()


def _rows(state_dir: Path) -> list[dict[str, Any]]:
    return [asdict(e) for e in Ledger(state_dir).entries()]


def truncate_last_row(state_dir: Path) -> None:
    """The last entry deleted: the chain is still intact up to the new tail."""
    _rewrite(state_dir, _rows(state_dir)[:-1])


def delete_middle_row(state_dir: Path) -> None:
    """A middle entry deleted, the rest renumbered and re-chained."""
    rows = _rows(state_dir)
    assert len(rows) >= 3, "needs at least three entries"
    del rows[len(rows) // 2]
    _rewrite(state_dir, rows)


def edit_and_rechain(state_dir: Path) -> None:
    """Every spend made smaller (steps = 1) and the chain recomputed: the same number of entries."""
    rows = _rows(state_dir)
    for row in rows:
        if row["steps"] > 1:
            row["steps"] = 1
    _rewrite(state_dir, rows)


TAMPERINGS = {
    "truncate-last-row": truncate_last_row,
    "delete-middle-row": delete_middle_row,
    "edit-and-rechain": edit_and_rechain,
}
