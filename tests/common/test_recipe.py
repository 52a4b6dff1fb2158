"""The training recipe's knobs: log-scaled skewed columns (declared, inferred, DP-fitted) and
Flower's adaptive server optimisers, each added so that runs which leave them off are unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.serverapp.strategy import FedAdagrad, FedYogi

from fedward.common.preprocessing import (
    NumericColumn,
    SharedTransform,
    site_aggregates,
    transform_from_aggregates,
)
from fedward.common.run_config import RunConfig
from fedward.common.run_plan import run_model_space
from fedward.common.schema import DataSchema
from fedward.common.schema_inference import infer_schema, summarise_numeric
from fedward.common.schema_merge import merge_schemas
from fedward.common.strategy_config import StrategyConfig
from fedward.server.checkpoint import restore_strategy, strategy_state
from fedward.server.strategies import build_strategy


def _schema(transform: str | None) -> DataSchema:
    crp: dict[str, object] = {"name": "crp", "kind": "numeric", "min": 0, "max": 300}
    if transform is not None:
        crp["transform"] = transform
    return DataSchema.model_validate(
        {
            "label": {"column": "y"},
            "features": [crp, {"name": "age", "kind": "numeric", "min": 20, "max": 80}],
        }
    )


def test_a_schema_without_transforms_keeps_its_fingerprint() -> None:
    assert _schema(None).fingerprint() == _schema("none").fingerprint()
    assert _schema("log").fingerprint() != _schema(None).fingerprint()


def test_a_categorical_column_cannot_be_log_scaled() -> None:
    with pytest.raises(ValueError, match="numeric"):
        DataSchema.model_validate(
            {
                "label": {"column": "y"},
                "features": [
                    {"name": "cp", "kind": "categorical", "categories": ["a"], "transform": "log"}
                ],
            }
        )


def test_log_column_spreads_a_skewed_value_over_the_input_range() -> None:
    frame = pd.DataFrame({"crp": [0.0, 1.0, 3.0, 10.0, 300.0, 5000.0], "age": [50.0] * 6})
    linear = SharedTransform.from_schema(_schema(None)).transform(frame)[:, 0]
    logged = SharedTransform.from_schema(_schema("log")).transform(frame)[:, 0]
    assert linear[0] == pytest.approx(-1.0) and logged[0] == pytest.approx(-1.0)
    assert logged[-1] == pytest.approx(1.0) and logged[-2] == pytest.approx(1.0)  # clipped
    # Typical values (1 to 10 of 300) sit near the bottom when scaled linearly, mid-range on a log.
    assert linear[3] - linear[1] < 0.07
    assert logged[3] - logged[1] > 0.3
    assert np.all(np.diff(logged[:5]) > 0)


def test_transform_round_trips_and_older_transforms_keep_their_json() -> None:
    logged = SharedTransform.from_schema(_schema("log"))
    assert SharedTransform.from_json(logged.to_json()) == logged
    assert '"log"' not in SharedTransform.from_schema(_schema(None)).to_json()


def test_dp_aggregates_fit_a_log_column_on_the_log_scale() -> None:
    rng = np.random.default_rng(0)
    crp = np.exp(rng.normal(1.5, 1.0, 4000)).clip(0, 300)
    frame = pd.DataFrame({"crp": crp, "age": rng.uniform(20, 80, 4000)})
    schema = _schema("log")
    aggs = [site_aggregates(frame, schema, noise_multiplier=0.0, rng=rng)]
    fitted = transform_from_aggregates(schema, aggs)
    z = fitted.transform(frame)[:, 0]
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1.0) < 0.05
    col = fitted.columns[0]
    assert isinstance(col, NumericColumn)
    assert col.log and 0 < col.impute < 300  # the imputation is stated in the column's own units


def test_inference_declares_log_for_a_skewed_positive_column_only() -> None:
    rng = np.random.default_rng(1)
    assert summarise_numeric(np.exp(rng.normal(1.0, 1.2, 500))).skewed
    assert not summarise_numeric(rng.normal(60, 10, 500)).skewed
    assert not summarise_numeric(rng.normal(0, 1, 500)).skewed  # negative values: no log
    frames = {
        "a": pd.DataFrame(
            {
                "crp": [f"{v:.2f}" for v in np.exp(rng.normal(1.0, 1.2, 300))],
                "age": [str(int(v)) for v in rng.normal(60, 10, 300)],
                "y": ["1", "0"] * 150,
            }
        )
    }
    inferred = infer_schema(frames, label="y")
    assert inferred.schema.feature("crp").transform == "log"
    assert inferred.schema.feature("age").transform == "none"


@pytest.mark.parametrize(("name", "cls"), [("fedadagrad", FedAdagrad), ("fedyogi", FedYogi)])
def test_adaptive_server_optimisers_are_flowers(name: str, cls: type) -> None:
    cfg = StrategyConfig.model_validate(
        {"name": name, "server_learning_rate": 0.05, "min_sites": 3}
    )
    strategy = build_strategy(cfg)
    assert type(strategy) is cls
    assert getattr(strategy, "eta") == pytest.approx(0.05)  # noqa: B009


def test_search_tunes_the_server_rate_only_for_fedopt_runs() -> None:
    plain = RunConfig()
    assert "strategy.server_learning_rate" not in run_model_space(plain)
    fedopt = RunConfig.model_validate({"strategy": {"name": "fedadagrad"}})
    assert "strategy.server_learning_rate" in run_model_space(fedopt)
    assert RunConfig().config_hash() == RunConfig.model_validate({}).config_hash()


@pytest.mark.parametrize("name", ["fedadagrad", "fedyogi"])
def test_fedopt_moments_survive_a_restart(name: str) -> None:
    cfg = StrategyConfig.model_validate({"name": name})
    before = build_strategy(cfg)
    assert isinstance(before, (FedAdagrad, FedYogi))
    before.m_t = {"w": np.full((2, 2), 0.25, dtype=np.float32)}
    before.v_t = {"w": np.full((2, 2), 0.5, dtype=np.float32)}
    state, arrays = strategy_state(before)
    after = build_strategy(cfg)
    restore_strategy(after, state, arrays)
    np.testing.assert_array_equal(getattr(after, "m_t")["w"], 0.25)  # noqa: B009
    np.testing.assert_array_equal(getattr(after, "v_t")["w"], 0.5)  # noqa: B009


def test_merging_site_schemas_keeps_a_log_scale_any_site_declared() -> None:
    merged = merge_schemas({"a": _schema("log"), "b": _schema(None)})
    assert merged.schema.feature("crp").transform == "log"
    assert merged.schema.feature("age").transform == "none"
