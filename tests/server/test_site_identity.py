"""Identities bound to node keys: the coordinator's register says which key speaks for which site.

A reply is the registered site's whatever name it reports; one claiming another site's name is
refused and named, never observed as that site's ledger; an unregistered key is sent nothing; and
each site receives only its own ledger head.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.primitives.asymmetric import public_key_to_bytes
from typer.testing import CliRunner

from fedward.client.app import app
from fedward.common.flower_compat import NodeInfo, set_task_identity
from fedward.common.protocol import KEY_LEDGER_HEADS
from fedward.common.run_config import RunConfig
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.run_cli import coordinator_app
from fedward.server.run_folder import PROGRESS_FILE, RunFolder
from fedward.server.site_registry import SiteRegistry, SiteRegistryError, key_fingerprint
from fedward.server.site_tracking import SiteTracking
from tests.conftest import initial_arrays, make_context, make_message, wire_config
from tests.server.loopback import as_grid

SITES = ("cleveland", "hungary", "switzerland")


def _key(folder: Path, name: str) -> tuple[Path, bytes]:
    """A node key pair as `make-certs.sh` makes it: the .pub the operator registers, and the PEM
    bytes the SuperLink stores for the node (Flower's public_key_to_bytes)."""
    private = ec.generate_private_key(ec.SECP384R1())
    pub = folder / f"{name}.pub"
    pub.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return pub, public_key_to_bytes(private.public_key())


class KeyedGrid:
    """A Grid whose nodes carry the public keys they authenticated with, as the SuperLink's."""

    def __init__(self, keys: dict[int, bytes]) -> None:
        self.keys = keys

    def get_node_ids(self) -> list[int]:
        return list(self.keys)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [NodeInfo(node_id=n, public_key=k) for n, k in self.keys.items()]


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    set_task_identity(1)  # what the ServerApp runtime sets before any strategy runs


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, bytes]]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {name: _key(folder, name) for name in (*SITES, "intruder")}


@pytest.fixture
def registry(tmp_path: Path, keys: dict[str, tuple[Path, bytes]]) -> SiteRegistry:
    reg = SiteRegistry(tmp_path / "coordinator-state")
    for name in SITES:
        reg.add(name, keys[name][0])
    return reg


def _tracker(tmp_path: Path, registry: SiteRegistry | None, heads: LedgerHeads) -> SiteTracking:
    folder = RunFolder.at(tmp_path / "run", RunConfig(rounds=2), run_id=1, engine="test")
    return SiteTracking(
        FedAvg(min_available_nodes=1),
        folder=folder,
        histogram_bins=20,
        min_sites=1,
        heads=heads,
        registry=registry,
    )


def _reply(tmp_path: Path, partition: int, node_id: int) -> Message:
    """The ClientApp's real train reply for the site of ``partition`` (cleveland is 0)."""
    run = RunConfig(rounds=2)
    cfg = wire_config(run, state_dir=str(tmp_path / f"site-state-{node_id}"))
    content = RecordDict({"arrays": initial_arrays(run), "config": cfg})
    ctx = make_context({"partition-id": partition, "num-partitions": 4}, node_id=node_id)
    return app(make_message(content, "train", dst_node_id=node_id), ctx)


def _events(tracker: SiteTracking) -> list[dict]:
    lines = (tracker.folder.path / PROGRESS_FILE).read_text().splitlines()
    return [json.loads(x) for x in lines]


def test_the_operators_pub_file_and_the_superlinks_node_key_have_one_fingerprint(
    keys: dict[str, tuple[Path, bytes]],
) -> None:
    pub, stored = keys["cleveland"]
    assert key_fingerprint(pub.read_bytes()) == key_fingerprint(stored)


def test_one_key_speaks_for_one_site_and_a_name_keeps_its_key(
    registry: SiteRegistry, keys: dict[str, tuple[Path, bytes]]
) -> None:
    with pytest.raises(SiteRegistryError, match="already the key of site 'cleveland'"):
        registry.add("intruder", keys["cleveland"][0])
    with pytest.raises(SiteRegistryError, match="--replace"):
        registry.add("cleveland", keys["intruder"][0])
    registry.add("cleveland", keys["intruder"][0], replace=True)  # a rotated site key
    assert SiteRegistry(registry.path.parent).name_of(keys["intruder"][1]) == "cleveland"


def test_a_reply_claiming_another_sites_name_is_refused_and_named(
    tmp_path: Path, registry: SiteRegistry, keys: dict[str, tuple[Path, bytes]]
) -> None:
    heads = LedgerHeads(tmp_path / "coordinator-state" / "ledger_heads.json")
    tracker = _tracker(tmp_path, registry, heads)
    grid = KeyedGrid({11: keys["cleveland"][1], 12: keys["hungary"][1], 13: keys["switzerland"][1]})
    run = RunConfig(rounds=2)
    tracker.configure_train(1, initial_arrays(run), ConfigRecord(), as_grid(grid))
    # Node 13 holds switzerland's key, but its site config says it is cleveland (partition 0).
    replies = [_reply(tmp_path, 0, 11), _reply(tmp_path, 1, 12), _reply(tmp_path, 0, 13)]
    arrays, _ = tracker.aggregate_train(1, replies)
    assert arrays is not None  # the honest sites' round goes on
    spoof = tracker.sites[13]
    assert spoof.name == "switzerland" and spoof.status == "refused"
    assert "registered as site 'switzerland'" in (spoof.reason or "")
    assert "claims to be site 'cleveland'" in (spoof.reason or "")
    assert 13 in tracker.excluded
    assert tracker.sites[11].name == "cleveland" and tracker.sites[11].status == "ok"
    # The spoofer's ledger never reaches cleveland's remembered head.
    assert set(heads.heads) == {"cleveland", "hungary"}
    refused = [e for e in _events(tracker) if e["event"] == "site-refused"]
    assert refused and refused[0]["identity"] == "impersonation"
    assert refused[0]["claimed_site"] == "cleveland"
    assert refused[0]["registered_site"] == "switzerland"
    record = {s["site"]: s for s in tracker.site_summary()}
    assert record["switzerland"]["details"]["claimed_site"] == "cleveland"


