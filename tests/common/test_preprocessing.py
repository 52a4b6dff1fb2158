"""The shared transform: declared (schema) and DP-aggregate variants, and their serialisation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import fedward.common.preprocessing as preprocessing
from fedward.common.datasets.bundled import bundled_federation
from fedward.common.datasource import table_from_frame
from fedward.common.preprocessing import (
    NumericColumn,
    SharedTransform,
    aggregate_sensitivity,
    site_aggregates,
    transform_from_aggregates,
)
from fedward.common.schema import DataSchema

SCHEMA = DataSchema.model_validate(
    {
        "label": {"column": "y"},
        "features": [
            {"name": "age", "kind": "numeric", "min": 20, "max": 80},
            {
                "name": "chol",
                "kind": "numeric",
                "min": 100,
                "max": 500,
                "impute": 200,
                "missing_indicator": True,
            },
            {
                "name": "cp",
                "kind": "categorical",
                "categories": ["a", "b", "c"],
                "impute": "b",
            },
            {"name": "gone", "kind": "numeric", "min": 0, "max": 1, "drop": True},
        ],
    }
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [20.0, 50.0, 80.0, 100.0],
            "chol": [100.0, np.nan, 500.0, 300.0],
            "cp": ["a", np.nan, "c", "b"],
        }
    )


def test_declared_range_maps_to_minus_one_one_and_clips() -> None:
    x = SharedTransform.from_schema(SCHEMA).transform(_frame())
    assert x[:, 0].tolist() == [-1.0, 0.0, 1.0, 1.0]  # 100 is clipped to 80


def test_missing_numeric_gets_declared_value_and_indicator() -> None:
    tf = SharedTransform.from_schema(SCHEMA)
    x = tf.transform(_frame())
    chol = tf.feature_names.index("chol")
    ind = tf.feature_names.index("chol__missing")
    assert x[1, chol] == pytest.approx((200 - 300) / 200)
    assert x[:, ind].tolist() == [0.0, 1.0, 0.0, 0.0]


def test_categorical_is_one_hot_with_declared_impute() -> None:
    tf = SharedTransform.from_schema(SCHEMA)
    x = tf.transform(_frame())
    cols = [tf.feature_names.index(f"cp={c}") for c in "abc"]
    assert x[:, cols].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]]


def test_output_is_float32_with_named_columns() -> None:
    tf = SharedTransform.from_schema(SCHEMA)
    x = tf.transform(_frame())
    assert x.dtype == np.float32
    assert tf.feature_names == ["age", "chol", "chol__missing", "cp=a", "cp=b", "cp=c"]
    assert x.shape == (4, tf.n_outputs)


def test_undeclared_category_is_refused() -> None:
    frame = _frame().assign(cp=["a", "b", "z", "c"])
    with pytest.raises(ValueError, match=r"'cp'.*'z'"):
        SharedTransform.from_schema(SCHEMA).transform(frame)


def test_round_trips_through_json() -> None:
    tf = SharedTransform.from_schema(SCHEMA)
    back = SharedTransform.from_json(json.dumps(tf.to_dict()))
    assert back == tf
    assert back.fingerprint() == tf.fingerprint()


def test_fingerprint_changes_with_the_transform() -> None:
    a = SharedTransform.from_schema(SCHEMA)
    exact = site_aggregates(_frame(), SCHEMA, noise_multiplier=0.0, rng=np.random.default_rng(0))
    b = transform_from_aggregates(SCHEMA, [exact])
    assert a.fingerprint() != b.fingerprint()


def test_no_per_site_standardisation_is_offered() -> None:
    public = {n for n in dir(preprocessing) if not n.startswith("_")}
    assert not {n for n in public if "fit" in n.lower() or "standard" in n.lower()}
    assert not [n for n in dir(SharedTransform) if n.startswith("fit")]


def test_sensitivity_counts_three_per_numeric_one_per_categorical() -> None:
    assert aggregate_sensitivity(SCHEMA) == pytest.approx(np.sqrt(3 * 2 + 1))


def test_exact_aggregates_are_counts_sums_and_squares_of_scaled_values() -> None:
    agg = site_aggregates(_frame(), SCHEMA, noise_multiplier=0.0, rng=np.random.default_rng(0))
    # age scaled to [0, 1] by [20, 80]: 0, 0.5, 1, 1 (100 clipped)
    assert agg["num:age"] == pytest.approx([4.0, 2.5, 2.25])
    assert agg["num:chol"][0] == 3.0  # the missing row is excluded
    assert agg["cat:cp"] == [1.0, 1.0, 1.0]
    assert "num:gone" not in agg


def test_noise_has_the_declared_scale() -> None:
    frame = pd.concat([_frame()] * 5, ignore_index=True)
    rng = np.random.default_rng(1)
    exact = site_aggregates(frame, SCHEMA, noise_multiplier=0.0, rng=rng)
    draws = np.array(
        [
            np.concatenate(
                [
                    np.subtract(v, exact[k])
                    for k, v in site_aggregates(
                        frame, SCHEMA, noise_multiplier=2.0, rng=rng
                    ).items()
                ]
            )
            for _ in range(400)
        ]
    )
    assert draws.std() == pytest.approx(2.0 * aggregate_sensitivity(SCHEMA), rel=0.05)


def test_pooled_aggregates_give_pooled_mean_sd_and_mode() -> None:
    rng = np.random.default_rng(0)
    a = site_aggregates(_frame().iloc[:2], SCHEMA, noise_multiplier=0.0, rng=rng)
    b = site_aggregates(_frame().iloc[2:], SCHEMA, noise_multiplier=0.0, rng=rng)
    tf = transform_from_aggregates(SCHEMA, [a, b])
    age = tf.columns[0]
    assert isinstance(age, NumericColumn)
    clipped = np.array([20.0, 50.0, 80.0, 80.0])
    assert age.center == pytest.approx(clipped.mean())
    assert age.scale == pytest.approx(clipped.std())
    assert age.impute == pytest.approx(clipped.mean())
    assert tf.source == "dp-aggregates"


def test_noisy_aggregates_are_clamped_to_valid_values() -> None:
    bad: dict[str, list[float]] = {
        "num:age": [10.0, -50.0, -5.0],
        "num:chol": [-3.0, 1.0, 1.0],
        "cat:cp": [-1, -2, -3],
    }
    tf = transform_from_aggregates(SCHEMA, [bad])
    age, chol, cp = tf.columns
    assert isinstance(age, NumericColumn)
    assert age.center == 20.0 and age.scale == pytest.approx(0.02 * 60)  # mean 0, SD floored
    assert chol == SharedTransform.from_schema(SCHEMA).columns[1]  # count <= 0: declared
    assert cp.impute == "b"  # no positive count: the declared impute


def test_heart_schema_and_exact_aggregate_transforms_agree() -> None:
    fed = bundled_federation("heart-disease")
    tables = [table_from_frame(f, fed.schema, site=s) for s, f in fed.sites.items()]
    rng = np.random.default_rng(0)
    aggs = [site_aggregates(t.frame, fed.schema, noise_multiplier=0.0, rng=rng) for t in tables]
    declared = SharedTransform.from_schema(fed.schema)
    fitted = transform_from_aggregates(fed.schema, aggs)
    frame = pd.concat([t.frame for t in tables], ignore_index=True)
    x_decl, x_fit = declared.transform(frame), fitted.transform(frame)
    assert declared.feature_names == fitted.feature_names
    for j, name in enumerate(declared.feature_names):
        a, b = x_decl[:, j], x_fit[:, j]
        if a.std() == 0:
            continue
        # Numeric columns differ only in their affine scaling and imputed value.
        assert np.corrcoef(a, b)[0, 1] > 0.9, name
    # Pooled-standardised columns are centred and unit-scale; declared ones lie in [-1, 1].
    num = [declared.feature_names.index(n) for n in ("age", "thalch")]
    assert np.abs(x_fit[:, num].mean(0)).max() < 0.1
    assert np.abs(x_decl[:, num]).max() <= 1.0
