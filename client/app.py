"""The site's ClientApp: DP-SGD training, tune/test evaluation and DP preprocessing aggregates.

The site decides. Before anything leaves, it checks that the run config and its own code are
approved, that its privacy ledger is intact and has not been rolled back, and that the release fits
its budget; the release is then committed to the ledger *before* the reply is built. Every reply
passes the egress guard (``fedward.client.egress``). A site that cannot take part answers with a
structured refusal instead of crashing, so the coordinator can report it and go on.

The site's pipeline, one module per stage: ``request`` (site resolution, ledger integrity and head,
withdrawal and approval, all before any data is opened), ``privacy_transaction`` (plan, check and
append in one ledger transaction: the only ledger writer), the handlers (``handlers_training``,
``handlers_evaluation``, ``handlers_audit``, ``handlers_release``) returning typed replies, and
``reply_encoding``, the one encoder, inside the egress guard. This module only composes them.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedward.client.egress import EgressMod, SiteView
from fedward.client.handlers_audit import audit
from fedward.client.handlers_evaluation import baselines
from fedward.client.handlers_evaluation import evaluate as evaluate_handler
from fedward.client.handlers_release import profile, query
from fedward.client.handlers_training import train
from fedward.client.reply_encoding import failure, guarded
from fedward.client.site import resolve_site
from fedward.common.errors import MessageError
from fedward.common.protocol import (
    CONFIG,
    KEY_RUN,
    KEY_SIM_SITES,
    MSG_AUDIT,
    MSG_BASELINES,
    MSG_PROFILE,
)
from fedward.common.run_config import RunConfig

__all__ = [
    "HANDLED_MESSAGE_TYPES",
    "app",
    "evaluate",
    "site_egress",
    "site_view",
]

HANDLED_MESSAGE_TYPES = ("train", "evaluate", "query", MSG_BASELINES, MSG_AUDIT, MSG_PROFILE)


class _SiteApp(ClientApp):
    """Flower's ClientApp, answering a message type it has no handler for with a refusal.

    Flower raises for such a message; the SuperNode survives it, but the coordinator then only
    learns that the app raised. The site names what it was asked instead.
    """

    def __call__(self, message: Message, context: Context) -> Message:
        kind = message.metadata.message_type
        if kind.removesuffix(".default") not in HANDLED_MESSAGE_TYPES:
            known = ", ".join(HANDLED_MESSAGE_TYPES)
            return failure(
                message,
                context,
                MessageError(
                    "message_type", None, f"'{kind}' is not one this site answers ({known})"
                ).publicly("message-type-unknown"),
            )
        return super().__call__(message, context)


def site_view(msg: Message, context: Context) -> SiteView:
    """The egress guard's view of this site: its own config's name and minimum cell, no data."""
    cfg = msg.content.config_records.get(CONFIG) if msg.has_content() else None
    sims: Any = []
    if cfg is not None and isinstance(cfg.get(KEY_SIM_SITES), str):
        sims = json.loads(str(cfg[KEY_SIM_SITES]) or "[]")
    run = RunConfig.from_json(str(cfg[KEY_RUN])) if cfg is not None and KEY_RUN in cfg else None
    if run is None:
        return SiteView(site=f"node {context.node_id}", min_cell_size=10)
    entry = resolve_site(dict(context.node_config), run, list(sims))
    return SiteView(entry.name, entry.policy.min_cell_size, entry.dataset_id)


site_egress = EgressMod(resolve=site_view)
"""The egress guard with this site's own name and minimum cell size; outermost on every reply."""

app = _SiteApp(mods=[site_egress])


def _subtype(message_type: str) -> str:
    """Flower's action name of a fedward message type ("evaluate.baselines" -> "baselines")."""
    return message_type.split(".", 1)[1]


evaluate = app.evaluate()(guarded(evaluate_handler))
"""The evaluate handler as Flower calls it (the SecAgg+ mode's legacy client calls it too)."""
app.train()(guarded(train))
app.evaluate(_subtype(MSG_BASELINES))(guarded(baselines))
app.evaluate(_subtype(MSG_AUDIT))(guarded(audit))
app.query(_subtype(MSG_PROFILE))(guarded(profile))
app.query()(guarded(query))
