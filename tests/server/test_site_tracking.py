"""The coordinator's strategy wrapper: refusals and failures are recorded and left out, never fatal."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import pytest
import torch
from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedward.client.app import app
from fedward.common.flower_compat import set_task_identity
from fedward.common.protocol import KEY_SPLIT
from fedward.common.run_config import RunConfig
from fedward.server.run_folder import PROGRESS_FILE, RunFolder
from fedward.server.site_tracking import SiteTracking
from tests.conftest import initial_arrays, make_context, make_message, wire_config
from tests.server.loopback import as_grid

STATE: dict[str, Path] = {}


@pytest.fixture(autouse=True)
def _fresh_site_state(tmp_path: Path) -> None:
    STATE["root"] = tmp_path / "site-state"


class LoopbackGrid:
    """Just enough of a Grid for configure_*: the connected node ids."""

    def __init__(self, nodes: Iterable[int]) -> None:
        self.nodes = list(nodes)

    def get_node_ids(self) -> list[int]:
        return self.nodes


def _site_reply(
    run: RunConfig, partition: int, node_id: int, message_type: str = "train", **cfg
) -> Message:
    cfg.setdefault("state_dir", str(STATE["root"] / message_type))
    content = RecordDict({"arrays": initial_arrays(run), "config": wire_config(run, **cfg)})
    ctx = make_context({"partition-id": partition, "num-partitions": 4}, node_id=node_id)
    return app(make_message(content, message_type, dst_node_id=node_id), ctx)


def _refusal(node_id: int) -> Message:
    msg = make_message(RecordDict(), "train", dst_node_id=node_id)
    return Message(
        RecordDict(
            {"fedward": ConfigRecord({"site": "st-elsewhere", "status": "refused", "reason": "no"})}
        ),
        reply_to=msg,
    )


@pytest.fixture
def tracker(tmp_path: Path) -> SiteTracking:
    run = RunConfig(rounds=2)
    folder = RunFolder.at(tmp_path / "run", run, run_id=1, engine="test")
    return SiteTracking(
        FedAvg(min_available_nodes=1), folder=folder, histogram_bins=20, min_sites=2
    )


def test_refusals_and_failures_are_left_out_and_the_rest_aggregated(tracker: SiteTracking) -> None:
    run = RunConfig(rounds=2)
    ok = [_site_reply(run, 0, 11), _site_reply(run, 1, 12)]
    failed = Message(
        Error(code=1, reason="ClientApp crashed"), reply_to=make_message(RecordDict(), "train", 14)
    )
    arrays, metrics = tracker.aggregate_train(1, [*ok, _refusal(13), failed])
    assert arrays is not None and metrics is not None
    sites = {s["site"]: s for s in tracker.site_summary()}
    assert sites["cleveland"]["status"] == "ok" and sites["hungary"]["status"] == "ok"
    assert sites["st-elsewhere"]["status"] == "refused"
    assert sites["node 14"]["status"] == "failed" and "crashed" in sites["node 14"]["reason"]
    assert 13 in tracker.excluded  # a refusing site is not asked again this run
    assert (tracker.folder.path / "checkpoints" / "round-0001.pt").exists()


def test_aggregate_is_the_weighted_mean_of_the_valid_updates_only(tracker: SiteTracking) -> None:
    run = RunConfig(rounds=2)
    ok = [_site_reply(run, 0, 11), _site_reply(run, 1, 12)]
    n = [float(m.content.metric_records["metrics"]["num-examples"]) for m in ok]  # type: ignore[arg-type]
    w = [m.content.array_records["arrays"].to_torch_state_dict()["0.weight"] for m in ok]
    expected = (w[0] * n[0] + w[1] * n[1]) / sum(n)
    arrays, _ = tracker.aggregate_train(1, [*ok, _refusal(13)])
    assert arrays is not None
    torch.testing.assert_close(arrays.to_torch_state_dict()["0.weight"], expected)


def test_round_is_skipped_below_the_minimum_number_of_sites(tracker: SiteTracking) -> None:
    run = RunConfig(rounds=2)
    arrays, _ = tracker.aggregate_train(1, [_site_reply(run, 0, 11), _refusal(13)])
    assert arrays is None
    events = [json.loads(x) for x in (tracker.folder.path / PROGRESS_FILE).read_text().splitlines()]
    assert any(e["event"] == "round-skipped" for e in events)


def test_excluded_sites_get_no_more_messages(tracker: SiteTracking) -> None:
    set_task_identity(1)  # what the ServerApp runtime sets before any strategy runs
    tracker.aggregate_train(1, [_refusal(13)])
    msgs = list(
        tracker.configure_train(
            2, initial_arrays(RunConfig()), ConfigRecord(), as_grid(LoopbackGrid([11, 12, 13]))
        )
    )
    assert sorted(m.metadata.dst_node_id for m in msgs) == [11, 12]


def test_pooled_tune_metrics_come_from_histograms(tracker: SiteTracking) -> None:
    run = RunConfig(rounds=2)
    replies = [_site_reply(run, p, 20 + p, "evaluate", **{KEY_SPLIT: "tune"}) for p in range(4)]
    pooled = tracker.aggregate_evaluate(1, replies)
    assert pooled is not None
    auroc = pooled["auroc"]
    assert isinstance(auroc, (int, float)) and 0.0 <= auroc <= 1.0
    entry = tracker.history["tune"][-1]
    assert set(entry["sites"]) == {"cleveland", "hungary", "switzerland", "va-long-beach"}
    records = [r.content.config_records["fedward"] for r in replies]
    complete = [r for r in records if r["hist_pos_counts"] and r["hist_neg_counts"]]
    released = sum(
        sum(cast(list[int], r["hist_pos_counts"])) + sum(cast(list[int], r["hist_neg_counts"]))
        for r in complete
    )
    # A class under the minimum cell (Switzerland's few negatives) is suppressed at the site:
    # pooling the other class alone would misstate prevalence, so the pool leaves such a site out
    # and says so.
    assert 0 < len(complete) < len(records)
    assert entry["pooled"]["n"] == released < sum(s["n"] for s in entry["sites"].values())
    assert entry["pooled"]["n_sites"] == len(complete)
    assert entry["pooled"]["coverage"].startswith(f"{len(complete)} of 4 sites: ")
    assert "left out" in entry["pooled"]["coverage"]


def test_wrapper_rejects_bad_arguments(tmp_path: Path) -> None:
    folder = RunFolder.at(tmp_path / "r", RunConfig(), run_id=1, engine="test")
    with pytest.raises(ValueError, match="histogram_bins"):
        SiteTracking(FedAvg(), folder=folder, histogram_bins=1, min_sites=1)


def test_a_site_that_never_answers_is_recorded_as_dropped_and_reclaimed_when_back(
    tracker: SiteTracking,
) -> None:
    set_task_identity(1)  # what the ServerApp runtime sets before any strategy runs
    run = RunConfig(rounds=2)
    sent = list(
        tracker.configure_train(
            1, initial_arrays(run), ConfigRecord(), as_grid(LoopbackGrid([11, 12, 13]))
        )
    )
    assert sorted(m.metadata.dst_node_id for m in sent) == [11, 12, 13]
    ok = [_site_reply(run, 0, 11), _site_reply(run, 1, 12)]
    # What Flower's SuperLink sends for a node that stopped its heartbeats: an error reply from the
    # SuperLink itself (node 0), not from the lost node.
    lost = next(m for m in sent if m.metadata.dst_node_id == 13)
    flower_says = Message(Error(code=5, reason="Error: Node Unavailable"), reply_to=lost)
    flower_says.metadata.__dict__["_src_node_id"] = 0
    arrays, _ = tracker.aggregate_train(1, [*ok, flower_says])
    assert arrays is not None  # the round closed with the two that answered
    rec = tracker.sites[13]
    assert rec.status == "dropped" and "Node Unavailable" in (rec.reason or "")
    assert [(d["round"], d["phase"]) for d in rec.dropouts] == [(1, "train")]
    assert 0 not in tracker.sites  # the SuperLink is not a site
    assert 13 not in tracker.excluded  # asked again if it is connected next round
    events = [json.loads(x) for x in (tracker.folder.path / PROGRESS_FILE).read_text().splitlines()]
    assert any(e["event"] == "site-dropped" and e["round"] == 1 for e in events)

    # No reply at all (the round's timeout passed): the same record.
    tracker.configure_train(2, initial_arrays(run), ConfigRecord(), as_grid(LoopbackGrid([11, 12])))
    tracker.aggregate_train(2, [_site_reply(run, 0, 11, server_round=2)])
    assert tracker.sites[12].status == "dropped"
    assert "no reply before the round's timeout" in (tracker.sites[12].reason or "")

    # Hungary comes back under a new node id: its record (and its dropout history) moves with it.
    tracker.configure_train(3, initial_arrays(run), ConfigRecord(), as_grid(LoopbackGrid([11, 21])))
    tracker.aggregate_train(
        3, [_site_reply(run, 0, 11, server_round=3), _site_reply(run, 1, 21, server_round=3)]
    )
    assert 12 not in tracker.sites and tracker.sites[21].name == "hungary"
    assert tracker.sites[21].status == "ok" and len(tracker.sites[21].dropouts) == 1
