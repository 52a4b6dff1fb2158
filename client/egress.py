"""The one egress guard every reply a site sends passes through, errors included, as a Flower mod.

DESIGN.md's one rule of data flow: only aggregates leave a site. `EgressMod` wraps the guard
(``fedward.client.egress_guard``: every field a site may send is registered with its kind, and
each value is checked by it) as a Flower client mod (see ``flwr.clientapp.mod``) and sits
outermost: a reply that fails is replaced by a templated refusal, and an error reply's reason is
checked the same way. The minimum cell size is the site's own (its policy, raised by the
SuperNode operator's ``min-cell-size`` node config), never read from the reply being checked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fedward.client.egress_guard import (
    ARRAYS_RECORD,
    FEDWARD_RECORD,
    REASON_SOURCE,
    EgressGuard,
    EgressPolicy,
    EgressViolation,
    SiteRules,
    expected_from_array_record,
    is_number,
    rules_from_message,
)
from fedward.common.site_messages import SiteMessage

log = logging.getLogger(__name__)

REFUSED_STATUS = "egress-refused"
NODE_CONFIG_MIN_CELL = "min-cell-size"


@dataclass(frozen=True)
class SiteView:
    """The site as its own configuration declares it: name, dataset id, minimum cell size."""

    site: str
    min_cell_size: int
    dataset: str = ""


SiteResolver = Callable[[Message, Context], SiteView]


def _default_view(msg: Message, context: Context) -> SiteView:
    return SiteView(site=f"node {context.node_id}", min_cell_size=10)


def node_min_cell(context: Context, base: int) -> int:
    """The SuperNode operator's ``min-cell-size`` raises (never lowers) the site's own."""
    value = context.node_config.get(NODE_CONFIG_MIN_CELL, 0)
    node = int(value) if is_number(value) else 0
    return max(base, node, 1)


def refusal_content(site: str, message: SiteMessage) -> RecordDict:
    """A refusal's whole content: a status and one templated sentence, with its source."""
    return RecordDict(
        {
            FEDWARD_RECORD: ConfigRecord(
                {
                    "site": site,
                    "status": REFUSED_STATUS,
                    "reason": message.text,
                    REASON_SOURCE: message.to_json(),
                }
            )
        }
    )


@dataclass
class EgressMod:
    """Flower client mod running `EgressGuard` on every reply, outermost, errors included."""

    resolve: SiteResolver = _default_view
    policy: EgressPolicy = field(default_factory=EgressPolicy)

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        return self.guard(msg, context, reply)

    def errors_only(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        """The mod for transports whose own messages are protocol (SecAgg+): error replies only."""
        reply = call_next(msg, context)
        return self.guard(msg, context, reply) if reply.has_error() else reply

    def guard(self, msg: Message, context: Context, reply: Message) -> Message:
        try:
            view = self.resolve(msg, context)
        except Exception:  # an unusable site config: the strictest rules, a node id for a name
            log.warning("egress: site config unusable; applying the defaults", exc_info=True)
            view = _default_view(msg, context)
        cell = node_min_cell(context, max(view.min_cell_size, self.policy.min_cell_size))
        policy = EgressPolicy(min_cell_size=cell, max_list_len=self.policy.max_list_len)
        rules = rules_from_message(msg, site=view.site, dataset=view.dataset)
        if reply.has_error():
            return self._guard_error(msg, reply, rules, policy, view)
        if not reply.has_content():
            return reply
        sent = msg.content.get(ARRAYS_RECORD) if msg.has_content() else None
        # Arrays may only echo the model the coordinator sent; none sent -> none may go back.
        expected = expected_from_array_record(sent) if isinstance(sent, ArrayRecord) else {}
        record = reply.content.get(FEDWARD_RECORD)
        site = str(record.get("site")) if isinstance(record, ConfigRecord) else view.site
        rules = SiteRules(site=site, dataset=view.dataset, columns=rules.columns, echo=rules.echo)
        try:
            EgressGuard(policy, expected, rules).check(reply.content, site=site)
        except EgressViolation as exc:
            log.warning("%s", exc)
            reply.content = refusal_content(site, exc.public_message(site))
        return reply

    def _guard_error(
        self, msg: Message, reply: Message, rules: SiteRules, policy: EgressPolicy, view: SiteView
    ) -> Message:
        """An error reply's reason leaves too: it must be a templated refusal as JSON."""
        reason = reply.error.reason or ""
        try:
            data = json.loads(reason)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            content = RecordDict({FEDWARD_RECORD: ConfigRecord(data)})
            site = str(data.get("site", view.site))
            rules = SiteRules(
                site=site, dataset=view.dataset, columns=rules.columns, echo=rules.echo
            )
            EgressGuard(policy, {}, rules).check(content, site=site)
        except (ValueError, TypeError, EgressViolation) as exc:
            log.warning("egress: error reply refused (%s): %s", exc, reason[:200])
            message = SiteMessage("unexpected", {"site": view.site, "error": "Exception"})
            refused = dict(refusal_content(view.site, message)[FEDWARD_RECORD])
            return Message(Error(code=reply.error.code, reason=json.dumps(refused)), reply_to=msg)
        return reply


egress_mod = EgressMod()
"""The mod with no site config to read (minimum cell 10); the ClientApp builds its own."""
