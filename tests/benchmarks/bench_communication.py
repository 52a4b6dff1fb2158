"""Bytes a site sends and receives per round, against the size of the model, with and without SecAgg+.

A real federation runs in-process: four sites of the bundled digits dataset (IID), an MLP of more
than 100k parameters, DP-SGD at every site, baselines and audit off. The coordinator is fedward's own
(``coordinate`` for the Message-API path, ``coordinate_secagg`` for Flower's legacy SecAgg+ workflow)
behind ``tests.server.loopback.LoopbackGrid``; the sites run the real ClientApps.

Every message crosses a wire boundary exactly as in a deployment: the instruction is deflated into
Flower's Inflatable objects (the ``Message``, its ``RecordDict``, records, ``Array`` and
``ArrayChunk`` objects, each identified by the SHA-256 of its bytes), inflated again on the site's
side, and the reply goes back the same way. Those objects are what a SuperNode and the SuperLink
exchange over the Fleet API. A site's traffic for one message is every Fleet API request and
response it takes:

- receiving an instruction: ``PullMessages`` (the envelope: metadata and object tree), one
  ``PullObject`` per distinct object of the tree, ``ConfirmMessageReceived``;
- sending its reply: ``PushMessages`` (envelope and object tree), one ``PushObject`` per distinct
  object.

Requests are the site's uplink, responses its downlink. Each protobuf body is counted at its
serialized size (Flower's own traffic accounting at the SuperLink, ``store_traffic``, counts the
same message bodies and object contents). flwr 1.42's SuperNode sends these requests as protobuf
over HTTP/1.1, each with a head that carries the node's public key and a signed timestamp: every
request goes through Flower's own Fleet client and interceptors, with the network replaced by a
meter, and its head is counted too; figures without the heads are reported beside. Not counted:
the SuperLink's HTTP response heads, TLS records, TCP/IP, node heartbeats and empty polls (these
depend on time, not on the model).

A round is what the coordinator asks in it: for the Message-API path a ``train`` message and an
``evaluate`` (tune) message; under SecAgg+ the four SecAgg+ stages (setup, share keys, the masked
model, unmask) and the ``evaluate`` (tune) message. The sealed test read and the data profiles after
the last round are reported apart. Model size = number of parameters x 4 bytes (float32).

    python -m tests.benchmarks.bench_communication [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
import types
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import httpx
from flwr.app import ConfigRecord, Context, Message
from flwr.app.message.message import remove_content_from_message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.serde import message_to_proto
from flwr.proto.fleet_pb2 import (
    PullMessagesRequest,
    PullMessagesResponse,
    PushMessagesRequest,
    PushMessagesResponse,
)
from flwr.proto.message_pb2 import (
    ConfirmMessageReceivedRequest,
    ConfirmMessageReceivedResponse,
    PullObjectRequest,
    PullObjectResponse,
    PushObjectRequest,
    PushObjectResponse,
)
from flwr.proto.node_pb2 import Node
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.interceptors.http.runtime_version import RuntimeVersionHttpInterceptor
from flwr.supercore.primitives.asymmetric import generate_key_pairs
from flwr.supernode.fleet_http_client import FleetHttpClient
from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

from fedward.client.app import app as message_api_app
from fedward.client.secagg_app import app as secagg_app
from fedward.common.models import build_model
from fedward.common.preprocessing import SharedTransform
from fedward.common.protocol import KEY_SPLIT
from fedward.common.run_config import RunConfig, run_schema
from fedward.server.app import coordinate
from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.run_folder import RunFolder
from fedward.server.secagg_app import coordinate_secagg
from tests.benchmarks.report import print_rows, row
from tests.server.loopback import LoopbackGrid, server_context

N_SITES = 4
ROUNDS = 3
TARGET_RATIO = 1.1
# Two hidden layers on the 64 digit pixels: 64*1024 + 1024 + 1024*64 + 64 + 64 + 1 = 132,225.
HIDDEN = [1024, 64]
MODES = {"message-api": "fedward (Message API)", "secagg+": "SecAgg+ (Flower legacy workflow)"}
SECAGG_STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
# The message whose reply carries the site's model, per mode.
MODEL_REPLY = {"message-api": "train", "secagg+": "secagg+ collect_masked_vectors"}
# Node and run ids of a deployment are random 64-bit integers: the longest varints.
NODE_ID_BASE = 1 << 63
RUN_ID = (1 << 63) + 7


def run_config(rounds: int, *, secure_aggregation: bool) -> RunConfig:
    """The benchmark's run: DP on, nothing but the rounds (baselines, audit, tuning off)."""
    return RunConfig.model_validate(
        {
            "name": "communication",
            "rounds": rounds,
            "task": {"dataset": "digits", "partition": "iid", "n_sites": N_SITES},
            "model": {"kind": "mlp", "hidden": HIDDEN},
            "baselines": {"enabled": False},
            "audit": {"enabled": False},
            "evaluation": {"bootstrap": 20},
            "strategy": {"secure_aggregation": secure_aggregation},
        }
    )


