"""The coordinator checks every site's update before aggregating it, and names a site it drops."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, Krum, Strategy

from fedward.client.app import app
from fedward.common.flower_compat import set_task_identity
from fedward.common.protocol import ARRAYS, METRICS, REPLY
from fedward.common.run_config import RunConfig
from fedward.common.strategy_config import StrategyConfig, UpdateValidationConfig
from fedward.server.run_folder import PROGRESS_FILE, RunFolder
from fedward.server.site_tracking import SiteTracking
from fedward.server.strategies import build_strategy
from fedward.server.update_validation import UpdateValidator, update_norm
from tests.conftest import initial_arrays, make_context, make_message, wire_config
from tests.server.loopback import as_grid

RUN = RunConfig(rounds=2)
GLOBAL = initial_arrays(RUN)  # the heart-disease logistic model: '0.weight' (1, d), '0.bias' (1,)
DEFAULT = UpdateValidator.from_config(UpdateValidationConfig())


def _layers(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: np.array(v.numpy(), copy=True) for k, v in arrays.items()}


def _moved(seed: int, norm: float = 1.0) -> dict[str, np.ndarray]:
    """The global model plus an update of exactly ``norm``."""
    rng = np.random.default_rng(seed)
    layers = _layers(GLOBAL)
    deltas = {k: rng.normal(size=v.shape) for k, v in layers.items()}
    total = np.sqrt(sum(float((d**2).sum()) for d in deltas.values()))
    return {k: (v + deltas[k] * norm / total).astype(v.dtype) for k, v in layers.items()}


def _record(layers: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in layers.items()})


def _reply(node: int, layers: dict[str, np.ndarray], **metrics: float) -> Message:
    """A site's train reply as the coordinator receives it."""
    instruction = make_message(RecordDict(), "train", dst_node_id=node)
    content = RecordDict(
        {
            ARRAYS: _record(layers),
            METRICS: MetricRecord({"num-examples": 100.0, "train_loss": 0.6, **metrics}),
            REPLY: ConfigRecord({"site": f"hospital-{node}", "status": "ok"}),
        }
    )
    return Message(content, reply_to=instruction)


def _check(layers: dict[str, np.ndarray], validator: UpdateValidator | None = DEFAULT) -> str:
    assert validator is not None
    reason, _ = validator.check(_reply(7, layers), GLOBAL, ("num-examples", "train_loss"))
    assert reason is not None, "the update was expected to be rejected"
    return reason


# ---- one update on its own ---------------------------------------------------------------------


def test_a_finite_well_shaped_update_within_bounds_is_kept() -> None:
    assert DEFAULT is not None
    reason, norm = DEFAULT.check(_reply(7, _moved(0, norm=2.0)), GLOBAL)
    assert reason is None
    assert norm == pytest.approx(2.0, rel=1e-4)


def test_nan_values_are_rejected_naming_the_layer_and_how_many() -> None:
    layers = _moved(0)
    layers["0.weight"][0, :3] = np.nan
    assert _check(layers) == "layer '0.weight' has 3 non-finite value(s)"


def test_infinite_values_are_rejected() -> None:
    layers = _moved(0)
    layers["0.bias"][0] = np.inf
    assert _check(layers) == "layer '0.bias' has 1 non-finite value(s)"


def test_a_wrong_shape_is_rejected_with_both_shapes() -> None:
    layers = _moved(0)
    d = layers["0.weight"].shape[1]
    layers["0.weight"] = np.zeros((2, d), dtype=np.float32)
    assert _check(layers) == f"layer '0.weight': shape (2,{d}) != global (1,{d})"


def test_a_wrong_dtype_is_rejected() -> None:
    layers = _moved(0)
    layers["0.weight"] = layers["0.weight"].astype(np.float64)
    assert _check(layers) == "layer '0.weight': dtype float64 != global float32"


def test_a_missing_layer_is_rejected() -> None:
    layers = _moved(0)
    del layers["0.bias"]
    assert _check(layers) == "missing layer(s) '0.bias'"


def test_an_extra_layer_is_rejected() -> None:
    layers = _moved(0)
    layers["backdoor.weight"] = np.ones((4,), dtype=np.float32)
    assert _check(layers) == "unexpected layer(s) 'backdoor.weight'"


def test_a_norm_above_the_absolute_bound_is_rejected() -> None:
    strict = UpdateValidator(max_norm=50.0, max_norm_ratio=None)
    assert _check(_moved(0, norm=812.4), strict) == "update norm 812.4 exceeds bound 50"


