"""The privacy ledger: append-only, hash-chained, and the source of every ε the site reports."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from fedward.client import ledger as ledger_module
from fedward.client.accounting import epsilon_of
from fedward.client.ledger import GENESIS, Ledger, LedgerError


def _spend(ledger: Ledger, n: int, *, run: str = "r1", sigma: float = 1.3, q: float = 0.05) -> None:
    for i in range(n):
        ledger.append(
            dataset="ds",
            run_id=run,
            round=i + 1,
            attempt=f"{run}-{i}",
            kind="dp-sgd",
            noise_multiplier=sigma,
            sample_rate=q,
            steps=20,
            delta=1e-4,
            max_grad_norm=1.0,
        )


def test_entries_chain_from_genesis(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    _spend(ledger, 3)
    entries = ledger.entries()
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert ledger.verify().ok and ledger.head() == (3, entries[-1].hash)


def test_epsilon_from_the_ledger_equals_opacus_accountant(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    _spend(ledger, 4, run="r1", sigma=1.1, q=0.08)
    _spend(ledger, 3, run="r2", sigma=2.0, q=0.3)
    ledger.append(
        dataset="ds",
        run_id="r2",
        round=0,
        attempt="pre",
        kind="gaussian-release",
        noise_multiplier=5.0,
        sample_rate=1.0,
        steps=1,
        delta=1e-4,
    )
    history = ledger.history("ds")
    opacus = RDPAccountant()
    opacus.history = list(history)
    expected = opacus.get_epsilon(delta=1e-5)
    assert epsilon_of(history, 1e-5, "rdp") == pytest.approx(expected, abs=1e-6)


def test_updates_and_deletes_are_refused_by_the_database(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    _spend(ledger, 1)
    con = sqlite3.connect(ledger.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE entries SET noise_multiplier = 100")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM entries")
    con.close()


def _tamper(path: Path, sql: str) -> None:
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER entries_no_update")
    con.execute("DROP TRIGGER entries_no_delete")
    con.execute(sql)
    con.commit()
    con.close()


def test_an_edited_row_breaks_the_chain(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    _spend(ledger, 3)
    _tamper(ledger.path, "UPDATE entries SET noise_multiplier = 9.9 WHERE seq = 2")
    result = ledger.verify()
    assert not result.ok and result.bad_seq == 2 and "edited" in (result.problem or "")
    with pytest.raises(LedgerError, match="hash chain broken"):
        ledger.require_valid()


def test_a_deleted_middle_row_is_detected(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    _spend(ledger, 3)
    _tamper(ledger.path, "DELETE FROM entries WHERE seq = 2")
    result = ledger.verify()
    assert not result.ok and "missing" in (result.problem or "")


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ledger.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="not a readable ledger") as err:
        Ledger(tmp_path)
    assert "ledger.sqlite" in str(err.value) and "never delete it" in str(err.value)


def test_a_locked_ledger_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(tmp_path)
    monkeypatch.setattr(ledger_module, "LOCK_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LedgerError, match="locked by another process"):
            _spend(ledger, 1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    _spend(ledger, 1)  # usable again once released
    assert ledger.head()[0] == 1


def test_export_writes_every_entry(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    _spend(ledger, 2)
    out = ledger.export(tmp_path / "ledger.csv", "csv")
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("seq,")
