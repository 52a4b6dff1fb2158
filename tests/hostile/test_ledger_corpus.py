"""Damaged privacy ledgers: each refused with a LedgerError saying what is wrong, and no spend lost.

A refused run is better than a reset budget: whatever happened to the file, opening it must never
start a fresh history over it, and the error names the ledger file and the damage.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from flwr.app import RecordDict

from fedward.client.app import app
from fedward.client.ledger import LEDGER_FILE, Ledger, LedgerError
from fedward.common.evaluation_config import EvaluationConfig
from fedward.common.protocol import REPLY
from fedward.common.run_config import RunConfig
from tests.conftest import append_releases, initial_arrays, make_context, make_message, wire_config


def _spend(ledger: Ledger, n: int = 3, dataset: str = "ds") -> None:
    append_releases(ledger, n, dataset=dataset)


def _tamper(sql: str) -> Callable[[Path], None]:
    """Edit the database as someone bypassing the ledger would: triggers dropped first."""

    def damage(path: Path) -> None:
        con = sqlite3.connect(path)
        con.execute("DROP TRIGGER entries_no_update")
        con.execute("DROP TRIGGER entries_no_delete")
        con.executescript(sql)
        con.commit()
        con.close()

    return damage


def _truncate(keep: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: keep(len(data))])

    return damage


def _replace_with_export(path: Path) -> None:
    rows = [dict(e.__dict__) for e in Ledger(path.parent).entries()]
    path.write_text(json.dumps({"entries": rows}))


def _rehash_row_two(path: Path) -> None:
    """A careful forger: lower row 2's steps and recompute that row's own hash."""
    from dataclasses import asdict

    from fedward.client.ledger import entry_hash

    _tamper("UPDATE entries SET steps = 1 WHERE seq = 2")(path)
    entry = Ledger(path.parent).entries()[1]
    fields = asdict(entry)
    con = sqlite3.connect(path)
    con.execute("UPDATE entries SET hash = ? WHERE seq = 2", (entry_hash(fields),))
    con.commit()
    con.close()


# (damage to a three-entry ledger, words the error must say)
CASES = [
    pytest.param(_replace_with_export, "not a readable ledger", id="json-export-in-its-place"),
    pytest.param(_truncate(lambda n: n // 2), "malformed", id="truncated-to-half"),
    pytest.param(_truncate(lambda n: 100), "malformed", id="truncated-to-100-bytes"),
    pytest.param(
        _tamper("UPDATE entries SET noise_multiplier = 9.9 WHERE seq = 2"),
        "entry 2 was edited",
        id="noise-multiplier-raised",
    ),
    pytest.param(
        _tamper("UPDATE entries SET steps = 0 WHERE seq = 3"),
        "entry 3 was edited",
        id="spend-zeroed-on-the-last-row",
    ),
    pytest.param(_rehash_row_two, "entry 3 does not link to entry 2", id="row-edited-and-rehashed"),
    pytest.param(
        _tamper("UPDATE entries SET sample_rate = 9e999 WHERE seq = 2"),
        "entry 2 was edited",
        id="sample-rate-set-to-infinity",
    ),
    pytest.param(
        _tamper("UPDATE entries SET steps = X'00ff' WHERE seq = 1"),
        "entry 1 was edited",
        id="steps-replaced-by-a-blob",
    ),
    pytest.param(
        _tamper("DELETE FROM entries WHERE seq = 1"), "entry 1 is missing", id="first-row-deleted"
    ),
    pytest.param(
        _tamper("DELETE FROM entries WHERE seq = 2"), "entry 2 is missing", id="middle-row-deleted"
    ),
    pytest.param(
        _tamper("DROP TABLE entries"), "no such table: entries", id="entries-table-dropped"
    ),
    pytest.param(
        _tamper("ALTER TABLE entries DROP COLUMN note"),
        "does not have the ledger's columns",
        id="column-dropped",
    ),
]


@pytest.mark.parametrize(("damage", "says"), CASES)
def test_damaged_ledger_is_refused_naming_file_and_damage_and_nothing_is_reset(
    tmp_path: Path, damage: Callable[[Path], None], says: str
) -> None:
    _spend(Ledger(tmp_path))
    path = tmp_path / LEDGER_FILE
    damage(path)
    damaged = path.read_bytes()
    with pytest.raises(LedgerError) as err:
        Ledger(tmp_path).require_valid()
    assert str(path) in str(err.value) and says in str(err.value)
    # A refused run, never a fresh ledger: the damaged file is left exactly as it was found.
    assert path.read_bytes() == damaged


def test_a_ledger_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).mkdir()
    with pytest.raises(LedgerError, match="unable to open database file") as err:
        Ledger(tmp_path)
    assert LEDGER_FILE in str(err.value)


def test_a_state_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("not a folder")
    with pytest.raises(LedgerError, match="cannot create the state folder") as err:
        Ledger(state)
    assert str(state) in str(err.value)


def test_a_site_with_a_deleted_ledger_row_refuses_to_train_and_keeps_its_history(
    tmp_path: Path,
) -> None:
    run = RunConfig(rounds=2, evaluation=EvaluationConfig(bootstrap=20))
    state = tmp_path / "sim-state"
    ledger = Ledger(state / "cleveland")
    _spend(ledger, dataset="cleveland")
    _tamper("DELETE FROM entries WHERE seq = 2")(ledger.path)
    content = RecordDict(
        {"arrays": initial_arrays(run), "config": wire_config(run, state_dir=str(state))}
    )
    reply = app(
        make_message(content, "train"), make_context({"partition-id": 0, "num-partitions": 4})
    )
    info = dict(reply.content[REPLY])
    assert info["status"] == "refused" and info["site"] == "cleveland"
    # What is wrong ("entry 2 is missing") and where stay in the site's log and `site verify`.
    assert "integrity check" in str(info["reason"]) and LEDGER_FILE not in str(info["reason"])
    assert "arrays" not in reply.content
    assert [e.seq for e in Ledger(state / "cleveland").entries()] == [1, 3]  # nothing added
