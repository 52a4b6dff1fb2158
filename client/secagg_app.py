"""The site's ClientApp for the SecAgg+ mode: fedward's site logic inside Flower's legacy client.

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead") runs in Flower 1.41 only as ``secaggplus_mod`` around a legacy
``NumPyClient``, driven by the coordinator's legacy ``SecAggPlusWorkflow``
(``fedward.server.secagg_app``). The mod masks the model this client returns, so the coordinator
sees only the sum over the sites of a round.

Nothing about the site's own rules changes. ``fit`` is the same ``build_request`` + ``training_reply``
as the Message-API ClientApp (``fedward.client.app``): run-config and code approval, ledger
integrity and head, budget planning, the ledger entry committed before training, DP-SGD. The reply
passes the same egress guard (``fedward.client.egress``) before the mod masks it; ``evaluate`` is the
Message-API handler itself, behind the same guard. What leaves in the clear, beside the masked model:
the training-row count (SecAgg+'s weight), the scalar metrics returned here, and evaluation panels.

A site that refuses (policy, budget, data) answers with an error reply whose reason is the same
structured refusal as in the Message-API app, as JSON: to SecAgg+ it is a site that dropped out,
whose masks its neighbours' shares remove; to the coordinator it is a reported refusal.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, Metadata, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from fedward.client.app import evaluate, site_egress
from fedward.client.egress import REFUSED_STATUS
from fedward.client.handlers_training import training_reply
from fedward.client.reply_encoding import encode_reply, failure
from fedward.client.request import build_request
from fedward.common.errors import FedwardError
from fedward.common.models import build_model
from fedward.common.preprocessing import SharedTransform
from fedward.common.protocol import (
    ARRAYS,
    CONFIG,
    KEY_RUN,
    KEY_SCHEMA,
    KEY_TRANSFORM,
    METRICS,
    PRIVACY_FLOATS,
    REPLY,
    STATUS_OK,
)
from fedward.common.run_config import RunConfig
from fedward.common.schema import DataSchema
from fedward.common.secagg_wire import narrow_masked_vectors

# Scalars a site returns with its masked model, in the clear (the coordinator's per-site report).
FIT_METRIC_KEYS = ("train_loss", *PRIVACY_FLOATS, "steps", "ledger_seq")
FIT_TEXT_KEYS = ("site", "dataset", "privacy_unit", "ledger_head")


class SiteRefusal(FedwardError):
    """The site did not take part; ``info`` is its structured refusal (site, status, reason...)."""

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.info = dict(info)
        super().__init__(str(self.info.get("reason", "refused")))


def _instruction(context: Context, message_type: str, content: RecordDict, rnd: int) -> Message:
    """The Message-API message equivalent to a legacy instruction, for fedward's handlers."""
    meta = Metadata(
        run_id=context.run_id,
        message_id=uuid.uuid4().hex,
        src_node_id=0,
        dst_node_id=context.node_id,
        reply_to_message_id="",
        group_id=str(rnd),
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    # Flower builds delivered messages this way; the overload is not in its public type stubs.
    return Message(content=content, metadata=meta)  # type: ignore[call-overload]


def _weights(cfg: Mapping[str, Any], parameters: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Legacy parameters (state_dict order) -> named tensors with the run model's dtypes."""
    run = RunConfig.from_json(str(cfg[KEY_RUN]))
    schema = DataSchema.model_validate(json.loads(str(cfg[KEY_SCHEMA])))
    transform = SharedTransform.from_dict(json.loads(str(cfg[KEY_TRANSFORM])))
    template = build_model(run.model, transform.n_outputs, schema.image_shape, seed=run.seed)
    state = template.state_dict()
    if len(parameters) != len(state):
        raise FedwardError(
            f"the coordinator sent {len(parameters)} arrays; the run's model has {len(state)}"
        )
    out: dict[str, torch.Tensor] = {}
    for (key, ref), value in zip(state.items(), parameters, strict=True):
        if tuple(value.shape) != tuple(ref.shape):
            raise FedwardError(
                f"array '{key}' from the coordinator has shape {tuple(value.shape)}, "
                f"the run's model {tuple(ref.shape)}"
            )
        out[key] = torch.from_numpy(np.array(value, copy=True)).to(ref.dtype)
    return out


def _refused(reply: Message) -> SiteRefusal | None:
    info = dict(reply.content[REPLY]) if REPLY in reply.content.config_records else {}
    if info.get("status") == STATUS_OK:
        return None
    info.setdefault("status", REFUSED_STATUS)
    return SiteRefusal(info)


class SecAggSiteClient(NumPyClient):
    """fedward's site behind Flower's legacy client API (fit = one round of DP-SGD)."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        cfg = dict(config)
        weights = _weights(cfg, parameters)
        sent = ArrayRecord(weights)
        msg = _instruction(
            self.context,
            "train",
            RecordDict({ARRAYS: sent, CONFIG: ConfigRecord(cfg)}),
            int(cfg.get("server-round", 0)),
        )

        def train(m: Message, ctx: Context) -> Message:
            return encode_reply(m, training_reply(build_request(cfg, weights, ctx)))

        # The same egress guard as the Message-API app, on the reply before SecAgg+ masks it.
        reply = site_egress(msg, self.context, train)
        refusal = _refused(reply)
        if refusal is not None:
            raise refusal
        # The reply's records are heterogeneous field maps (encode_reply): REPLY a ConfigRecord,
        # METRICS a MetricRecord, ARRAYS an ArrayRecord; their values are read dynamically.
        info: dict[str, Any] = dict(reply.content[REPLY])
        metrics: dict[str, Any] = dict(reply.content[METRICS])
        arrays = cast(ArrayRecord, reply.content[ARRAYS])
        out = [arrays[key].numpy() for key in weights]
        scalars: dict[str, Any] = {
            key: float(value)
            for key, value in {**info, **metrics}.items()
            if key in FIT_METRIC_KEYS and isinstance(value, int | float)
        }
        scalars.update({k: str(info[k]) for k in FIT_TEXT_KEYS if k in info})
        scalars["non_dp_outputs"] = json.dumps(list(info.get("non_dp_outputs", [])))
        scalars["warnings"] = json.dumps(list(info.get("warnings", [])))
        return out, int(float(metrics["num-examples"])), scalars

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        cfg = dict(config)
        msg = _instruction(
            self.context,
            "evaluate",
            RecordDict({ARRAYS: ArrayRecord(_weights(cfg, parameters)), CONFIG: ConfigRecord(cfg)}),
            int(cfg.get("server-round", 0)),
        )
        reply = site_egress(msg, self.context, evaluate)
        refusal = _refused(reply)
        if refusal is not None:
            raise refusal
        info: dict[str, Any] = dict(reply.content[REPLY])
        panel: dict[str, Any] = dict(reply.content[METRICS])
        n = int(float(panel.pop("num-examples")))
        metrics: dict[str, Any] = {k: float(v) for k, v in panel.items()}
        metrics["site"] = str(info["site"])
        metrics["split"] = str(info.get("split", ""))
        metrics["histogram"] = json.dumps(
            {k[len("hist_") :]: v for k, v in info.items() if k.startswith("hist_")}
        )
        metrics["undefined_metrics"] = json.dumps(list(info.get("undefined_metrics", [])))
        metrics["non_dp_outputs"] = json.dumps(list(info.get("non_dp_outputs", [])))
        return float(metrics.get("brier", 0.0)), n, metrics


def refusal_as_error(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A site that does not take part answers with an error reply carrying its structured refusal.

    SecAgg+ treats an error reply as a drop-out (its neighbours' shares remove its masks); the
    reason is the same public text as the Message-API app's refusals (``reply_encoding.failure``), never row
    data, as JSON with the site's node id so the coordinator can stop asking it.
    """
    try:
        return call_next(msg, context)
    except Exception as exc:
        if isinstance(exc, SiteRefusal):
            info = exc.info
        else:
            info = dict(failure(msg, context, exc).content[REPLY])
        info["node_id"] = int(context.node_id)
        reason = json.dumps({k: v for k, v in info.items() if k != "min_cell_size"})
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg
        )


def narrow_masked_vector(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The masked model leaves as uint32 (``fedward.common.secagg_wire``): half the bytes."""
    reply = call_next(msg, context)
    if not reply.has_error():
        narrow_masked_vectors(reply.content)
    return reply


def client_fn(context: Context) -> Any:
    return SecAggSiteClient(context).to_client()


# Mods run outermost first: the egress guard checks every error reply (a refusal included) as it
# leaves; refusals become drop-outs around the whole SecAgg+ exchange, and the masked vectors
# Flower's mod made are narrowed on their way out.
app = ClientApp(
    client_fn=client_fn,
    mods=[site_egress.errors_only, refusal_as_error, narrow_masked_vector, secaggplus_mod],
)
