"""Hostile Flower messages: garbage from the coordinator to a site, and from a site to the coordinator.

A site answers whatever the coordinator sends with a structured reply naming the record and key
at fault (never an exception that takes the SuperNode's app down, never an update). The coordinator
marks a site whose "ok" reply it cannot read as failed, with the reason, and aggregates the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedward.client.app import app
from fedward.common.evaluation_config import EvaluationConfig
from fedward.common.protocol import (
    ARRAYS,
    CONFIG,
    KEY_BASELINES,
    KEY_LEDGER_HEADS,
    KEY_PREPROCESSING_AGGREGATES,
    KEY_PURPOSE,
    KEY_RUN,
    KEY_SCHEMA,
    KEY_SIM_SITES,
    KEY_TRANSFORM,
    METRICS,
    REPLY,
)
from fedward.common.run_config import RunConfig
from fedward.server.run_folder import RunFolder
from fedward.server.site_tracking import SiteTracking
from tests.conftest import initial_arrays, make_context, make_message, wire_config

RUN = RunConfig(rounds=2, evaluation=EvaluationConfig(bootstrap=20))
NODE = {"partition-id": 0, "num-partitions": 4}

Edit = Callable[[RecordDict], None]


def _set(key: str, value: object) -> Edit:
    def edit(content: RecordDict) -> None:
        content.config_records[CONFIG][key] = value  # type: ignore[assignment]

    return edit


def _drop(name: str, key: str | None = None) -> Edit:
    def edit(content: RecordDict) -> None:
        if key is None:
            del content[name]
        else:
            del content.config_records[name][key]

    return edit


def _config_as_metrics(content: RecordDict) -> None:
    del content[CONFIG]
    content[CONFIG] = MetricRecord({"server-round": 1})


def _arrays(state: dict[str, torch.Tensor]) -> Edit:
    def edit(content: RecordDict) -> None:
        content[ARRAYS] = ArrayRecord(state)

    return edit


# (message type, change to a valid request, error kind, field named, words in the reason)
SITE_CASES = [
    pytest.param(
        "train", _drop(CONFIG), "MessageError", "config", "no ConfigRecord", id="no-config-record"
    ),
    pytest.param(
        "train",
        _config_as_metrics,
        "MessageError",
        "config",
        "no ConfigRecord",
        id="config-sent-as-metrics",
    ),
    pytest.param(
        "train",
        _drop(CONFIG, KEY_RUN),
        "MessageError",
        f"config['{KEY_RUN}']",
        "missing",
        id="run-config-missing",
    ),
    pytest.param(
        "train",
        _set(KEY_RUN, 5),
        "MessageError",
        f"config['{KEY_RUN}']",
        "got int",
        id="run-config-is-an-int",
    ),
    pytest.param(
        "train",
        _set(KEY_RUN, "{rounds: 3"),
        "ConfigError",
        None,
        "not valid JSON",
        id="run-config-garbage-json",
    ),
    pytest.param(
        "train",
        _set(KEY_RUN, "[1, 2]"),
        "ConfigError",
        None,
        "valid dictionary",
        id="run-config-is-a-list",
    ),
    pytest.param(
        "train",
        _set(KEY_RUN, json.dumps({"rounds": 3, "privacy": {"dp": "no"}})),
        "ConfigError",
        "privacy.dp",
        "valid boolean",
        id="run-config-dp-flag-is-text",
    ),
    pytest.param(
        "train",
        _set(KEY_RUN, json.dumps({"rounds": 3, "exfiltrate": True})),
        "ConfigError",
        "exfiltrate",
        "Extra inputs",
        id="run-config-unknown-key",
    ),
    pytest.param(
        "train",
        _set(KEY_SCHEMA, "{not json"),
        "MessageError",
        f"config['{KEY_SCHEMA}']",
        "not valid JSON",
        id="schema-garbage-json",
    ),
    pytest.param(
        "train",
        _set(KEY_SCHEMA, json.dumps({"features": []})),
        "ConfigError",
        "label",
        "Field required",
        id="schema-without-label",
    ),
    pytest.param(
        "train",
        _set(KEY_SIM_SITES, "{}"),
        "MessageError",
        f"config['{KEY_SIM_SITES}']",
        "JSON list",
        id="sim-sites-not-a-list",
    ),
    pytest.param(
        "train",
        _set("server-round", "three"),
        "MessageError",
        "config['server-round']",
        "round number",
        id="server-round-is-text",
    ),
    pytest.param(
        "train",
        _set("server-round", -4),
        "MessageError",
        "config['server-round']",
        "round number",
        id="server-round-negative",
    ),
    pytest.param(
        "train",
        _set(KEY_TRANSFORM, json.dumps({"version": 99})),
        "MessageError",
        f"config['{KEY_TRANSFORM}']",
        "unsupported transform version",
        id="transform-unknown-version",
    ),
    pytest.param(
        "train",
        _set(KEY_TRANSFORM, 3.5),
        "MessageError",
        f"config['{KEY_TRANSFORM}']",
        "JSON text",
        id="transform-is-a-float",
    ),
    pytest.param(
        "train",
        _set(KEY_LEDGER_HEADS, "[1,2"),
        "MessageError",
        f"config['{KEY_LEDGER_HEADS}']",
        "not valid JSON",
        id="ledger-heads-garbage-json",
    ),
    pytest.param(
        "train",
        _set(KEY_LEDGER_HEADS, json.dumps({"cleveland": "latest"})),
        "MessageError",
        f"config['{KEY_LEDGER_HEADS}']",
        "not [seq, hash]",
        id="ledger-head-not-a-pair",
    ),
    pytest.param(
        "train",
        _set(KEY_PURPOSE, "exfiltration"),
        "PolicyError",
        None,
        "unknown purpose",
        id="unknown-purpose",
    ),
    pytest.param(
        "train",
        _arrays({"0.weight": torch.zeros(3, 3), "0.bias": torch.zeros(1)}),
        "MessageError",
        "arrays",
        "size mismatch for 0.weight",
        id="arrays-of-the-wrong-shape",
    ),
    pytest.param(
        "train",
        _arrays({"0.weight": torch.zeros(1, 24)}),
        "MessageError",
        "arrays",
        'Missing key(s) in state_dict: "0.bias"',
        id="arrays-missing-a-layer",
    ),
    pytest.param(
        "evaluate",
        _drop(ARRAYS),
        "PolicyError",
        None,
        "sent no model weights",
        id="evaluate-without-weights",
    ),
    pytest.param(
        "evaluate.baselines",
        _set(KEY_BASELINES, "families=all"),
        "MessageError",
        f"config['{KEY_BASELINES}']",
        "not valid JSON",
        id="baselines-request-garbage-json",
    ),
    pytest.param(
        "train.exfiltrate",
        None,
        "MessageError",
        "message_type",
        "'train.exfiltrate' is not one",
        id="unknown-train-action",
    ),
    pytest.param(
        "query.secrets",
        None,
        "MessageError",
        "message_type",
        "'query.secrets' is not one",
        id="unknown-query-action",
    ),
]


@pytest.mark.parametrize(("kind", "edit", "error_kind", "field", "says"), SITE_CASES)
def test_hostile_message_gets_a_structured_refusal_naming_record_and_key(
    tmp_path: Path, kind: str, edit: Edit | None, error_kind: str, field: str | None, says: str
) -> None:
    content = RecordDict(
        {"arrays": initial_arrays(RUN), "config": wire_config(RUN, state_dir=str(tmp_path))}
    )
    if edit is not None:
        edit(content)
    reply = app(make_message(content, kind), make_context(NODE))
    info = dict(reply.content[REPLY])
    assert info["status"] == "refused", info
    assert info["error_kind"] == error_kind, info
    # A templated sentence: it names the coordinator's own record and key, never the site's
    # exception text (``says`` is what the site's log holds).
    assert "field" not in info, info
    if error_kind == "MessageError" and field not in (None, "message_type", "arrays"):
        assert (field.split("'")[1] if "'" in field else field) in str(info["reason"]), info
    assert ARRAYS not in reply.content and METRICS not in reply.content


# ---- garbage replies to the coordinator ------------------------------------------------------


def _ok_train_reply(node: int, name: str) -> Message:
    request = make_message(RecordDict(), "train", dst_node_id=node)
    content = RecordDict(
        {
            ARRAYS: initial_arrays(RUN),
            METRICS: MetricRecord({"num-examples": 100.0, "train_loss": 0.6}),
            REPLY: ConfigRecord(
                {"site": name, "status": "ok", "epsilon": 0.2, "non_dp_outputs": ["train_loss"]}
            ),
        }
    )
    return Message(content, reply_to=request)


def _ok_eval_reply(node: int, name: str) -> Message:
    request = make_message(RecordDict(), "evaluate", dst_node_id=node)
    content = RecordDict(
        {
            METRICS: MetricRecord({"num-examples": 50.0, "auroc": 0.7}),
            REPLY: ConfigRecord({"site": name, "status": "ok", "undefined_metrics": []}),
        }
    )
    return Message(content, reply_to=request)


def _without(name: str) -> Callable[[Message], None]:
    def edit(msg: Message) -> None:
        del msg.content[name]

    return edit


def _reply_value(key: str, value: object) -> Callable[[Message], None]:
    def edit(msg: Message) -> None:
        msg.content.config_records[REPLY][key] = value  # type: ignore[assignment]

    return edit


def _metric(key: str, value: object | None) -> Callable[[Message], None]:
    def edit(msg: Message) -> None:
        metrics = msg.content.metric_records[METRICS]
        if value is None:
            del metrics[key]
        else:
            metrics[key] = value  # type: ignore[assignment]

    return edit


TRAIN_REPLY_CASES = [
    pytest.param(
        _without(REPLY), "no ConfigRecord 'fedward'", id="train-reply-without-fedward-record"
    ),
    pytest.param(_without(METRICS), "no MetricRecord 'metrics'", id="train-reply-without-metrics"),
    pytest.param(_without(ARRAYS), "no ArrayRecord 'arrays'", id="train-reply-without-arrays"),
    pytest.param(
        _metric("num-examples", None), "metric 'num-examples' is None", id="row-count-missing"
    ),
    pytest.param(_metric("train_loss", float("nan")), "'train_loss' is nan", id="train-loss-nan"),
    pytest.param(
        _metric("num-examples", [1.0, 2.0]),
        "'num-examples' is [1.0, 2.0]",
        id="row-count-is-a-list",
    ),
    pytest.param(
        _reply_value("epsilon", "lots"),
        "'epsilon' in record 'fedward' is str",
        id="epsilon-is-text",
    ),
    pytest.param(
        _reply_value("ledger_seq", "seven"), "'ledger_seq'/'ledger_head'", id="ledger-seq-is-text"
    ),
    pytest.param(
        _reply_value("non_dp_outputs", 3),
        "'non_dp_outputs' in record 'fedward' is int",
        id="outputs-list-is-an-int",
    ),
]


@pytest.fixture
def tracker(tmp_path: Path) -> SiteTracking:
    folder = RunFolder.at(tmp_path / "run", RUN, run_id=1, engine="test")
    return SiteTracking(
        FedAvg(min_available_nodes=1), folder=folder, histogram_bins=20, min_sites=2
    )


@pytest.mark.parametrize(("edit", "says"), TRAIN_REPLY_CASES)
def test_garbage_train_reply_fails_that_site_with_a_reason_and_the_round_goes_on(
    tracker: SiteTracking, edit: Callable[[Message], None], says: str
) -> None:
    garbage = _ok_train_reply(13, "st-garbage")
    edit(garbage)
    arrays, _ = tracker.aggregate_train(
        1, [_ok_train_reply(11, "a"), _ok_train_reply(12, "b"), garbage]
    )
    assert arrays is not None  # the two readable sites were aggregated
    sites = {s["node_id"]: s for s in tracker.site_summary()}
    assert sites[11]["status"] == sites[12]["status"] == "ok"
    assert sites[13]["status"] == "failed"
    assert "train, round 1: malformed reply" in sites[13]["reason"] and says in sites[13]["reason"]


def _hist(**changes: object) -> Callable[[Message], None]:
    """A valid coarse histogram in the reply, then ``changes`` (None deletes the key)."""

    def edit(msg: Message) -> None:
        reply = msg.content.config_records[REPLY]
        reply["hist_bins"] = 20
        reply["hist_pos_starts"] = [0]
        reply["hist_pos_counts"] = [10]
        reply["hist_neg_starts"] = [0]
        reply["hist_neg_counts"] = [10]
        for key, value in changes.items():
            if value is None:
                del reply[key]
            else:
                reply[key] = value  # type: ignore[assignment]

    return edit


EVAL_REPLY_CASES = [
    pytest.param(_without(METRICS), "no MetricRecord 'metrics'", id="eval-reply-without-metrics"),
    pytest.param(
        _hist(hist_pos_counts="ten"),
        "'pos_counts' must be a list of ints",
        id="histogram-counts-are-text",
    ),
    pytest.param(_hist(hist_bins=None), "score histogram", id="histogram-without-bins"),
    pytest.param(
        _hist(hist_neg_starts=[5, 2], hist_neg_counts=[10, 10]),
        "must be increasing",
        id="histogram-bins-out-of-order",
    ),
    pytest.param(
        _reply_value("undefined_metrics", 7),
        "'undefined_metrics' in record 'fedward' is int",
        id="undefined-metrics-is-an-int",
    ),
]


@pytest.mark.parametrize(("edit", "says"), EVAL_REPLY_CASES)
def test_garbage_evaluation_reply_fails_that_site_and_the_others_are_recorded(
    tracker: SiteTracking, edit: Callable[[Message], None], says: str
) -> None:
    garbage = _ok_eval_reply(13, "st-garbage")
    edit(garbage)
    tracker.aggregate_evaluate(1, [_ok_eval_reply(11, "a"), _ok_eval_reply(12, "b"), garbage])
    entry = tracker.history["tune"][-1]
    assert set(entry["sites"]) == {"a", "b"}
    failed = {s["node_id"]: s for s in tracker.site_summary()}[13]
    assert failed["status"] == "failed" and says in failed["reason"]
    assert "evaluate (tune), round 1: malformed reply" in failed["reason"]


def test_a_refusal_with_a_text_epsilon_is_still_recorded_as_a_refusal(
    tracker: SiteTracking,
) -> None:
    request = make_message(RecordDict(), "train", dst_node_id=13)
    refusal = Message(
        RecordDict(
            {
                REPLY: ConfigRecord(
                    {
                        "site": "st-x",
                        "status": "refused",
                        "reason": "budget",
                        "epsilon_remaining": "none",
                    }
                )
            }
        ),
        reply_to=request,
    )
    arrays, _ = tracker.aggregate_train(
        1, [_ok_train_reply(11, "a"), _ok_train_reply(12, "b"), refusal]
    )
    assert arrays is not None
    site = {s["node_id"]: s for s in tracker.site_summary()}[13]
    assert site["status"] == "refused" and site["reason"] == "budget"


def _ok_preprocessing_reply(node: int, name: str) -> Message:
    request = make_message(RecordDict(), "query", dst_node_id=node)
    aggregates = json.dumps({"n": 120.0, "sums": [1.0, 2.0]})
    reply = ConfigRecord({"site": name, "status": "ok", KEY_PREPROCESSING_AGGREGATES: aggregates})
    return Message(RecordDict({REPLY: reply}), reply_to=request)


PREPROCESSING_REPLY_CASES = [
    pytest.param(
        _reply_value(KEY_PREPROCESSING_AGGREGATES, 3.5),
        "no text 'preprocessing_aggregates'",
        id="aggregates-are-a-number",
    ),
    pytest.param(
        _reply_value(KEY_PREPROCESSING_AGGREGATES, "{not json"),
        "'preprocessing_aggregates' in record 'fedward' is not JSON",
        id="aggregates-are-not-json",
    ),
]


def test_a_well_formed_preprocessing_reply_needs_no_metrics(tracker: SiteTracking) -> None:
    (kept,) = tracker.classify(0, [_ok_preprocessing_reply(11, "a")], "preprocessing")
    assert {s["node_id"]: s for s in tracker.site_summary()}[11]["status"] != "failed"
    assert kept.content.config_records[REPLY]["site"] == "a"


@pytest.mark.parametrize(("edit", "says"), PREPROCESSING_REPLY_CASES)
def test_garbage_preprocessing_reply_fails_that_site_only(
    tracker: SiteTracking, edit: Callable[[Message], None], says: str
) -> None:
    garbage = _ok_preprocessing_reply(13, "st-garbage")
    edit(garbage)
    kept = tracker.classify(0, [_ok_preprocessing_reply(11, "a"), garbage], "preprocessing")
    assert [m.metadata.src_node_id for m in kept] == [11]
    failed = {s["node_id"]: s for s in tracker.site_summary()}[13]
    assert failed["status"] == "failed" and says in failed["reason"]
