"""The SecAgg+ mode's site: fedward's checks and DP-SGD behind Flower's legacy client API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Message, RecordDict

from fedward.client.budget import BudgetRefusal
from fedward.client.ledger import Ledger
from fedward.client.secagg_app import SecAggSiteClient, refusal_as_error
from fedward.common.errors import PolicyError
from fedward.common.protocol import KEY_ATTEMPT, KEY_SPLIT
from fedward.common.run_config import RunConfig
from tests.conftest import initial_arrays, make_context, make_message, wire_config

NODE = {"partition-id": 0, "num-partitions": 4}


def _parameters(run: RunConfig) -> list[np.ndarray]:
    return [a.numpy() for a in initial_arrays(run).values()]


def _config(run: RunConfig, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return dict(wire_config(run, state_dir=str(tmp_path / "state"), **extra))


def test_fit_returns_the_models_arrays_in_state_dict_order(
    heart_run: RunConfig, tmp_path: Path
) -> None:
    sent = _parameters(heart_run)
    weights, n, _ = SecAggSiteClient(make_context(NODE)).fit(sent, _config(heart_run, tmp_path))
    assert [w.shape for w in weights] == [p.shape for p in sent]
    assert [w.dtype for w in weights] == [p.dtype for p in sent]
    assert not all(np.array_equal(w, p) for w, p in zip(weights, sent, strict=True))
    assert n >= 10  # the training rows: SecAgg+'s weight, at least the minimum cell size


def test_fit_metrics_are_scalars_with_the_sites_privacy_spend(
    heart_run: RunConfig, tmp_path: Path
) -> None:
    _, _, metrics = SecAggSiteClient(make_context(NODE)).fit(
        _parameters(heart_run), _config(heart_run, tmp_path)
    )
    assert all(isinstance(v, int | float | str | bool) for v in metrics.values())
    assert metrics["site"] == "cleveland"
    assert 0 < metrics["epsilon"] <= heart_run.privacy.target_epsilon
    # Under DP the training loss is not sent (it would escape ε every round).
    assert "train_loss" not in json.loads(metrics["non_dp_outputs"])
    assert "train_loss" not in metrics


def test_fit_is_dp_sgd_recorded_in_the_sites_ledger_first(
    heart_run: RunConfig, tmp_path: Path
) -> None:
    SecAggSiteClient(make_context(NODE)).fit(_parameters(heart_run), _config(heart_run, tmp_path))
    ledger = Ledger(tmp_path / "state" / "cleveland")
    assert [e.kind for e in ledger.entries()] == ["plan", "dp-sgd"]


def test_the_sites_ledger_refuses_a_replayed_round(heart_run: RunConfig, tmp_path: Path) -> None:
    client = SecAggSiteClient(make_context(NODE))
    cfg = _config(heart_run, tmp_path, **{KEY_ATTEMPT: "attempt-1"})
    client.fit(_parameters(heart_run), cfg)
    with pytest.raises(BudgetRefusal, match="replay refused"):
        client.fit(_parameters(heart_run), cfg)


def test_a_refusal_leaves_as_an_error_reply_with_the_structured_reason() -> None:
    msg = make_message(RecordDict(), "train", dst_node_id=7)

    def refuse(m: Message, ctx: Any) -> Message:
        raise PolicyError("st-mary", "the run asks for training without DP").publicly(
            "non-dp-refused"
        )

    reply = refusal_as_error(msg, make_context(NODE, node_id=7), refuse)
    assert reply.has_error()
    assert reply.error.reason is not None
    info = json.loads(reply.error.reason)
    assert info["site"] == "st-mary" and info["status"] == "refused" and info["node_id"] == 7
    assert "without DP" in info["reason"]


def test_an_unexpected_error_leaves_only_its_type() -> None:
    msg = make_message(RecordDict(), "train", dst_node_id=7)

    def crash(m: Message, ctx: Any) -> Message:
        raise ValueError("row 17 has age 203")  # could quote data: must not leave

    reply = refusal_as_error(msg, make_context(NODE, node_id=7), crash)
    assert reply.error.reason is not None
    info = json.loads(reply.error.reason)
    assert info["status"] == "error" and "203" not in reply.error.reason


def test_evaluate_returns_the_panel_and_a_coarsened_histogram(
    heart_run: RunConfig, tmp_path: Path
) -> None:
    loss, n, metrics = SecAggSiteClient(make_context(NODE)).evaluate(
        _parameters(heart_run), _config(heart_run, tmp_path, **{KEY_SPLIT: "tune"})
    )
    assert n >= 10 and 0 <= loss <= 1 and metrics["site"] == "cleveland"
    assert 0.0 <= metrics["auroc"] <= 1.0
    assert set(json.loads(metrics["histogram"])) >= {"bins", "pos_counts", "neg_counts"}


def test_the_sealed_test_split_is_read_once(heart_run: RunConfig, tmp_path: Path) -> None:
    client = SecAggSiteClient(make_context(NODE))
    cfg = _config(heart_run, tmp_path, **{KEY_SPLIT: "test"})
    client.evaluate(_parameters(heart_run), cfg)
    with pytest.raises(Exception, match="already read once"):
        client.evaluate(_parameters(heart_run), cfg)
