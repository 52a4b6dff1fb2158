"""What makes a site's "ok" reply unusable before the coordinator reads a number from it.

A site runs code the coordinator does not control: a broken build, a hostile operator or a bug can
send a reply that claims success but lacks its records or holds a text where a number belongs.
The coordinator must not fail its round on such a reply (one ``float("lots")`` would end the run
for every other site); it names the site and the problem, marks the site failed and goes on.
Shapes, finiteness and norms of the model update are ``fedward.server.update_validation``'s part.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flwr.app import Message

from fedward.common.protocol import (
    ARRAYS,
    KEY_PREPROCESSING_AGGREGATES,
    METRICS,
    PRIVACY_FLOATS,
    REPLY,
)
from fedward.common.score_histograms import CoarseHistogram

_LIST_KEYS = ("non_dp_outputs", "warnings", "undefined_metrics")
_TRAIN_METRICS = ("num-examples",)
_OPTIONAL_TRAIN_METRICS = ("train_loss",)  # sent only by a site training without DP


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def malformed_reply(msg: Message, phase: str) -> str | None:
    """The first problem of an "ok" reply to a ``phase`` ("train", "preprocessing" or "evaluate ...")
    request."""
    content = msg.content
    info: dict[str, Any] = dict(content.config_records[REPLY])
    for key in PRIVACY_FLOATS:
        if key in info and not _number(info[key]):
            return f"'{key}' in record '{REPLY}' is {type(info[key]).__name__}, not a number"
    if "ledger_seq" in info and not (
        isinstance(info["ledger_seq"], int) and isinstance(info.get("ledger_head"), str)
    ):
        return f"'ledger_seq'/'ledger_head' in record '{REPLY}' are not an int and a hash"
    for key in _LIST_KEYS:
        if key in info and not isinstance(info[key], list):
            return f"'{key}' in record '{REPLY}' is {type(info[key]).__name__}, not a list"
    if phase == "preprocessing":
        # The DP-noised training-split aggregates travel as one JSON text; nothing else.
        released = info.get(KEY_PREPROCESSING_AGGREGATES)
        if not isinstance(released, str):
            return f"no text '{KEY_PREPROCESSING_AGGREGATES}' in record '{REPLY}'"
        try:
            json.loads(released)
        except ValueError as exc:
            return f"'{KEY_PREPROCESSING_AGGREGATES}' in record '{REPLY}' is not JSON ({exc})"
        return None
    if METRICS not in content.metric_records:
        return f"no MetricRecord '{METRICS}'"
    metrics = content.metric_records[METRICS]
    if phase == "train":
        if ARRAYS not in content.array_records:
            return f"no ArrayRecord '{ARRAYS}' (the model update)"
        for key in _TRAIN_METRICS + _OPTIONAL_TRAIN_METRICS:
            if key not in metrics and key in _OPTIONAL_TRAIN_METRICS:
                continue
            value = metrics.get(key)
            if not _number(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]
                return f"metric '{key}' is {value!r}, not a finite number"
        return None
    if "num-examples" in metrics and not _number(metrics["num-examples"]):
        return "metric 'num-examples' is not a number"
    hist = {k[len("hist_") :]: v for k, v in info.items() if k.startswith("hist_")}
    if hist:
        try:
            CoarseHistogram.from_record(hist)
        except (KeyError, TypeError, ValueError) as exc:
            return f"score histogram in record '{REPLY}' is unusable ({exc})"
    return None