def model_size(run: RunConfig) -> int:
    """Parameters of the run's model, as the coordinator builds it."""
    schema = run_schema(run)
    n_inputs = SharedTransform.from_schema(schema).n_outputs
    model = build_model(run.model, n_inputs, schema.image_shape, seed=run.seed)
    return sum(t.numel() for t in model.state_dict().values())


# ---- the wire --------------------------------------------------------------------------------------


def wire_objects(msg: Message) -> dict[str, bytes]:
    """The message as Flower transfers it: each distinct Inflatable object, deflated, by its id."""
    return {oid: obj.deflate() for oid, obj in get_all_nested_objects(msg).items()}


def through_the_wire(msg: Message, objects: dict[str, bytes], message_id: str) -> Message:
    """The message the other side rebuilds from the transferred objects (nothing shared in memory)."""
    copy = inflate_object_from_contents(msg.object_id, dict(objects), keep_object_contents=True)
    assert isinstance(copy, Message)
    copy.metadata.__dict__["_message_id"] = message_id  # set by the SuperLink/SuperNode, as there
    return copy


SUPERLINK = "superlink:9092"  # the Fleet API address a site dials (its Host header)


def http_head(request: httpx.Request) -> bytes:
    """An HTTP/1.1 request head as httpx writes it: request line, headers, blank line."""
    line = request.method.encode() + b" " + request.url.raw_path + b" HTTP/1.1\r\n"
    return line + b"".join(k + b": " + v + b"\r\n" for k, v in request.headers.raw) + b"\r\n"


@dataclass
class Traffic:
    """Fleet API traffic of one exchange, seen from the site: protobuf bodies and HTTP heads."""

    up: int = 0  # request bodies
    down: int = 0  # response bodies
    heads_up: int = 0  # request heads (flwr 1.42's HTTP transport)
    rpcs: int = 0


