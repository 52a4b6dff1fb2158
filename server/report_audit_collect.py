"""The audit's collector: asking each site to audit a model over the Grid, and nothing else.

Every message the audit report depends on is sent here; the report is built from the replies.
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import WARNING
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedward.common.protocol import ARRAYS, CONFIG, KEY_AUDIT_MODEL, MSG_AUDIT
from fedward.server.site_tracking import reply_info


def site_audits(
    grid: Grid,
    nodes: list[int],
    config: Mapping[str, Any],
    arrays: Any,
    model_name: str,
    timeout: float,
    names: Mapping[int, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each site audits ``arrays``; returns the reply fields (or the refusal) by site."""
    cfg = ConfigRecord({**config, KEY_AUDIT_MODEL: model_name})
    messages = [
        Message(
            RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(dict(cfg))}),
            dst_node_id=n,
            message_type=MSG_AUDIT,
        )
        for n in nodes
    ]
    out: dict[str, dict[str, Any]] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        label = (names or {}).get(node, f"node {node}")
        if reply.has_error():
            out[label] = {"status": "failed", "reason": reply.error.reason}
            log(WARNING, "site %s failed its audit: %s", label, reply.error.reason)
            continue
        info = reply_info(reply)
        if node not in (names or {}):
            label = str(info.get("site", label))
        out[label] = dict(info)
    return out
