"""The SecAgg+ coordinator's adapter: legacy replies filed in the same book of sites as the Message API's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from flwr.app import Error
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg

from fedward.common.run_config import RunConfig
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.run_folder import RunFolder
from fedward.server.secagg_app import SecAggTracking


class _Proxy:
    """Just enough of a ClientProxy: the node it stands for."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


@pytest.fixture
def tracking(tmp_path: Path) -> SecAggTracking:
    folder = RunFolder.at(tmp_path / "run", RunConfig(rounds=2), run_id=1, engine="test")
    return SecAggTracking(
        LegacyFedAvg(),
        folder=folder,
        keys=["w"],
        dtypes=[torch.float32],
        min_sites=2,
        histogram_bins=20,
        round_timeout=5.0,
        heads=LedgerHeads(tmp_path / "ledger_heads.json"),
    )


def _error_reply(info: dict[str, Any]) -> BaseException:
    """What Flower's legacy workflow hands the strategy for a site's error reply."""
    return Exception(Error(code=0, reason=json.dumps(info)))


def test_a_refusing_site_is_recorded_by_name_and_not_asked_again(
    tracking: SecAggTracking,
) -> None:
    refusal = {"site": "va", "status": "refused", "reason": "no label", "node_id": 5}
    params, _ = tracking.aggregate_fit(1, [], [_error_reply(refusal)])
    assert params is None
    rec = tracking.book.sites[5]
    assert (rec.label, rec.status, rec.reason) == ("va", "refused", "train, round 1: no label")
    assert rec.refusals == [
        {"round": 1, "phase": "train", "status": "refused", "reason": "train, round 1: no label"}
    ]
    assert tracking.book.excluded == {5}


def test_an_error_reply_that_names_no_site_is_kept_as_unidentified(
    tracking: SecAggTracking,
) -> None:
    tracking.aggregate_fit(1, [], [Exception("lost")])
    (rec,) = tracking.book.sites.values()
    assert rec.node_id == -1 and rec.status == "failed"
    assert rec.label == "unidentified site 1 (its error reply names no site)"
    assert tracking.book.excluded == set()


def test_a_ledger_rolled_back_refuses_the_site_though_its_model_is_in_the_sum(
    tracking: SecAggTracking,
) -> None:
    tracking.heads.observe("hungary", 3, "abc")
    res = FitRes(
        Status(Code.OK, ""),
        ndarrays_to_parameters([]),
        10,
        {"site": "hungary", "ledger_seq": 2.0, "ledger_head": "abd", "epsilon": 0.4},
    )
    tracking.aggregate_fit(1, [(cast(ClientProxy, _Proxy(8)), res)], [])
    rec = tracking.book.sites[8]
    assert rec.status == "refused" and rec.reason is not None
    assert rec.reason.startswith("ledger check failed")
    assert rec.epsilon is None and rec.rounds_ok == 0
    assert "already in the sum" in rec.warnings[0]
    assert tracking.book.excluded == {8}


def test_a_trained_site_states_its_weight_went_out_in_the_clear(tracking: SecAggTracking) -> None:
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([]), 10, {"site": "hungary"})
    tracking.aggregate_fit(1, [(cast(ClientProxy, _Proxy(8)), res)], [])
    rec = tracking.book.sites[8]
    assert rec.status == "ok" and rec.trained_rounds == [1]
    assert rec.non_dp_outputs == {"num-examples (training rows, SecAgg+'s weight, in the clear)"}


def test_secagg_runs_declare_they_cannot_run_baselines_audit_or_profiles() -> None:
    assert SecAggTracking.supports_companions is False