class FleetLink:
    """One SuperNode's Fleet API client as flwr ships it, its network replaced by a meter.

    In flwr 1.42 a SuperNode speaks protobuf over HTTP/1.1 (httpx), and every request's head carries
    the node's public key and a signed timestamp (its interceptors). Sending each request through
    that client measures the head; the SuperLink's answers are built here.
    """

    def __init__(self, node_id: int) -> None:
        self.node = Node(node_id=node_id)
        self._answer = b""
        self._head = 0
        self.client = self._http_client()

    def _http_client(self) -> FleetHttpClient:
        private, public = generate_key_pairs()
        client = FleetHttpClient.from_server_address(
            SUPERLINK,
            False,
            None,
            interceptors=[
                RuntimeVersionHttpInterceptor(component_name="SuperNode"),
                NodeAuthHttpInterceptor(private, public),
            ],
        )
        client._client.close()
        client._client = httpx.Client(transport=httpx.MockTransport(self._serve))
        return client

    def _serve(self, request: httpx.Request) -> httpx.Response:
        self._head = len(http_head(request))
        return httpx.Response(200, content=self._answer)

    def call(self, traffic: Traffic, rpc: str, request: Any, response: Any) -> None:
        traffic.up += request.ByteSize()
        traffic.down += response.ByteSize()
        traffic.rpcs += 1
        self._answer = response.SerializeToString(deterministic=True)
        getattr(self.client, rpc)(request)
        traffic.heads_up += self._head

    def pull(self, msg: Message, objects: dict[str, bytes]) -> Traffic:
        """Receiving ``msg``: PullMessages, one PullObject per object, ConfirmMessageReceived."""
        t = Traffic()
        envelope = message_to_proto(remove_content_from_message(msg))
        self.call(
            t,
            "PullMessages",
            PullMessagesRequest(node=self.node),
            PullMessagesResponse(
                messages_list=[envelope], message_object_trees=[get_object_tree(msg)]
            ),
        )
        for oid, content in objects.items():
            self.call(
                t,
                "PullObject",
                PullObjectRequest(node=self.node, run_id=RUN_ID, object_id=oid),
                PullObjectResponse(
                    object_found=True, object_available=True, object_content=content
                ),
            )
        self.call(
            t,
            "ConfirmMessageReceived",
            ConfirmMessageReceivedRequest(
                node=self.node, run_id=RUN_ID, message_object_id=msg.object_id
            ),
            ConfirmMessageReceivedResponse(),
        )
        return t

    def push(self, reply: Message, objects: dict[str, bytes], runtime_s: float) -> Traffic:
        """Sending ``reply``: PushMessages, then one PushObject per object the SuperLink asks for."""
        t = Traffic()
        session = uuid.uuid4().hex
        self.call(
            t,
            "PushMessages",
            PushMessagesRequest(
                node=self.node,
                messages_list=[message_to_proto(remove_content_from_message(reply))],
                message_object_trees=[get_object_tree(reply)],
                clientapp_runtime_list=[runtime_s],
            ),
            PushMessagesResponse(objects_to_push=list(objects), session_id=session),
        )
        for oid, content in objects.items():
            self.call(
                t,
                "PushObject",
                PushObjectRequest(
                    node=self.node,
                    run_id=RUN_ID,
                    object_id=oid,
                    object_content=content,
                    session_id=session,
                ),
                PushObjectResponse(stored=True),
            )
        return t


# ---- capture ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One instruction to one site and its reply, in bytes."""

    site: int
    round: int | None
    kind: str
    instruction_payload: int  # the instruction's deflated objects
    reply_payload: int  # the reply's deflated objects
    pull_up: int  # request bodies the site sent to fetch the instruction
    pull_down: int  # response bodies it received: the instruction
    push_up: int  # request bodies the site sent to deliver its reply
    push_down: int  # the SuperLink's answers to those
    pull_heads_up: int  # HTTP heads of the fetching requests
    push_heads_up: int  # HTTP heads of the delivering requests
    rpcs: int
    error: bool

    @property
    def up(self) -> int:
        """Everything the site sent for this exchange (short of TLS and TCP/IP)."""
        return self.pull_up + self.push_up + self.pull_heads_up + self.push_heads_up

    @property
    def up_bodies(self) -> int:
        return self.pull_up + self.push_up

    @property
    def reply_up(self) -> int:
        """What delivering the reply cost: its requests' bodies and heads."""
        return self.push_up + self.push_heads_up

    @property
    def down(self) -> int:
        return self.pull_down + self.push_down


def _config_records(msg: Message) -> list[ConfigRecord]:
    return list(msg.content.config_records.values()) if msg.has_content() else []


def kind_of(msg: Message) -> str:
    """What the coordinator asked: train, evaluate (tune/test), a SecAgg+ stage, a query."""
    if msg.has_content():
        secagg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        stage = secagg.get(Key.STAGE) if secagg is not None else None
        if isinstance(stage, str):
            return f"secagg+ {stage}"
    for rec in _config_records(msg):
        split = rec.get(KEY_SPLIT)
        if isinstance(split, str):
            return f"{msg.metadata.message_type} ({split})"
    return msg.metadata.message_type


