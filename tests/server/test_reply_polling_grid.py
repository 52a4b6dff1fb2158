"""The reply-polling grid: it returns every reply as soon as the last one arrives, waits no longer
than the timeout for one that never comes, polls at the configured interval, and leaves everything
else to the Flower grid it wraps."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, cast

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedward.common.flower_compat import InMemoryGrid, set_message_id, set_task_identity
from fedward.server import reply_polling_grid as module
from fedward.server.reply_polling_grid import (
    DEFAULT_POLL_INTERVAL_S,
    POLL_INTERVAL_ENV,
    ReplyPollingGrid,
    poll_interval_from_env,
    reply_polling_grid,
)


class SlowSites:
    """A deployment grid's push/pull: node ``n``'s reply is ready ``delays[n]`` seconds after the
    push (never, for a node without a delay)."""

    def __init__(self, delays: dict[int, float]) -> None:
        set_task_identity(1)
        self.delays = delays
        self.pushed_at = 0.0
        self.waiting: dict[str, Message] = {}
        self.pulls: list[set[str]] = []
        self.closed = False

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        self.pushed_at = time.monotonic()
        ids = []
        for i, msg in enumerate(messages):
            set_message_id(msg, f"m{i}")
            self.waiting[f"m{i}"] = msg
            ids.append(f"m{i}")
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        asked = set(message_ids)
        self.pulls.append(asked)
        elapsed = time.monotonic() - self.pushed_at
        ready = []
        for mid in sorted(asked):
            msg = self.waiting[mid]
            delay = self.delays.get(msg.metadata.dst_node_id)
            if delay is not None and elapsed >= delay:
                node = ConfigRecord({"node": msg.metadata.dst_node_id})
                ready.append(Message(RecordDict({"reply": node}), reply_to=msg))
                del self.waiting[mid]
        return ready

    def get_node_ids(self) -> list[int]:
        return sorted(self.delays)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl)

    def close(self) -> None:
        self.closed = True


def _grid(delays: dict[int, float], poll_interval: float = 0.02) -> tuple[ReplyPollingGrid, Any]:
    sites = SlowSites(delays)
    return ReplyPollingGrid(cast(Grid, sites), poll_interval=poll_interval), sites


def _ask(grid: ReplyPollingGrid, nodes: Iterable[int]) -> list[Message]:
    return [grid.create_message(RecordDict(), "train", n, "1") for n in nodes]


def _answered(replies: Iterable[Message]) -> list[int]:
    return sorted(int(cast(int, r.content["reply"]["node"])) for r in replies)


def test_every_reply_is_collected_as_soon_as_the_last_one_arrives() -> None:
    grid, sites = _grid({1: 0.0, 2: 0.05, 3: 0.1})
    t0 = time.monotonic()
    replies = grid.send_and_receive(_ask(grid, [1, 2, 3]), timeout=30)
    took = time.monotonic() - t0
    assert _answered(replies) == [1, 2, 3]
    assert 0.1 <= took < 1.0  # not Flower's fixed 3 s between pulls
    # A reply once pulled is not asked for again.
    assert sites.pulls[0] == {"m0", "m1", "m2"} and sites.pulls[-1] == {"m2"}


def test_a_reply_that_never_comes_ends_the_wait_at_the_timeout() -> None:
    grid, _ = _grid({1: 0.0, 2: 0.0})
    t0 = time.monotonic()
    replies = grid.send_and_receive(_ask(grid, [1, 2, 3]), timeout=0.3)
    took = time.monotonic() - t0
    assert _answered(replies) == [1, 2]
    assert 0.3 <= took < 0.6


def test_without_a_timeout_it_waits_until_every_reply_is_in() -> None:
    grid, _ = _grid({1: 0.15})
    assert _answered(grid.send_and_receive(_ask(grid, [1]), timeout=None)) == [1]


def test_it_sleeps_the_poll_interval_between_pulls(monkeypatch: pytest.MonkeyPatch) -> None:
    grid, sites = _grid({1: 0.0, 2: 0.05}, poll_interval=0.2)
    waits: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(module.time, "sleep", sleep)
    assert _answered(grid.send_and_receive(_ask(grid, [1, 2]), timeout=30)) == [1, 2]
    assert waits == [0.2] and len(sites.pulls) == 2


def test_the_last_wait_is_cut_to_the_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    grid, sites = _grid({}, poll_interval=2.0)
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # a clock that moves only when the grid sleeps
        waits.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(module.time, "sleep", sleep)
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    assert grid.send_and_receive(_ask(grid, [1]), timeout=3.0) == []
    assert waits == [2.0, 1.0] and len(sites.pulls) == 3


def test_everything_else_is_the_wrapped_grids() -> None:
    grid, sites = _grid({4: 0.0, 7: 0.0})
    assert list(grid.get_node_ids()) == [4, 7]
    msg = grid.create_message(RecordDict(), "evaluate", 7, "2", ttl=60.0)
    assert msg.metadata.dst_node_id == 7 and msg.metadata.message_type == "evaluate"
    assert list(grid.push_messages([msg])) == ["m0"]
    grid.close()  # not a Grid method: forwarded as it is
    assert sites.closed


def test_the_poll_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POLL_INTERVAL_ENV, raising=False)
    assert poll_interval_from_env() == DEFAULT_POLL_INTERVAL_S == 0.25
    monkeypatch.setenv(POLL_INTERVAL_ENV, "0.5")
    assert poll_interval_from_env() == 0.5
    assert ReplyPollingGrid(cast(Grid, SlowSites({}))).poll_interval == 0.5


@pytest.mark.parametrize("raw", ["soon", "0", "0.001", "11", "nan", "inf", "-1"])
def test_an_unusable_poll_interval_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv(POLL_INTERVAL_ENV, raw)
    with pytest.raises(ValueError, match=f"{POLL_INTERVAL_ENV} must be .* got '{raw}'"):
        poll_interval_from_env()


@pytest.mark.parametrize("interval", [0.0, -0.5])
def test_a_poll_interval_that_is_not_positive_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="poll_interval must be positive"):
        ReplyPollingGrid(cast(Grid, SlowSites({})), poll_interval=interval)


def test_only_a_deployment_grid_is_wrapped_and_only_once() -> None:
    deployment = cast(Grid, SlowSites({}))
    wrapped = reply_polling_grid(deployment)
    assert isinstance(wrapped, ReplyPollingGrid) and wrapped.grid is deployment
    assert reply_polling_grid(wrapped) is wrapped
    in_memory = InMemoryGrid.__new__(InMemoryGrid)  # the simulation engine's grid
    assert reply_polling_grid(in_memory) is in_memory
