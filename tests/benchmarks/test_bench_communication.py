"""The communication benchmark, run once quickly: its accounting, and figures that make sense."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from tests.benchmarks.bench_communication import (
    MODES,
    N_SITES,
    SECAGG_STAGES,
    FleetLink,
    measure,
    through_the_wire,
    wire_objects,
)
from tests.conftest import make_message


def _message(n: int) -> Message:
    arrays = ArrayRecord({"w": Array(np.arange(n, dtype=np.float32))})
    return make_message(RecordDict({"arrays": arrays, "config": ConfigRecord({"k": "v"})}), "train")


def test_a_message_crosses_the_wire_as_a_copy_with_the_same_content() -> None:
    msg = _message(1000)
    copy = through_the_wire(msg, wire_objects(msg), msg.metadata.message_id)
    assert np.array_equal(
        copy.content.array_records["arrays"]["w"].numpy(), np.arange(1000, dtype=np.float32)
    )
    copy.content.config_records["config"]["k"] = (
        "changed"  # what one side does is not seen by the other
    )
    assert msg.content.config_records["config"]["k"] == "v"
    assert copy.metadata.message_id == msg.metadata.message_id


def test_sending_a_reply_costs_its_float32_arrays_and_a_signed_http_head_per_request() -> None:
    n = 50_000
    msg = _message(n)
    objects = wire_objects(msg)
    sent = FleetLink(1 << 63).push(msg, objects, 0.1)
    assert 4 * n < sent.up < 4 * n + 4096
    assert sent.rpcs == 1 + len(objects)
    # Each request's head names the node by its public key and signs a timestamp.
    assert 300 * sent.rpcs < sent.heads_up < 2000 * sent.rpcs


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """Both federations, one round each (two in-process runs)."""
    return measure(quick=True)


@pytest.mark.slow
def test_the_model_has_at_least_100k_float32_parameters(report: dict[str, Any]) -> None:
    setup = report["setup"]
    assert report["name"] == "communication"
    assert setup["parameters"] >= 100_000
    assert setup["model_bytes"] == 4 * setup["parameters"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_every_site_is_counted_and_sends_at_least_the_model(
    report: dict[str, Any], mode: str
) -> None:
    r = report["results"][mode]
    cells = r["per_site_round"]
    assert sorted(c["site"] for c in cells) == list(range(1, N_SITES + 1))
    for c in cells:
        # A reply carries at least the model; the site also receives it at least once.
        assert c["model_reply_ratio"] > 1.0, c
        assert c["uplink_ratio"] >= c["model_reply_ratio"], c
        assert c["downlink_ratio"] > 1.0, c
    assert "evaluate (tune)" in r["by_kind"]


@pytest.mark.slow
def test_fedwards_train_reply_stays_within_the_target(report: dict[str, Any]) -> None:
    r = report["results"]["message-api"]
    assert set(r["by_kind"]) == {"train", "evaluate (tune)"}
    assert r["model_reply_ratio_max"] <= 1.1
    # A whole round's protobuf bodies fit too (the HTTP heads on top are reported, not asserted).
    assert r["uplink_body_ratio_max"] <= 1.1


@pytest.mark.slow
def test_secagg_rounds_run_every_stage_at_every_site(report: dict[str, Any]) -> None:
    r = report["results"]["secagg+"]
    assert {f"secagg+ {s}" for s in SECAGG_STAGES} <= set(r["by_kind"])
    assert all(k["per_site_round"] == 1 for k in r["by_kind"].values())


@pytest.mark.slow
def test_rows_are_complete(report: dict[str, Any]) -> None:
    rows = report["rows"]
    assert {r["comparison"] for r in rows} >= {"model", *MODES.values()}
    for row in rows:
        assert set(row) == {"comparison", "measure", "value", "unit", "target", "met"}
        assert math.isfinite(row["value"]) and row["value"] > 0, row
        assert (row["target"] is None) == (row["met"] is None), row
    targets = [r for r in rows if r["target"] is not None]
    assert len(targets) == 2 * len(MODES)