def round_of(msg: Message) -> int | None:
    """The round a message belongs to: Flower's group id, else the config's server-round."""
    if msg.metadata.group_id.isdigit():
        return int(msg.metadata.group_id)
    for rec in _config_records(msg):
        value = rec.get("server-round")
        if isinstance(value, int):
            return value
    return None


class WireApp:
    """The site's ClientApp behind a wire: it sees, and answers with, only what crossed it."""

    def __init__(self, app: Callable[[Message, Context], Message]) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []
        self.links: dict[int, FleetLink] = {}  # one client and key pair per site, as a SuperNode

    def __call__(self, msg: Message, context: Context) -> Message:
        link = self.links.get(context.node_id)
        if link is None:
            link = self.links[context.node_id] = FleetLink(NODE_ID_BASE + context.node_id)
        kind, rnd = kind_of(msg), round_of(msg)
        sent = wire_objects(msg)
        pulled = link.pull(msg, sent)
        started = time.perf_counter()
        reply = self.app(through_the_wire(msg, sent, msg.metadata.message_id), context)
        runtime = time.perf_counter() - started
        back = wire_objects(reply)
        pushed = link.push(reply, back, runtime)
        self.exchanges.append(
            Exchange(
                site=context.node_id,
                round=rnd,
                kind=kind,
                instruction_payload=sum(map(len, sent.values())),
                reply_payload=sum(map(len, back.values())),
                pull_up=pulled.up,
                pull_down=pulled.down,
                push_up=pushed.up,
                push_down=pushed.down,
                pull_heads_up=pulled.heads_up,
                push_heads_up=pushed.heads_up,
                rpcs=pulled.rpcs + pushed.rpcs,
                error=reply.has_error(),
            )
        )
        return through_the_wire(reply, back, reply.object_id)


class LegacyLoopbackGrid(LoopbackGrid):
    """LoopbackGrid with the ``run`` attribute Flower's legacy workflow reads (its client manager)."""

    def __init__(self, client_app: Any, num_sites: int, run_id: int = 1) -> None:
        super().__init__(client_app, num_sites, run_id)
        self.run = types.SimpleNamespace(run_id=run_id)


@contextlib.contextmanager
def quiet_flower() -> Iterator[None]:
    """Flower logs every message at INFO; the table is what this prints."""
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---- one federation --------------------------------------------------------------------------------


def federate(mode: str, rounds: int, tmp: Path) -> tuple[list[Exchange], dict[str, Any]]:
    """Run one federation through the wire; returns its exchanges and the run's record."""
    secure = mode == "secagg+"
    run = run_config(rounds, secure_aggregation=secure)
    wire = WireApp(secagg_app if secure else message_api_app)
    settings = CoordinatorSettings(run=run, run_dir=str(tmp / mode), engine="simulation")
    folder: RunFolder
    with quiet_flower():
        # The loopback grids implement only what the coordinator calls of Flower's abstract Grid.
        if secure:
            folder = coordinate_secagg(
                cast(Grid, LegacyLoopbackGrid(wire, N_SITES)), server_context(), settings
            )
        else:
            folder = coordinate(cast(Grid, LoopbackGrid(wire, N_SITES)), server_context(), settings)
    record = json.loads((folder.path / "run_record.json").read_text(encoding="utf-8"))
    if record["status"] != "finished" or len(record["participating"]) != N_SITES:
        raise RuntimeError(
            f"{mode}: the federation did not finish with all {N_SITES} sites: "
            f"status {record['status']}, left out {record['left_out']}"
        )
    if secure:
        done = record["privacy"]["secure_aggregation"]["rounds"]
        if [(r["completed"], r["sites_in_sum"]) for r in done] != [(True, N_SITES)] * rounds:
            raise RuntimeError(f"secagg+: not every round unmasked a sum of all sites: {done}")
    errors = [e for e in wire.exchanges if e.error]
    if errors:
        raise RuntimeError(f"{mode}: {len(errors)} error replies, first: {errors[0]}")
    # The same work in both modes: the final model's pooled test AUROC, as a sanity check.
    test = json.loads((folder.path / "metrics.json").read_text(encoding="utf-8"))["test"]
    record["test_auroc"] = float(test["pooled"]["auroc"])
    return wire.exchanges, record


