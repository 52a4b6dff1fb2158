"""The egress guard and its Flower mod, on real Flower records and messages."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)

from fedward.common.egress import (
    DEFAULT_ALLOW_LIST,
    REFUSED_STATUS,
    EgressGuard,
    EgressPolicy,
    EgressViolation,
    RecordRule,
    egress_mod,
    expected_from_array_record,
    refusal_content,
)
from fedward.common.metrics import metric_panel, score_histogram

SITE = "cleveland"


def _model_record() -> ArrayRecord:
    torch.manual_seed(0)
    return ArrayRecord(torch.nn.Linear(4, 1).state_dict())


def _legit_content(**fedward_extra: object) -> RecordDict:
    fedward: dict[str, object] = {"site": SITE, "status": "ok", "epsilon": 1.2, "delta": 1e-5}
    fedward.update(fedward_extra)
    return RecordDict(
        {
            "arrays": _model_record(),
            "metrics": MetricRecord({"num-examples": 120, "train_loss": 0.41}),
            "fedward": ConfigRecord(fedward),  # type: ignore[arg-type]
        }
    )


def _guard(min_cell: int = 10) -> EgressGuard:
    return EgressGuard(
        EgressPolicy(min_cell_size=min_cell), expected_from_array_record(_model_record())
    )


def _violation(content: RecordDict, min_cell: int = 10) -> EgressViolation:
    with pytest.raises(EgressViolation) as info:
        _guard(min_cell).check(content, site=SITE)
    return info.value


# ---- guard ----


def test_legitimate_reply_passes_unchanged() -> None:
    content = _legit_content()
    assert _guard().check(content, site=SITE) is content


def test_unknown_record_name_is_refused_naming_the_record() -> None:
    content = _legit_content()
    content["debug"] = ConfigRecord({"x": 1})
    exc = _violation(content)
    assert exc.record == "debug" and "'debug'" in str(exc) and SITE in str(exc)


def test_record_of_the_wrong_type_is_refused() -> None:
    content = _legit_content()
    content["fedward"] = MetricRecord({"epsilon": 1.0})
    assert "ConfigRecord" in str(_violation(content))


def test_unknown_metric_key_is_refused_naming_the_key() -> None:
    content = _legit_content()
    content["metrics"] = MetricRecord({"num-examples": 120, "patient_17_score": 0.93})
    exc = _violation(content)
    assert exc.key == "patient_17_score" and "'patient_17_score'" in str(exc)


def test_per_sample_array_next_to_the_model_is_refused() -> None:
    arrays = _model_record()
    arrays["scores"] = Array(np.random.default_rng(0).random(120).astype(np.float32))
    content = _legit_content()
    content["arrays"] = arrays
    exc = _violation(content)
    assert exc.key == "scores" and "per-sample" in str(exc)


def test_model_array_with_another_shape_is_refused() -> None:
    arrays = _model_record()
    arrays["weight"] = Array(np.zeros((120, 4), dtype=np.float32))
    content = _legit_content()
    content["arrays"] = arrays
    exc = _violation(content)
    assert exc.key == "weight" and "shape" in str(exc)


def test_model_array_with_another_dtype_is_refused() -> None:
    arrays = _model_record()
    arrays["bias"] = Array(np.zeros(1, dtype=np.float64))
    content = _legit_content()
    content["arrays"] = arrays
    assert "dtype" in str(_violation(content))


def test_reply_missing_a_model_array_is_refused() -> None:
    arrays = ArrayRecord({"weight": _model_record()["weight"]})
    content = _legit_content()
    content["arrays"] = arrays
    exc = _violation(content)
    assert exc.key == "bias"


def test_arrays_without_an_expected_model_state_are_refused() -> None:
    with pytest.raises(EgressViolation, match="no expected model state"):
        EgressGuard(EgressPolicy(), None).check(_legit_content(), site=SITE)


def test_count_below_min_cell_is_refused_without_revealing_it() -> None:
    content = _legit_content()
    content["metrics"] = MetricRecord({"num-examples": 7})
    exc = _violation(content)
    assert exc.key == "num-examples" and "minimum cell size 10" in str(exc)
    assert "7" not in str(exc)


def test_zero_count_and_count_at_min_cell_pass() -> None:
    for n in (0, 10):
        content = _legit_content()
        content["metrics"] = MetricRecord({"num-examples": n, "test_n": float(n)})
        _guard().check(content, site=SITE)


def test_small_count_inside_a_histogram_list_is_refused() -> None:
    content = _legit_content(test_hist_pos_counts=[12, 0, 3], test_hist_pos_starts=[0, 4, 9])
    exc = _violation(content)
    assert exc.key == "test_hist_pos_counts"


def test_prevalence_with_n_implying_a_small_class_is_refused() -> None:
    content = _legit_content()
    content["metrics"] = MetricRecord(
        {"num-examples": 100, "test_n": 100.0, "test_prevalence": 0.04}
    )
    exc = _violation(content)
    assert exc.key == "test_prevalence"


def test_min_cell_size_of_the_policy_applies() -> None:
    _guard(min_cell=100).check(_legit_content(), site=SITE)  # num-examples is 120
    with pytest.raises(EgressViolation, match="minimum cell size 200"):
        _guard(min_cell=200).check(_legit_content(), site=SITE)


def test_list_longer_than_allowed_is_refused() -> None:
    content = _legit_content(messages=["x"] * 5000)
    assert "longer than" in str(_violation(content))


def test_bytes_value_is_refused() -> None:
    content = _legit_content(error=b"raw bytes")
    assert "bytes" in str(_violation(content))


def test_very_long_text_is_refused() -> None:
    content = _legit_content(error="x" * 10_000)
    assert "text longer" in str(_violation(content))


def test_metric_panel_and_coarse_histogram_from_metrics_module_pass() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(np.int64)
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0.0, 1.0)
    panel = metric_panel(y, s, n_bootstrap=50, confidence=0.95, seed=0)
    hist = score_histogram(y, s, 20).coarsen(10).to_record()
    content = _legit_content(**{f"test_hist_{k}": v for k, v in hist.items()})
    content["metrics"] = MetricRecord(
        {"num-examples": 300, **{f"test_{k}": v for k, v in panel.items() if v is not None}}
    )
    _guard().check(content, site=SITE)


def test_refusal_content_itself_passes_the_guard() -> None:
    _guard().check(refusal_content(SITE, "why"), site=SITE)


# ---- allow-list ----


def test_default_allow_list_cannot_be_mutated() -> None:
    with pytest.raises(TypeError):
        DEFAULT_ALLOW_LIST.records["anything"] = RecordRule("config")


def test_extended_allow_list_accepts_new_key_and_leaves_default_alone() -> None:
    extended = DEFAULT_ALLOW_LIST.extended("metrics", ["baseline_*_auroc"])
    content = _legit_content()
    content["metrics"] = MetricRecord({"num-examples": 120, "baseline_knn_auroc": 0.8})
    policy = EgressPolicy(allow_list=extended)
    EgressGuard(policy, expected_from_array_record(_model_record())).check(content, site=SITE)
    assert not DEFAULT_ALLOW_LIST.records["metrics"].allows("baseline_knn_auroc")


def test_extending_with_a_new_record_requires_its_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        DEFAULT_ALLOW_LIST.extended("profile", ["mean_*"])
    assert (
        DEFAULT_ALLOW_LIST.extended("profile", ["mean_*"], kind="metric")
        .records["profile"]
        .allows("mean_age")
    )


def test_policy_refuses_min_cell_size_below_one() -> None:
    with pytest.raises(ValueError, match="min_cell_size"):
        EgressPolicy(min_cell_size=0)


# ---- the Flower mod ----


def _incoming(with_arrays: bool = True) -> Message:
    content = RecordDict({"arrays": _model_record()} if with_arrays else {})
    content["config"] = ConfigRecord({"server-round": 1})
    meta = Metadata(
        run_id=1,
        message_id="m1",
        src_node_id=1,
        dst_node_id=42,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type="train",
    )
    return Message(content, metadata=meta)  # type: ignore[call-overload]


def _context(node_config: dict[str, int | str] | None = None) -> Context:
    return Context(
        run_id=1, node_id=42, node_config=dict(node_config or {}), state=RecordDict(), run_config={}
    )


def _run_mod(
    content: RecordDict, *, with_arrays: bool = True, min_cell_size: int | None = None
) -> Message:
    msg = _incoming(with_arrays)
    node_config: dict[str, int | str] = {}
    if min_cell_size is not None:
        node_config["min-cell-size"] = min_cell_size
    return egress_mod(msg, _context(node_config), lambda m, _c: Message(content, reply_to=m))


def _assert_refused(reply: Message, *words: str) -> str:
    assert set(reply.content.keys()) == {"fedward"}
    record = reply.content["fedward"]
    assert isinstance(record, ConfigRecord) and record["status"] == REFUSED_STATUS
    reason = str(record["reason"])
    for word in words:
        assert word in reason
    return reason


def test_mod_lets_a_legitimate_reply_through_with_its_arrays() -> None:
    reply = _run_mod(_legit_content())
    assert set(reply.content.keys()) == {"arrays", "metrics", "fedward"}
    assert reply.content["fedward"]["status"] == "ok"


def test_mod_replaces_a_per_sample_array_leak_with_a_refusal() -> None:
    arrays = _model_record()
    arrays["scores"] = Array(np.zeros(120, dtype=np.float32))
    content = _legit_content()
    content["arrays"] = arrays
    _assert_refused(_run_mod(content), "'scores'", SITE)


def test_mod_refuses_an_unknown_record() -> None:
    content = _legit_content()
    content["rows"] = ConfigRecord({"age": [63, 67, 41]})
    _assert_refused(_run_mod(content), "'rows'")


def test_mod_refuses_an_unknown_key() -> None:
    content = _legit_content(patient_ids=["p1", "p2"])
    _assert_refused(_run_mod(content), "'patient_ids'")


def test_mod_refuses_a_small_count() -> None:
    content = _legit_content()
    content["metrics"] = MetricRecord({"num-examples": 4})
    _assert_refused(_run_mod(content), "'num-examples'")


def test_mod_reads_min_cell_size_from_node_config() -> None:
    assert "arrays" in _run_mod(_legit_content()).content  # 120 >= default 10
    _assert_refused(_run_mod(_legit_content(), min_cell_size=200), "minimum cell size 200")


def test_mod_raises_min_cell_size_to_the_replys_stricter_value() -> None:
    _assert_refused(_run_mod(_legit_content(min_cell_size=500)), "minimum cell size 500")


def test_mod_ignores_a_reply_trying_to_lower_the_node_min_cell_size() -> None:
    content = _legit_content(min_cell_size=1)
    _assert_refused(_run_mod(content, min_cell_size=200), "minimum cell size 200")


def test_mod_names_the_node_when_the_reply_has_no_site() -> None:
    content = RecordDict({"metrics": MetricRecord({"num-examples": 3})})
    _assert_refused(_run_mod(content), "node 42")


def test_mod_refuses_arrays_when_the_coordinator_sent_none() -> None:
    _assert_refused(_run_mod(_legit_content(), with_arrays=False), "'weight'")


def test_mod_passes_an_error_reply_through() -> None:
    msg = _incoming()
    error = Error(code=0, reason="handler failed")
    reply = egress_mod(msg, _context(), lambda m, _c: Message(error, reply_to=m))
    assert reply.has_error() and reply.error.reason == "handler failed"
