"""The site's one reply encoder: a handler's typed reply, or what it raised, as a Flower Message."""

from __future__ import annotations

import json
from typing import Any

from flwr.app import Context, Message, RecordDict

from fedward.client.reply_encoding import SiteReply, encode_reply, guarded
from fedward.common.errors import PolicyError
from fedward.common.protocol import REPLY
from fedward.common.site_messages import SiteMessage
from tests.conftest import make_context, make_message


def _msg() -> Message:
    return make_message(RecordDict(), "train")


def test_the_record_starts_with_site_status_and_minimum_cell() -> None:
    reply = encode_reply(_msg(), SiteReply("cleveland", {"n_train": 200}, 12))
    record = dict(reply.content[REPLY])
    assert list(record)[:4] == ["site", "status", "min_cell_size", "n_train"]
    assert record["status"] == "ok" and record["min_cell_size"] == 12
    assert reply.metadata.reply_to_message_id


def test_notices_leave_as_cell_safe_warnings() -> None:
    notice = SiteMessage("warn-out-of-range", {"column": "age", "count": 3})
    record = dict(encode_reply(_msg(), SiteReply("va", {"notices": [notice]}, 10)).content[REPLY])
    assert "notices" not in record
    assert "3" not in json.dumps(record["warnings"])


def test_a_handler_that_raises_answers_with_a_refusal() -> None:
    def handler(msg: Message, context: Context) -> SiteReply:
        raise PolicyError("cleveland", "not today").publicly("policy-refused", policy="test")

    record: dict[str, Any] = dict(guarded(handler)(_msg(), make_context({})).content[REPLY])
    assert record["status"] == "refused" and record["site"] == "cleveland"
    assert record["error_kind"] == "PolicyError" and "not today" not in record["reason"]


def test_an_encoding_fault_is_a_refusal_too() -> None:
    def handler(msg: Message, context: Context) -> SiteReply:
        return SiteReply("cleveland", {"bad": object()})

    record = dict(guarded(handler)(_msg(), make_context({})).content[REPLY])
    assert record["status"] == "error"