def summarise(
    mode: str, exchanges: list[Exchange], rounds: int, model_bytes: int
) -> dict[str, Any]:
    """Per site and round: uplink and downlink, by message kind, and their ratios to the model."""
    per_round_kinds = {"train", "evaluate (tune)", *(f"secagg+ {s}" for s in SECAGG_STAGES)}
    cells: dict[tuple[int, int], list[Exchange]] = defaultdict(list)
    after: dict[int, list[Exchange]] = defaultdict(list)
    for e in exchanges:
        if e.kind in per_round_kinds and e.round is not None:
            cells[(e.site, e.round)].append(e)
        else:
            after[e.site].append(e)
    sites = sorted({e.site for e in exchanges})
    expected = {(s, r) for s in sites for r in range(1, rounds + 1)}
    if set(cells) != expected:
        raise RuntimeError(f"{mode}: site-rounds seen {sorted(cells)}, expected {sorted(expected)}")
    model_kind = MODEL_REPLY[mode]
    table: list[dict[str, Any]] = []
    for (site, rnd), es in sorted(cells.items()):
        replies = [e for e in es if e.kind == model_kind]
        if len(replies) != 1:
            raise RuntimeError(f"{mode}: site {site} round {rnd}: {len(replies)} model replies")
        (reply,) = replies
        up = sum(e.up for e in es)
        up_bodies = sum(e.up_bodies for e in es)
        down = sum(e.down for e in es)
        table.append(
            {
                "site": site,
                "round": rnd,
                "uplink_bytes": up,
                "uplink_body_bytes": up_bodies,
                "downlink_bytes": down,
                "model_reply_bytes": reply.reply_up,
                "model_reply_body_bytes": reply.push_up,
                "uplink_ratio": up / model_bytes,
                "uplink_body_ratio": up_bodies / model_bytes,
                "model_reply_ratio": reply.reply_up / model_bytes,
                "model_reply_body_ratio": reply.push_up / model_bytes,
                "downlink_ratio": down / model_bytes,
                "requests": sum(e.rpcs for e in es),
                "by_kind": {e.kind: {"uplink_bytes": e.up, "downlink_bytes": e.down} for e in es},
            }
        )
    by_kind = {}
    for kind in sorted({e.kind for es in cells.values() for e in es}):
        ks = [e for es in cells.values() for e in es if e.kind == kind]
        by_kind[kind] = {
            "per_site_round": len(ks) / len(cells),
            "uplink_bytes_mean": statistics.fmean(e.up for e in ks),
            "downlink_bytes_mean": statistics.fmean(e.down for e in ks),
            "reply_payload_mean": statistics.fmean(e.reply_payload for e in ks),
            "instruction_payload_mean": statistics.fmean(e.instruction_payload for e in ks),
        }
    in_rounds = [e for es in cells.values() for e in es]
    heads = sum(e.pull_heads_up + e.push_heads_up for e in in_rounds)
    after_kinds = sorted({e.kind for es in after.values() for e in es})
    return {
        "mode": MODES[mode],
        "sites": len(sites),
        "rounds": rounds,
        "per_site_round": table,
        "by_kind": by_kind,
        "uplink_bytes_mean": statistics.fmean(r["uplink_bytes"] for r in table),
        "downlink_bytes_mean": statistics.fmean(r["downlink_bytes"] for r in table),
        "uplink_ratio_max": max(r["uplink_ratio"] for r in table),
        "uplink_body_ratio_max": max(r["uplink_body_ratio"] for r in table),
        "model_reply_ratio_max": max(r["model_reply_ratio"] for r in table),
        "model_reply_body_ratio_max": max(r["model_reply_body_ratio"] for r in table),
        "downlink_ratio_max": max(r["downlink_ratio"] for r in table),
        "requests_per_site_round": statistics.fmean(r["requests"] for r in table),
        "http_heads_per_site_round": heads / len(cells),
        "http_head_mean": heads / sum(e.rpcs for e in in_rounds),
        "after_rounds": {
            kind: {
                "uplink_bytes_per_site": statistics.fmean(
                    sum(e.up for e in es if e.kind == kind) for es in after.values()
                ),
                "downlink_bytes_per_site": statistics.fmean(
                    sum(e.down for e in es if e.kind == kind) for es in after.values()
                ),
            }
            for kind in after_kinds
        },
    }


