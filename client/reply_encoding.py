"""The site's one reply encoder: a handler's typed reply, or a refusal, as a Flower Message.

The last stage of the site's pipeline, inside the egress guard (``fedward.client.egress``), which
checks every Message this encoder makes on its way out. Handlers return a ``SiteReply``; a
handler that raises becomes a structured refusal: a templated sentence, never an exception's
text, path or cell (the whole story stays in the site's own log).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.logger import log

from fedward.client.egress_guard import REASON_SOURCE, WARNINGS_SOURCE, rules_from_message
from fedward.common.errors import FedwardError
from fedward.common.protocol import ARRAYS, REPLY, STATUS_ERROR, STATUS_OK, STATUS_REFUSED
from fedward.common.site_messages import ERROR_NAMES, SiteMessage, count_slot


@dataclass(frozen=True)
class SiteReply:
    """What a handler answers: the reply record's fields, metrics and model, before encoding."""

    site: str
    info: dict[str, Any] = field(default_factory=dict)
    min_cell_size: int = 10
    status: str = STATUS_OK
    metrics: dict[str, float] | None = None
    arrays: ArrayRecord | None = None


Handler = Callable[[Message, Context], SiteReply]


def encode_reply(msg: Message, reply: SiteReply) -> Message:
    """The reply Message: the record's site, status and minimum cell first, then the handler's
    fields; notices become cell-safe warnings."""
    content = RecordDict()
    if reply.arrays is not None:
        content[ARRAYS] = reply.arrays
    if reply.metrics is not None:
        content["metrics"] = MetricRecord(reply.metrics)  # type: ignore[arg-type]
    min_cell_size = reply.min_cell_size
    record: dict[str, Any] = {
        "site": reply.site,
        "status": reply.status,
        "min_cell_size": min_cell_size,
    }
    record.update(reply.info or {})
    notices = record.pop("notices", None)
    if notices is not None:
        messages = [cell_safe(n, min_cell_size) for n in notices]
        record["warnings"] = [m.text for m in messages]
        record[WARNINGS_SOURCE] = [m.to_json() for m in messages]
    content[REPLY] = ConfigRecord(record)
    return Message(content, reply_to=msg)


def cell_safe(notice: SiteMessage, min_cell: int) -> SiteMessage:
    """A warning's count under the minimum cell becomes "fewer than N"."""
    count = notice.slots.get("count")
    if notice.code == "warn-out-of-range" and not count_slot(int(count or 0), min_cell):
        return SiteMessage(
            "warn-out-of-range-few", {"column": notice.slots["column"], "min_cell": min_cell}
        )
    return notice


def public_message(exc: Exception, site: str, msg: Message) -> SiteMessage:
    """The templated sentence a refusal carries; the full text stays in the site's log."""
    if not isinstance(exc, FedwardError):
        name = type(exc).__name__
        return SiteMessage(
            "unexpected", {"site": site, "error": name if name in ERROR_NAMES else "Exception"}
        )
    message = exc.public_message(site)
    column = message.slots.get("column")
    if column is not None and column not in rules_from_message(msg, site=site).columns:
        # A column the run's schema does not declare may be a header cell: name none.
        return SiteMessage("data-invalid", {"site": site})
    return message


def failure_reply(msg: Message, context: Context, exc: Exception) -> SiteReply:
    """A structured refusal: a templated sentence, never an exception's text, path or cell."""
    site = str(getattr(exc, "site", None) or f"node {context.node_id}")
    status = STATUS_REFUSED if isinstance(exc, FedwardError) else STATUS_ERROR
    # The whole story, paths and cells included, stays in the site's own log.
    log(WARNING, "fedward site %s: %s\n%s", site, exc, traceback.format_exc(limit=5))
    message = public_message(exc, site, msg)
    info: dict[str, Any] = {
        "reason": message.text,
        REASON_SOURCE: message.to_json(),
        "error_kind": type(exc).__name__ if type(exc).__name__ in ERROR_NAMES else "Exception",
    }
    remaining = getattr(exc, "remaining_epsilon", None)
    if remaining is not None:
        info["epsilon_remaining"] = float(remaining)
    return SiteReply(site, info, status=status)


def failure(msg: Message, context: Context, exc: Exception) -> Message:
    """The refusal of ``failure_reply``, encoded."""
    return encode_reply(msg, failure_reply(msg, context, exc))


def guarded(handler: Handler) -> Callable[[Message, Context], Message]:
    """The handler as Flower calls it: its reply encoded, or whatever it raised as a refusal."""

    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return encode_reply(msg, handler(msg, context))
        except Exception as exc:
            return failure(msg, context, exc)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped
