"""A round retried after a coordinator crash, at one site: each attempt that trained is one ledger
row and counts in ε; the same attempt again, or an older round, is refused and leaves no row."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import RecordDict

from fedward.client.accounting import epsilon_of
from fedward.client.app import app
from fedward.client.ledger import Ledger
from fedward.common.protocol import KEY_ATTEMPT, REPLY
from fedward.common.run_config import RunConfig
from tests.conftest import initial_arrays, make_context, make_message, wire_config

NODE = {"partition-id": 1, "num-partitions": 4}  # hungary


@pytest.fixture
def run() -> RunConfig:
    """Four rounds: the plan reserves a fifth for one retried round."""
    return RunConfig.model_validate({"rounds": 4, "evaluation": {"bootstrap": 50}})


def _train(run: RunConfig, state: Path, server_round: int, attempt: str) -> dict:
    cfg = wire_config(run, server_round=server_round, state_dir=str(state))
    cfg[KEY_ATTEMPT] = attempt
    content = RecordDict({"arrays": initial_arrays(run), "config": cfg})
    reply = app(make_message(content, "train"), make_context(NODE))
    return dict(reply.content[REPLY])


@pytest.fixture
def ledger_after_retry(tmp_path: Path, run: RunConfig) -> tuple[Ledger, list[dict]]:
    """Rounds 1-2, round 3 lost with the coordinator (attempt a3), round 3 retried (b3)."""
    replies = [
        _train(run, tmp_path, rnd, attempt)
        for rnd, attempt in ((1, "a1"), (2, "a2"), (3, "a3"), (3, "b3"))
    ]
    return Ledger(tmp_path / "hungary"), replies


def test_each_attempt_that_trained_is_one_row(
    ledger_after_retry: tuple[Ledger, list[dict]],
) -> None:
    ledger, replies = ledger_after_retry
    assert [r["status"] for r in replies] == ["ok"] * 4
    spends = [(e.round, e.attempt) for e in ledger.entries() if e.kind == "dp-sgd"]
    assert spends == [(1, "a1"), (2, "a2"), (3, "a3"), (3, "b3")]
    assert ledger.verify().ok


def test_the_lost_attempt_stays_in_the_reported_epsilon(
    ledger_after_retry: tuple[Ledger, list[dict]],
) -> None:
    ledger, replies = ledger_after_retry
    rows = [e for e in ledger.entries() if e.kind == "dp-sgd"]
    delta = rows[0].delta
    reported = float(replies[-1]["epsilon"])
    assert reported == pytest.approx(epsilon_of([e.history_item() for e in rows], delta))
    assert reported > float(replies[-2]["epsilon"])


def test_a_replayed_attempt_or_an_older_round_is_refused_without_a_row(
    ledger_after_retry: tuple[Ledger, list[dict]], tmp_path: Path, run: RunConfig
) -> None:
    ledger, _ = ledger_after_retry
    before = len(ledger.entries())
    replay = _train(run, tmp_path, 3, "b3")
    assert replay["status"] == "refused" and "replay refused" in replay["reason"]
    _train(run, tmp_path, 4, "a4")
    older = _train(run, tmp_path, 3, "c3")
    assert older["status"] == "refused" and "replay refused" in older["reason"]
    assert len(ledger.entries()) == before + 1  # only round 4