# ---- the suite's interface -------------------------------------------------------------------------


def _row(
    comparison: str,
    measure: str,
    value: float,
    unit: str,
    target: float | None = None,
) -> dict[str, Any]:
    if target is None:
        return row(comparison, measure, value, unit)
    return row(comparison, measure, value, unit, f"<= {target:g}", bool(value <= target))


def rows_of(results: dict[str, Any], params: int, model_bytes: int) -> list[dict[str, Any]]:
    """The suite's rows: the targets first, then where the bytes go."""
    rows = [
        _row("model", "parameters", params, "parameters"),
        _row("model", "size (float32)", model_bytes, "bytes"),
    ]
    for mode, label in MODES.items():
        r = results[mode]
        reply = f"{MODEL_REPLY[mode]} reply only"
        everything = "everything a site sends in a round"
        rows += [
            _row(
                label,
                f"uplink / model, {reply} (max over site-rounds)",
                r["model_reply_ratio_max"],
                "x",
                TARGET_RATIO,
            ),
            _row(
                label,
                f"uplink / model, {everything} (max over site-rounds)",
                r["uplink_ratio_max"],
                "x",
                TARGET_RATIO,
            ),
            _row(
                label,
                f"uplink / model, {reply}, protobuf bodies without HTTP heads (max)",
                r["model_reply_body_ratio_max"],
                "x",
            ),
            _row(
                label,
                f"uplink / model, {everything}, protobuf bodies without HTTP heads (max)",
                r["uplink_body_ratio_max"],
                "x",
            ),
            _row(label, "uplink per site per round (mean)", r["uplink_bytes_mean"], "bytes"),
            _row(label, "downlink per site per round (mean)", r["downlink_bytes_mean"], "bytes"),
            _row(
                label,
                "downlink / model per round (max over site-rounds)",
                r["downlink_ratio_max"],
                "x",
            ),
            _row(
                label,
                "Fleet API requests per site per round",
                r["requests_per_site_round"],
                "requests",
            ),
            _row(
                label,
                "HTTP request heads per site per round",
                r["http_heads_per_site_round"],
                "bytes",
            ),
            _row(label, "HTTP request head (mean)", r["http_head_mean"], "bytes"),
        ]
        after = r["after_rounds"].values()
        rows += [
            _row(
                label,
                f"after the rounds, per site ({', '.join(r['after_rounds'])}): uplink",
                sum(k["uplink_bytes_per_site"] for k in after),
                "bytes",
            ),
            _row(
                label,
                f"after the rounds, per site ({', '.join(r['after_rounds'])}): downlink",
                sum(k["downlink_bytes_per_site"] for k in after),
                "bytes",
            ),
        ]
    return rows


