"""An in-process federation: a Grid that hands every message to a ClientApp, no Ray, no network."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity


class LoopbackGrid:
    """Just enough of a Grid for the coordinator: node ids, and send_and_receive through a ClientApp.

    Node ``n`` (1-based) is bundled site ``n - 1`` of ``num_sites``; each node keeps one Context for
    the run, as a SuperNode does.
    """

    def __init__(self, client_app: Any, num_sites: int, run_id: int = 1) -> None:
        TaskIdentity.run_id = run_id  # set by the ServerApp runtime before any strategy runs
        TaskIdentity.node_id = 0
        TaskIdentity.task_id = 1
        self.app = client_app
        self.nodes = list(range(1, num_sites + 1))
        self.contexts = {
            n: Context(
                run_id=run_id,
                node_id=n,
                node_config={"partition-id": n - 1, "num-partitions": num_sites},
                state=RecordDict(),
                run_config={},
            )
            for n in self.nodes
        }
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.sent.append(msg)
            replies.append(self.app(msg, self.contexts[msg.metadata.dst_node_id]))
        return replies


def server_context(run_id: int = 1) -> Context:
    return Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
