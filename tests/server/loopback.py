"""An in-process federation: a Grid that hands every message to a ClientApp, no Ray, no network.

Every message crosses the boundary as Flower 1.42 transfers it: the instruction is deflated into
Flower's objects and inflated again on the site's side, and the reply goes back the same way. A
message that Flower cannot encode or decode fails here as it would in a deployment, and neither
side ever holds an object the other one made.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid

from fedward.common.flower_compat import (
    message_from_wire,
    set_message_id,
    set_task_identity,
    wire_objects,
)


@dataclass(frozen=True)
class Exchange:
    """One instruction and its reply as they crossed the boundary: Flower's objects, by id."""

    asked_id: str
    asked: dict[str, bytes]
    reply_id: str
    reply: dict[str, bytes]

    def wire_reply(self, message_id: str = "") -> Message:
        """The reply as the coordinator decoded it."""
        return message_from_wire(self.reply_id, self.reply, message_id)


class LoopbackGrid:
    """Just enough of a Grid for the coordinator: node ids, and send_and_receive through a ClientApp.

    Node ``n`` (1-based) is bundled site ``n - 1`` of ``num_sites``; each node keeps one Context for
    the run, as a SuperNode does. ``sent`` holds each instruction as the coordinator sent it;
    ``wire`` each exchange, instruction and reply, as it crossed the boundary.
    """

    def __init__(self, client_app: Any, num_sites: int, run_id: int = 1) -> None:
        set_task_identity(run_id)  # set by the ServerApp runtime before any strategy runs
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
        self.wire: list[Exchange] = []

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for msg in messages:
            set_message_id(msg, uuid.uuid4().hex)
            self.sent.append(msg)
            asked_objects = wire_objects(msg)
            asked = message_from_wire(msg.object_id, asked_objects, msg.metadata.message_id)
            reply = self.app(asked, self.contexts[msg.metadata.dst_node_id])
            set_message_id(reply, reply.object_id)  # as a SuperNode names its reply
            reply_objects = wire_objects(reply)
            self.wire.append(Exchange(msg.object_id, asked_objects, reply.object_id, reply_objects))
            replies.append(
                message_from_wire(reply.object_id, reply_objects, reply.metadata.message_id)
            )
        return replies


def as_grid(stand_in: object) -> Grid:
    """A test's stand-in Grid (this LoopbackGrid, or a smaller one of a test's own) typed as Flower's.

    Flower's Grid is an abstract class; a stand-in implements only what the coordinator calls.
    """
    return cast(Grid, stand_in)


def server_context(run_id: int = 1) -> Context:
    return Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