def measure(*, quick: bool = False) -> dict[str, Any]:
    """Run both federations and report bytes per site per round against the model's size."""
    rounds = 1 if quick else ROUNDS
    run = run_config(rounds, secure_aggregation=False)
    params = model_size(run)
    model_bytes = 4 * params
    results: dict[str, Any] = {}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="fedward-communication-") as tmp:
        for mode in MODES:
            exchanges, record = federate(mode, rounds, Path(tmp))
            results[mode] = summarise(mode, exchanges, rounds, model_bytes)
            results[mode]["test_auroc"] = round(record["test_auroc"], 4)
            results[mode]["exchanges"] = [asdict(e) for e in exchanges]
    sa = run_config(rounds, secure_aggregation=True).strategy.secagg
    setup = {
        "dataset": "digits (bundled, scikit-learn), IID",
        "sites": N_SITES,
        "rounds": rounds,
        "model": {"kind": "mlp", "hidden": HIDDEN, "activation": run.model.activation},
        "parameters": params,
        "model_bytes": model_bytes,
        "dp": run.privacy.dp,
        "target_epsilon": run.privacy.target_epsilon,
        "baselines": False,
        "audit": False,
        "secagg": {
            "num_shares": sa.num_shares,
            "reconstruction_threshold": sa.reconstruction_threshold,
            "quantization_range": sa.quantization_range,
            "clipping_range": sa.clipping_range,
        },
        "serialization": "Flower's Inflatable objects (Message, RecordDict, records, Array, "
        "ArrayChunk, deflated) inside the Fleet API's protobuf requests and responses: "
        "PullMessages/PullObject/ConfirmMessageReceived to receive, PushMessages/PushObject to "
        "reply; every body at its serialized size, every request's HTTP/1.1 head as Flower's "
        "Fleet client and its interceptors write it (node public key, signed timestamp); "
        "response heads, TLS, TCP/IP, heartbeats and empty polls not counted",
        "superlink_address": SUPERLINK,
        "engine": "in-process: fedward's coordinator behind LoopbackGrid, the real ClientApps, "
        "every message deflated and inflated across the boundary",
        "flwr": metadata.version("flwr"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "wall_s": round(time.time() - started, 1),
    }
    return {
        "name": "communication",
        "setup": setup,
        "results": results,
        "rows": rows_of(results, params, model_bytes),
    }


def print_report(report: dict[str, Any]) -> None:
    """Per site and round for each mode, then the suite's rows."""
    setup = report["setup"]
    print(
        f"communication: {setup['sites']} sites x {setup['rounds']} round(s), "
        f"MLP {setup['model']['hidden']}, {setup['parameters']:,} parameters = "
        f"{setup['model_bytes']:,} bytes (float32), flwr {setup['flwr']}"
    )
    for mode, label in MODES.items():
        r = report["results"][mode]
        print(f"\n{label}: per site per round (ratios to the model's bytes)")
        print(
            f"{'site':>4} {'round':>5} {'uplink B':>11} {'up/model':>9} {'bodies':>7} "
            f"{'model reply':>11} {'bodies':>7} {'downlink B':>11} {'down/model':>10}"
        )
        for c in r["per_site_round"]:
            print(
                f"{c['site']:>4} {c['round']:>5} {c['uplink_bytes']:>11,} "
                f"{c['uplink_ratio']:>8.3f}x {c['uplink_body_ratio']:>6.3f}x "
                f"{c['model_reply_ratio']:>10.3f}x {c['model_reply_body_ratio']:>6.3f}x "
                f"{c['downlink_bytes']:>11,} {c['downlink_ratio']:>9.3f}x"
            )
        print(f"\n{label}: per site, by message (means)")
        print(f"{'message':<32} {'per round':>9} {'uplink B':>11} {'downlink B':>11}")
        for kind, k in r["by_kind"].items():
            print(
                f"{kind:<32} {k['per_site_round']:>9.0f} {k['uplink_bytes_mean']:>11,.0f} "
                f"{k['downlink_bytes_mean']:>11,.0f}"
            )
        for kind, k in r["after_rounds"].items():
            print(
                f"{kind + ' (after the rounds)':<32} {'-':>9} "
                f"{k['uplink_bytes_per_site']:>11,.0f} {k['downlink_bytes_per_site']:>11,.0f}"
            )
    print()
    print_rows(report["rows"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round per federation")
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")
    args = parser.parse_args(argv)
    report = measure(quick=args.quick)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
