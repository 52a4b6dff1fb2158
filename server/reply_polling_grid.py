"""A Grid whose ``send_and_receive`` collects replies as soon as they arrive.

Flower's deployment grid (``flwr.superlink.grid.http_grid``) pulls replies, then sleeps a fixed
3 s before pulling again, so every round of a real federation loses up to 3 s per message type
waiting on nothing. This wrapper keeps Flower's grid for everything and replaces only that loop
with one built on the public ``push_messages`` / ``pull_messages`` API, pulling every
``FEDWARD_REPLY_POLL_INTERVAL`` seconds (0.25 by default). The replies, the timeout and what a
missing reply means are unchanged.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedward.common.flower_compat import NodeInfo, Run, is_in_memory_grid

POLL_INTERVAL_ENV = "FEDWARD_REPLY_POLL_INTERVAL"
DEFAULT_POLL_INTERVAL_S = 0.25


def poll_interval_from_env() -> float:
    raw = os.environ.get(POLL_INTERVAL_ENV, "")
    if not raw:
        return DEFAULT_POLL_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0.01 <= value <= 10.0:
        raise ValueError(
            f"{POLL_INTERVAL_ENV} must be a number of seconds between 0.01 and 10, got {raw!r}"
        )
    return value


class ReplyPollingGrid(Grid):
    """Flower's grid with a short, configurable wait between reply pulls."""

    def __init__(self, grid: Grid, poll_interval: float | None = None) -> None:
        if poll_interval is None:
            poll_interval = poll_interval_from_env()
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.grid = grid
        self.poll_interval = poll_interval

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            pulled = list(self.pull_messages(pending))
            replies.extend(pulled)
            pending.difference_update(m.metadata.reply_to_message_id for m in pulled)
            if not pending:
                break
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(self.poll_interval, left))
            else:
                time.sleep(self.poll_interval)
        return replies

    def __getattr__(self, name: str) -> Any:
        # Anything else a Flower grid offers (close, node, ...) is Flower's.
        return getattr(self.grid, name)


def reply_polling_grid(grid: Grid) -> Grid:
    """Wrap a deployment grid; the simulation engine's in-memory grid already polls quickly."""
    if isinstance(grid, ReplyPollingGrid) or is_in_memory_grid(grid):
        return grid
    return ReplyPollingGrid(grid)
