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
    ConfigRecordValues,
    Context,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)

from fedward.client.egress import REFUSED_STATUS, EgressMod, SiteView, egress_mod, refusal_content
from fedward.client.egress_guard import (
    REASON_SOURCE,
    EgressGuard,
    EgressPolicy,
    EgressViolation,
    SiteRules,
    expected_from_array_record,
)
from fedward.client.reply_fields import REGISTRY
from fedward.common.metrics import metric_panel
from fedward.common.score_histograms import score_histogram
from fedward.common.site_messages import SiteMessage

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


RULES = SiteRules(site=SITE, dataset="heart", columns=frozenset({"age", "chol", "label"}))


def _guard(min_cell: int = 10) -> EgressGuard:
    return EgressGuard(
        EgressPolicy(min_cell_size=min_cell), expected_from_array_record(_model_record()), RULES
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
    assert exc.key == "scores" and "not part of the model state" in str(exc)


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
    with pytest.raises(EgressViolation, match="no model was sent"):
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
    content = _legit_content(undefined_metrics=["auroc"] * 5000)
    assert "longer than" in str(_violation(content))


def test_bytes_value_is_refused() -> None:
    content = _legit_content(status=b"raw bytes")
    assert "bytes" in str(_violation(content))


def test_very_long_text_is_refused() -> None:
    content = _legit_content(status="x" * 10_000)
    assert "longer than" in str(_violation(content))


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
    message = SiteMessage("data-invalid", {"site": SITE})
    _guard().check(refusal_content(SITE, message), site=SITE)


# ---- the registry: kinds, not key names ----


def test_every_registered_field_declares_a_kind() -> None:
    assert REGISTRY and all(spec.kind for spec in REGISTRY.values())


def test_a_count_sent_as_text_is_still_a_count() -> None:
    content = _legit_content()
    content["metrics"] = MetricRecord({"num-examples": 120})
    fedward = content["fedward"]
    assert isinstance(fedward, ConfigRecord)
    fedward["n_train"] = "3"
    assert _violation(content).rule == "small"


def test_audit_counts_are_count_checked_whatever_their_name() -> None:
    for key in ("mia_canary_correct", "mia_n_members", "mia_n_nonmembers", "n_train"):
        content = _legit_content(**{key: 4})
        assert _violation(content).rule == "small", key


def test_accuracy_implying_one_misclassified_row_is_refused() -> None:
    content = _legit_content(test_n=50, test_accuracy=0.98)
    assert _violation(content).rule == "implied"
    _guard().check(_legit_content(test_n=50, test_accuracy=0.8), site=SITE)


def test_rate_without_its_denominator_is_refused() -> None:
    content = _legit_content(test_prevalence=0.5)
    content["metrics"] = MetricRecord({"loss": 0.1})
    with pytest.raises(EgressViolation):
        EgressGuard(EgressPolicy(), None, RULES).check(
            RecordDict({"fedward": content["fedward"]}), site=SITE
        )


def test_accuracy_with_balanced_accuracy_solving_a_small_confusion_cell_is_refused() -> None:
    # n=100, 30 positives: TP=25 FN=5 TN=60 FP=10 -> accuracy 0.85, balanced (25/30+60/70)/2
    bal = (25 / 30 + 60 / 70) / 2
    content = _legit_content(test_n=100, test_prevalence=0.3, test_accuracy=0.85)
    fedward = content["fedward"]
    assert isinstance(fedward, ConfigRecord)
    fedward["test_balanced_accuracy"] = bal
    assert _violation(content).rule == "implied"


def test_profile_whose_categories_and_size_recover_a_suppressed_missing_cell_is_refused() -> None:
    import json

    profile = {
        "n_rows": 200,
        "splits": {"train": 161, "tune": 39},
        "prevalence": 0.5,
        "features": {
            "fbs": {
                "kind": "categorical",
                "missing_fraction": None,
                "categories": {"0": 149, "1": 10},
            }
        },
    }
    content = RecordDict(
        {"fedward": ConfigRecord({"site": SITE, "training_profile": json.dumps(profile)})}
    )
    with pytest.raises(EgressViolation, match="difference"):
        EgressGuard(EgressPolicy(), None, RULES).check(content, site=SITE)


def test_free_text_reason_is_refused_even_when_harmless() -> None:
    content = RecordDict(
        {"fedward": ConfigRecord({"site": SITE, "status": "refused", "reason": "no"})}
    )
    assert _violation(content).rule == "template"


def test_templated_reason_naming_a_header_cell_is_refused() -> None:
    message = SiteMessage(
        "column-missing", {"site": SITE, "what": "label column", "column": "MRN-884213"}
    )
    record: dict[str, ConfigRecordValues] = {
        "site": SITE,
        "status": "refused",
        "reason": message.text,
        REASON_SOURCE: message.to_json(),
    }
    assert _violation(RecordDict({"fedward": ConfigRecord(record)})).rule == "template"
    ok = SiteMessage("column-missing", {"site": SITE, "what": "label column", "column": "label"})
    record.update({"reason": ok.text, REASON_SOURCE: ok.to_json()})
    _guard().check(RecordDict({"fedward": ConfigRecord(record)}), site=SITE)


def test_reason_that_differs_from_its_template_is_refused() -> None:
    message = SiteMessage("data-invalid", {"site": SITE})
    record: dict[str, ConfigRecordValues] = {
        "site": SITE,
        "reason": message.text + " (MRN-884213)",
        REASON_SOURCE: message.to_json(),
    }
    assert _violation(RecordDict({"fedward": ConfigRecord(record)})).rule == "template"


def test_a_small_count_in_a_message_slot_is_refused() -> None:
    message = SiteMessage("warn-out-of-range", {"column": "age", "count": 2})
    record: dict[str, ConfigRecordValues] = {
        "site": SITE,
        "warnings": [message.text],
        "warnings_source": [message.to_json()],
    }
    assert _violation(RecordDict({"fedward": ConfigRecord(record)})).rule == "template"


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
    _assert_refused(_run_mod(content), "model arrays do not match")


def test_mod_refuses_an_unknown_record() -> None:
    content = _legit_content()
    content["rows"] = ConfigRecord({"age": [63, 67, 41]})
    _assert_refused(_run_mod(content), "unregistered field")


def test_mod_refuses_an_unknown_key() -> None:
    content = _legit_content(patient_ids=["p1", "p2"])
    _assert_refused(_run_mod(content), "unregistered field")


def test_mod_refuses_a_small_count() -> None:
    content = _legit_content()
    content["metrics"] = MetricRecord({"num-examples": 4})
    _assert_refused(_run_mod(content), "small count")


def test_mod_reads_min_cell_size_from_node_config() -> None:
    assert "arrays" in _run_mod(_legit_content()).content  # 120 >= default 10
    _assert_refused(_run_mod(_legit_content(), min_cell_size=200), "small count")


def test_mod_takes_min_cell_size_from_the_site_never_from_the_reply() -> None:
    strict = EgressMod(resolve=lambda _m, _c: SiteView(site=SITE, min_cell_size=500))
    content = _legit_content(min_cell_size=1)
    reply = strict(_incoming(), _context(), lambda m, _c: Message(content, reply_to=m))
    _assert_refused(reply, "small count")


def test_mod_names_the_node_when_the_reply_has_no_site() -> None:
    content = RecordDict({"metrics": MetricRecord({"num-examples": 3})})
    _assert_refused(_run_mod(content), "node 42")


def test_mod_refuses_arrays_when_the_coordinator_sent_none() -> None:
    _assert_refused(_run_mod(_legit_content(), with_arrays=False), "model arrays do not match")


def test_mod_replaces_a_free_text_error_reason_with_a_templated_one() -> None:
    msg = _incoming()
    error = Error(code=0, reason="handler failed on patient MRN-884213")
    reply = egress_mod(msg, _context(), lambda m, _c: Message(error, reply_to=m))
    assert reply.has_error() and reply.error.reason is not None
    assert "MRN-884213" not in reply.error.reason
    assert "unexpected Exception" in reply.error.reason