def test_a_missing_or_non_positive_row_count_is_rejected() -> None:
    assert DEFAULT is not None
    bad_weight = _reply(7, _moved(0), **{"num-examples": -5.0})
    reason, _ = DEFAULT.check(bad_weight, GLOBAL)
    assert reason == "metric 'num-examples' is -5.0, not a positive row count"
    reply = _reply(7, _moved(0))
    reply.content[METRICS] = MetricRecord({"num-examples": 100.0})
    reason, _ = DEFAULT.check(reply, GLOBAL, ("num-examples", "train_loss"))
    assert reason == "metric 'train_loss' missing"


def test_the_norm_is_that_of_the_difference_to_the_global_model() -> None:
    assert update_norm(GLOBAL, GLOBAL) == 0.0
    assert update_norm(_record(_moved(3, norm=7.5)), GLOBAL) == pytest.approx(7.5, rel=1e-4)


# ---- a round's updates together ----------------------------------------------------------------


def test_an_update_far_above_the_rounds_median_norm_is_rejected() -> None:
    assert DEFAULT is not None
    honest = [_reply(n, _moved(n, norm=1.0 + n / 10)) for n in (1, 2, 3)]
    scaled = _reply(4, _moved(4, norm=30.0))  # within the absolute bound of 100
    screening = DEFAULT.screen([*honest, scaled], GLOBAL)
    assert [m.metadata.src_node_id for m in screening.kept] == [1, 2, 3]
    assert set(screening.rejected) == {4}
    assert screening.rejected[4].startswith("update norm 30.0 exceeds 10 x the round's median")


def test_the_relative_bound_needs_at_least_three_updates() -> None:
    assert DEFAULT is not None
    screening = DEFAULT.screen([_reply(1, _moved(1)), _reply(2, _moved(2, norm=30.0))], GLOBAL)
    assert screening.rejected == {} and screening.median_norm is None


def test_bounds_are_checked_when_the_validator_is_made() -> None:
    with pytest.raises(ValueError, match="max_norm must be positive"):
        UpdateValidator(max_norm=0.0, max_norm_ratio=None)
    with pytest.raises(ValueError, match="max_norm_ratio must be above 1"):
        UpdateValidator(max_norm=None, max_norm_ratio=0.5)


def test_validation_switched_off_builds_no_validator() -> None:
    assert UpdateValidator.from_config(UpdateValidationConfig(enabled=False)) is None


# ---- inside the coordinator's SiteTracking ------------------------------------------------------


class LoopbackGrid:
    """Just enough of a Grid for configure_train: the connected node ids."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return self.nodes


@pytest.fixture
def flower_runtime() -> Iterator[None]:
    set_task_identity(1)  # what the ServerApp runtime sets before any strategy runs
    yield


def _tracker(tmp_path: Path, inner: Strategy | None = None, **validation: Any) -> SiteTracking:
    folder = RunFolder.at(tmp_path / "run", RUN, run_id=1, engine="test")
    return SiteTracking(
        inner or FedAvg(min_available_nodes=1),
        folder=folder,
        histogram_bins=20,
        min_sites=2,
        validator=UpdateValidator.from_config(UpdateValidationConfig(**validation)),
    )


def _send_round(tracker: SiteTracking, nodes: list[int]) -> None:
    list(tracker.configure_train(1, GLOBAL, ConfigRecord(), as_grid(LoopbackGrid(nodes))))


def _real_site_reply(tmp_path: Path, partition: int, node: int) -> Message:
    """A real DP-SGD update from fedward's ClientApp at one bundled hospital."""
    cfg = wire_config(RUN, state_dir=str(tmp_path / "site-state"))
    content = RecordDict({ARRAYS: GLOBAL, "config": cfg})
    ctx = make_context({"partition-id": partition, "num-partitions": 4}, node_id=node)
    return app(make_message(content, "train", dst_node_id=node), ctx)


def test_a_real_dp_update_passes_the_default_bounds(tmp_path: Path) -> None:
    assert DEFAULT is not None
    reply = _real_site_reply(tmp_path, 0, 11)
    reason, norm = DEFAULT.check(reply, GLOBAL, ("num-examples",))
    assert reason is None
    assert norm is not None and 0 < norm < 0.2 * 100.0  # well inside the default bound


