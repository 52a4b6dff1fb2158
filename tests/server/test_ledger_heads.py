"""The coordinator remembers each site's ledger head, so a rolled-back ledger cannot reset a budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedward.common.flower_compat import set_task_identity
from fedward.common.protocol import KEY_ATTEMPT, KEY_LEDGER_HEADS
from fedward.common.run_config import RunConfig
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.run_folder import RunFolder
from fedward.server.site_tracking import SiteTracking
from fedward.server.tracking_book import TooFewSites
from tests.conftest import initial_arrays, make_message
from tests.server.loopback import as_grid


def test_heads_persist_and_must_only_grow(tmp_path: Path) -> None:
    heads = LedgerHeads(tmp_path / "heads.json")
    assert heads.observe("cleveland", 3, "a" * 64) is None
    heads.save()
    again = LedgerHeads(tmp_path / "heads.json")
    assert again.observe("cleveland", 2, "b" * 64) is not None  # fewer entries: rolled back
    assert again.observe("cleveland", 3, "c" * 64) is not None  # same length, other head
    assert again.observe("cleveland", 5, "d" * 64) is None


def _ok_reply(node: int, site: str, seq: int, head: str) -> Message:
    msg = make_message(RecordDict(), "train", dst_node_id=node)
    return Message(
        RecordDict(
            {
                "arrays": initial_arrays(RunConfig()),
                "metrics": MetricRecord({"num-examples": 50.0, "train_loss": 0.5}),
                "fedward": ConfigRecord(
                    {"site": site, "status": "ok", "ledger_seq": seq, "ledger_head": head}
                ),
            }
        ),
        reply_to=msg,
    )


class Nodes:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def get_node_ids(self) -> list[int]:
        return self.ids


@pytest.fixture
def tracker(tmp_path: Path) -> SiteTracking:
    set_task_identity(1)
    folder = RunFolder.at(tmp_path / "run", RunConfig(), run_id=1, engine="test")
    return SiteTracking(
        FedAvg(min_available_nodes=1, min_train_nodes=1),
        folder=folder,
        histogram_bins=20,
        min_sites=2,
        heads=LedgerHeads(tmp_path / "heads.json"),
    )


def test_a_site_whose_ledger_went_backwards_is_refused(tracker: SiteTracking) -> None:
    tracker.aggregate_train(1, [_ok_reply(1, "a", 4, "x" * 64), _ok_reply(2, "b", 4, "y" * 64)])
    arrays, _ = tracker.aggregate_train(
        2, [_ok_reply(1, "a", 6, "z" * 64), _ok_reply(2, "b", 1, "w" * 64)]
    )
    assert arrays is None  # only one site left: below the minimum of two
    sites = {s["site"]: s for s in tracker.site_summary()}
    assert sites["b"]["status"] == "refused" and "rolled back" in sites["b"]["reason"]
    assert 2 in tracker.excluded


def test_each_round_attempt_gets_its_own_id_and_the_known_heads(tracker: SiteTracking) -> None:
    tracker.aggregate_train(1, [_ok_reply(1, "a", 4, "x" * 64), _ok_reply(2, "b", 4, "y" * 64)])
    cfg1, cfg2 = ConfigRecord(), ConfigRecord()
    arrays = initial_arrays(RunConfig())
    tracker.configure_train(2, arrays, cfg1, as_grid(Nodes([1, 2])))
    tracker.configure_train(2, arrays, cfg2, as_grid(Nodes([1, 2])))
    assert cfg1[KEY_ATTEMPT] != cfg2[KEY_ATTEMPT]
    assert '"a": [4' in str(cfg1[KEY_LEDGER_HEADS])


def test_run_stops_cleanly_when_too_few_sites_remain(tracker: SiteTracking) -> None:
    tracker.excluded.update({2, 3})
    with pytest.raises(TooFewSites, match="only 1 site"):
        tracker.configure_train(
            3, initial_arrays(RunConfig()), ConfigRecord(), as_grid(Nodes([1, 2, 3]))
        )
