"""The ledger's anchor at the site: truncation, deletion and re-chaining fail verification with no
coordinator at all; legacy ledgers are adopted once, saying so; the site key rotates safely."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from fedward.client import ledger_anchor
from fedward.client.cli import register
from fedward.client.ledger import Ledger, LedgerError
from fedward.common.datasets.bundled import write_site_files
from fedward.common.site_config import load_site_config
from tests.conftest import append_releases
from tests.ledger_tampering import TAMPERINGS


def fedward_site(*args: str | Path) -> Result:
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["site", *map(str, args)])


def _spend(ledger: Ledger, n: int = 4) -> None:
    append_releases(ledger, n)


def _ledger(tmp_path: Path, n: int = 4) -> Ledger:
    ledger = Ledger(tmp_path / "state")
    _spend(ledger, n)
    return ledger


def test_a_new_ledger_gets_a_private_key_and_an_anchor_beside_the_state_folder(
    tmp_path: Path,
) -> None:
    ledger = _ledger(tmp_path)
    assert ledger.key_path == tmp_path / "state.ledger-key"
    assert ledger.anchor_path == tmp_path / "state.ledger-anchor"
    assert stat.S_IMODE(ledger.key_path.stat().st_mode) == 0o600
    mark = ledger_anchor.read_anchor(ledger.anchor_path)
    assert (mark.seq, mark.head) == ledger.head()
    result = ledger.verify()
    assert result.ok and result.adopted is None


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_each_rewrite_the_chain_cannot_see_fails_at_the_site(tmp_path: Path, name: str) -> None:
    ledger = _ledger(tmp_path)
    TAMPERINGS[name](ledger.dir)
    fresh = Ledger(ledger.dir)
    assert fresh._verify_chain(fresh.entries()).ok  # the plain hash chain is fooled
    result = fresh.verify()
    assert not result.ok
    says = "edited and the chain recomputed" if name == "edit-and-rechain" else "deleted"
    assert says in (result.problem or "")
    with pytest.raises(LedgerError, match="anchor check failed"):
        fresh.require_valid()
    with pytest.raises(LedgerError, match="anchor check failed"):
        _spend(fresh, 1)  # nothing is appended to a rewritten ledger either


def test_a_ledger_one_entry_past_its_mark_extends_it_and_the_mark_moves_on(
    tmp_path: Path,
) -> None:
    """A crash between the ledger's commit and the anchor's write."""
    ledger = _ledger(tmp_path)
    saved = ledger.anchor_path.read_bytes()
    _spend(ledger, 1)
    ledger.anchor_path.write_bytes(saved)
    assert ledger.verify().ok
    assert ledger_anchor.read_anchor(ledger.anchor_path).seq == 5


def test_a_legacy_ledger_is_adopted_once_saying_what_it_trusts(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.key_path.unlink()
    ledger.anchor_path.unlink()
    first = Ledger(ledger.dir).verify()
    assert first.ok and first.adopted and "trusted as they stand now" in first.adopted
    assert "4 entries" in first.adopted
    assert Ledger(ledger.dir).verify().adopted is None
    TAMPERINGS["truncate-last-row"](ledger.dir)
    assert not Ledger(ledger.dir).verify().ok


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda led: led.anchor_path.unlink(), "anchor .* is missing while the site key exists"),
        (lambda led: led.key_path.unlink(), "site key .* is missing"),
        (lambda led: os.chmod(led.key_path, 0o644), "readable by others"),
        (
            lambda led: ledger_anchor.new_key(led.key_path),
            "does not verify under the site key \\(signed by another key\\)",
        ),
    ],
    ids=["anchor-deleted", "key-deleted", "key-world-readable", "key-replaced"],
)
def test_a_damaged_anchor_or_key_is_refused(
    tmp_path: Path, damage: Callable[[Ledger], None], says: str
) -> None:
    ledger = _ledger(tmp_path)
    damage(ledger)
    result = Ledger(ledger.dir).verify()
    assert not result.ok
    assert result.problem is not None
    assert re.search(says, result.problem), result.problem


def test_rotation_replaces_the_key_and_the_ledger_still_verifies(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    before = ledger.key_path.read_bytes()
    old, new = ledger.rotate_key()
    assert old != new and ledger.key_path.read_bytes() != before
    assert stat.S_IMODE(ledger.key_path.stat().st_mode) == 0o600
    assert ledger_anchor.read_anchor(ledger.anchor_path).key_id == new
    assert Ledger(ledger.dir).verify().ok
    _spend(ledger, 1)
    assert Ledger(ledger.dir).verify().ok
    # The old key no longer signs anything: an anchor forged under it is refused.
    old_key = bytes.fromhex(before.decode().strip())
    ledger_anchor.write_anchor(ledger.anchor_path, ledger_anchor.sign(old_key, 5, ledger.head()[1]))
    assert not Ledger(ledger.dir).verify().ok


def test_rotation_of_a_tampered_ledger_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    TAMPERINGS["edit-and-rechain"](ledger.dir)
    key, anchor = ledger.key_path.read_bytes(), ledger.anchor_path.read_bytes()
    with pytest.raises(LedgerError, match="anchor check failed"):
        Ledger(ledger.dir).rotate_key()
    assert (ledger.key_path.read_bytes(), ledger.anchor_path.read_bytes()) == (key, anchor)


def test_a_rotation_interrupted_after_re_signing_is_finished(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    pending = ledger.key_path.with_name(ledger.key_path.name + ".new")
    key = ledger_anchor.new_key(pending)
    seq, head = ledger.head()
    ledger_anchor.write_anchor(ledger.anchor_path, ledger_anchor.sign(key, seq, head))
    assert Ledger(ledger.dir).verify().ok
    assert not pending.exists() and ledger_anchor.read_key(ledger.key_path) == key


def test_a_rotation_interrupted_before_re_signing_is_undone(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    key = ledger_anchor.read_key(ledger.key_path)
    pending = ledger.key_path.with_name(ledger.key_path.name + ".new")
    ledger_anchor.new_key(pending)
    assert Ledger(ledger.dir).verify().ok
    assert not pending.exists() and ledger_anchor.read_key(ledger.key_path) == key


def test_site_verify_and_rotate_key_on_the_command_line(tmp_path: Path) -> None:
    config = write_site_files("heart-disease", tmp_path / "sites")[0]
    state = load_site_config(config).state_path
    _spend(Ledger(state), 4)
    ok = fedward_site("verify", "--site-config", config)
    assert ok.exit_code == 0, ok.output
    rotated = fedward_site("rotate-key", "--site-config", config)
    assert rotated.exit_code == 0 and "Rotated" in rotated.output, rotated.output
    TAMPERINGS["truncate-last-row"](state)
    broken = fedward_site("verify", "--site-config", config)
    assert broken.exit_code == 1 and "BROKEN" in broken.output and "deleted" in broken.output
    refused = fedward_site("rotate-key", "--site-config", config)
    assert refused.exit_code == 1 and "NOT ROTATED" in refused.output


def test_a_simulated_site_trains_with_a_key_and_refuses_once_its_ledger_is_truncated(
    tmp_path: Path,
) -> None:
    """The ClientApp itself, on a simulated site: its key and anchor live beside its state folder
    (in the simulation's state root), and a ledger cut after training is refused by the site with
    no ledger head from the coordinator."""
    from flwr.app import RecordDict

    from fedward.client.app import app
    from fedward.common.protocol import REPLY
    from fedward.common.run_config import RunConfig
    from tests.conftest import initial_arrays, make_context, make_message, wire_config

    run = RunConfig.model_validate({"rounds": 2, "evaluation": {"bootstrap": 20}})
    root = tmp_path / "sim-state"

    def train(server_round: int) -> dict[str, object]:
        cfg = wire_config(run, state_dir=str(root), server_round=server_round)
        content = RecordDict({"arrays": initial_arrays(run), "config": cfg})
        reply = app(
            make_message(content, "train"), make_context({"partition-id": 0, "num-partitions": 4})
        )
        return dict(reply.content[REPLY])

    assert train(1)["status"] == "ok"
    key = root / "cleveland.ledger-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (root / "cleveland.ledger-anchor").is_file()
    entries = len(Ledger(root / "cleveland").entries())
    TAMPERINGS["truncate-last-row"](root / "cleveland")
    info = train(2)
    assert info["status"] == "refused" and "integrity check" in str(info["reason"])
    assert len(Ledger(root / "cleveland").entries()) == entries - 1  # nothing appended