def test_a_dropped_site_is_named_in_the_run_record_and_its_spend_still_counted(
    tmp_path: Path, flower_runtime: None
) -> None:
    tracker = _tracker(tmp_path)
    _send_round(tracker, [11, 12, 13, 14])
    poisoned = _real_site_reply(tmp_path, 0, 11)
    layers = _layers(poisoned.content.array_records[ARRAYS])
    layers["0.weight"][0, :3] = np.nan
    poisoned.content[ARRAYS] = _record(layers)
    honest = [_reply(n, _moved(n)) for n in (12, 13, 14)]

    arrays, _ = tracker.aggregate_train(1, [poisoned, *honest])

    assert arrays is not None
    assert all(np.isfinite(v.numpy()).all() for v in arrays.values())
    sites = {s["site"]: s for s in tracker.site_summary()}
    cleveland = sites["cleveland"]
    assert cleveland["status"] == "rejected" and cleveland["rounds_ok"] == 0
    expected = "update from site cleveland: layer '0.weight' has 3 non-finite value(s)"
    assert cleveland["reason"] == f"round 1: {expected}"
    assert cleveland["rejected_updates"] == [{"round": 1, "reason": expected, "update_norm": None}]
    assert cleveland["epsilon"] is not None and cleveland["epsilon"] > 0  # the spend happened
    assert all(sites[f"hospital-{n}"]["status"] == "ok" for n in (12, 13, 14))
    events = [json.loads(x) for x in (tracker.folder.path / PROGRESS_FILE).read_text().splitlines()]
    assert any(e["event"] == "site-rejected" and e["site"] == "cleveland" for e in events)
    round_entry = tracker.history["train"][-1]
    assert round_entry["aggregated"] and round_entry["sites"]["cleveland"]["status"] == "rejected"
    assert round_entry["sites"]["hospital-12"]["update_norm"] == pytest.approx(1.0, rel=1e-4)


def test_the_aggregate_ignores_a_dropped_update(tmp_path: Path, flower_runtime: None) -> None:
    tracker = _tracker(tmp_path)
    _send_round(tracker, [1, 2, 3, 4])
    honest = [_moved(n) for n in (1, 2, 3)]
    arrays, _ = tracker.aggregate_train(
        1, [*(_reply(n + 1, h) for n, h in enumerate(honest)), _reply(4, _moved(4, norm=500.0))]
    )
    assert arrays is not None
    mean = {k: np.mean([h[k] for h in honest], axis=0) for k in honest[0]}
    for key, value in arrays.items():
        np.testing.assert_allclose(value.numpy(), mean[key], rtol=1e-5, atol=1e-6)
    assert "exceeds bound 100" in str(tracker.sites[4].reason)


def test_too_few_sites_left_after_dropping_skips_the_round(
    tmp_path: Path, flower_runtime: None
) -> None:
    tracker = _tracker(tmp_path)
    _send_round(tracker, [1, 2])
    nan = _moved(2)
    nan["0.bias"][0] = np.nan
    arrays, _ = tracker.aggregate_train(1, [_reply(1, _moved(1)), _reply(2, nan)])
    assert arrays is None and tracker.history["train"][-1]["aggregated"] is False


def test_with_validation_off_every_update_reaches_the_strategy(
    tmp_path: Path, flower_runtime: None
) -> None:
    tracker = _tracker(tmp_path, enabled=False)
    _send_round(tracker, [1, 2])
    arrays, _ = tracker.aggregate_train(
        1, [_reply(1, _moved(1)), _reply(2, _moved(2, norm=1000.0))]
    )
    assert arrays is not None and tracker.sites[2].status == "ok"


def test_aggregating_before_any_model_was_sent_is_an_error(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    with pytest.raises(RuntimeError, match="before configure_train"):
        tracker.aggregate_train(1, [_reply(1, _moved(1)), _reply(2, _moved(2))])


def test_krum_keeps_a_central_update_and_not_an_outlier_that_passed_the_bounds(
    tmp_path: Path, flower_runtime: None
) -> None:
    krum = build_strategy(StrategyConfig(name="krum", malicious_sites=1, min_sites=2))
    assert type(krum) is Krum
    tracker = _tracker(tmp_path, inner=krum)
    _send_round(tracker, [1, 2, 3, 4])
    honest = {n: _moved(n, norm=1.0) for n in (1, 2, 3)}
    outlier = {k: (2 * GLOBAL[k].numpy() - v) for k, v in _moved(9, norm=8.0).items()}
    replies = [*(_reply(n, h) for n, h in honest.items()), _reply(4, outlier)]
    arrays, _ = tracker.aggregate_train(1, replies)
    assert arrays is not None and tracker.sites[4].status == "ok"  # within both bounds
    chosen = _layers(arrays)
    assert any(
        all(np.allclose(chosen[k], h[k], atol=1e-6) for k in chosen) for h in honest.values()
    )