def test_each_site_receives_only_its_own_ledger_head_and_an_unknown_key_nothing(
    tmp_path: Path, registry: SiteRegistry, keys: dict[str, tuple[Path, bytes]]
) -> None:
    heads = LedgerHeads(tmp_path / "coordinator-state" / "ledger_heads.json")
    heads.heads = {"cleveland": (4, "a" * 64), "hungary": (7, "b" * 64)}
    tracker = _tracker(tmp_path, registry, heads)
    grid = KeyedGrid(
        {
            11: keys["cleveland"][1],
            12: keys["hungary"][1],
            13: keys["switzerland"][1],
            14: keys["intruder"][1],
        }
    )
    sent = list(
        tracker.configure_train(1, initial_arrays(RunConfig()), ConfigRecord(), as_grid(grid))
    )
    got = {
        m.metadata.dst_node_id: json.loads(str(m.content["config"][KEY_LEDGER_HEADS])) for m in sent
    }
    assert got == {11: {"cleveland": [4, "a" * 64]}, 12: {"hungary": [7, "b" * 64]}, 13: {}}
    assert tracker.sites[14].status == "refused" and 14 in tracker.excluded
    assert "not registered to any site" in (tracker.sites[14].reason or "")


def test_without_a_register_a_site_is_the_name_it_reports_and_every_head_is_sent(
    tmp_path: Path,
) -> None:
    """Simulation: no node keys, so the old behaviour, and the run record says so."""
    heads = LedgerHeads(tmp_path / "coordinator-state" / "ledger_heads.json")
    heads.heads = {"cleveland": (4, "a" * 64), "hungary": (7, "b" * 64)}
    tracker = _tracker(tmp_path, SiteRegistry(tmp_path / "coordinator-state"), heads)
    assert not tracker.binding
    sent = list(
        tracker.configure_train(
            1,
            initial_arrays(RunConfig()),
            ConfigRecord(),
            as_grid(KeyedGrid({11: b"", 12: b""})),
        )
    )
    assert all(
        json.loads(str(m.content["config"][KEY_LEDGER_HEADS]))
        == {k: list(v) for k, v in heads.heads.items()}
        for m in sent
    )
    identities = [e for e in _events(tracker) if e["event"] == "site-identities"]
    assert identities and identities[0]["bound"] is False


def test_coordinator_sites_add_list_remove(
    tmp_path: Path, keys: dict[str, tuple[Path, bytes]]
) -> None:
    root = typer.Typer()
    root.add_typer(coordinator_app, name="coordinator")
    state = tmp_path / "coordinator-state"

    def fedward(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(
            root, ["coordinator", "sites", *args, "--state-dir", str(state)]
        )
        return result.exit_code, " ".join(result.output.split())

    code, out = fedward("add", "cleveland", str(keys["cleveland"][0]))
    assert code == 0 and "bound to key" in out and "flwr supernode register" in out
    code, out = fedward("add", "intruder", str(keys["cleveland"][0]))
    assert code == 1 and "already the key of site 'cleveland'" in out
    code, out = fedward("list")
    assert code == 0 and "cleveland" in out and "sha256:" in out
    code, out = fedward("remove", "cleveland")
    assert code == 0 and not SiteRegistry(state).active


def test_one_off_requests_are_filed_by_key_too(
    tmp_path: Path, registry: SiteRegistry, keys: dict[str, tuple[Path, bytes]]
) -> None:
    """Baselines and profiles (`ask`): the impostor's answer is not filed as cleveland's, and an
    unregistered key is asked nothing."""
    heads = LedgerHeads(tmp_path / "coordinator-state" / "ledger_heads.json")
    tracker = _tracker(tmp_path, registry, heads)
    answers = {11: _reply(tmp_path, 0, 11), 13: _reply(tmp_path, 0, 13)}

    class AnsweringGrid(KeyedGrid):
        def send_and_receive(self, messages: Iterable[Message], timeout: float) -> list[Message]:
            self.asked = sorted(m.metadata.dst_node_id for m in messages)
            return [answers[n] for n in self.asked]

    grid = AnsweringGrid(
        {11: keys["cleveland"][1], 13: keys["switzerland"][1], 14: keys["intruder"][1]}
    )
    messages = [make_message(RecordDict(), "query", dst_node_id=n) for n in (11, 13, 14)]
    out = tracker.ask(as_grid(grid), messages, "baselines", timeout=5)
    assert grid.asked == [11, 13]
    assert out["cleveland"]["status"] == "ok"
    assert out["switzerland"]["status"] == "refused"
    assert "claims to be 'cleveland'" in out["switzerland"]["reason"]
    assert tracker.sites[14].status == "refused"
