"""Schema inference over every site's file: robust ranges, impossible values flagged and kept out,
the median for missing cells, categories as the union without case or spaces, empty columns
reported, REVIEW notes kept; and the merge of the sites' reviewed schemas by declared names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fedward.common.cli import app as fedward_root
from fedward.common.config_files import load_schema
from fedward.common.datasource import load_table, table_from_frame
from fedward.common.numeric_summary import impossible_values
from fedward.common.schema import DataSchema
from fedward.common.schema_inference import infer_schema
from fedward.common.schema_merge import merge_schemas
from fedward.common.schema_toml import REVIEW_NOTE, SchemaInferenceError, parse_schema_toml


def _frame(**columns: Sequence[object]) -> pd.DataFrame:
    """A table as read from a CSV: every cell text, empty cells NaN."""
    return pd.DataFrame(
        {k: [np.nan if v is None else str(v) for v in vals] for k, vals in columns.items()}
    )


def _labels(n: int) -> list[object]:
    return [i % 2 for i in range(n)]


def test_ranges_come_from_robust_quantiles_widened_and_rounded_outward() -> None:
    values = list(range(30, 91)) * 4  # ages 30..90
    values[0] = 2  # one unusual but possible value: it must not set the bound
    inferred = infer_schema({"a": _frame(age=values, y=_labels(len(values)))}, label="y")

    age = inferred.schema.feature("age")
    assert age.min is not None and age.max is not None
    assert 25 <= age.min <= 30 and 90 <= age.max <= 95  # not 2: one patient does not set it
    assert (age.note or "").startswith(REVIEW_NOTE)


def test_an_impossible_age_is_flagged_kept_out_of_the_range_and_declared_missing() -> None:
    ages = [40 + i % 40 for i in range(200)]
    ages[17] = 65526
    inferred = infer_schema({"north": _frame(age=ages, y=_labels(200))}, label="y")

    age = inferred.schema.feature("age")
    assert age.max is not None and age.max <= 100
    assert 65526 in age.missing_values and age.impute is not None
    finding = next(f for f in inferred.findings if "'age'" in f)
    assert "impossible" in finding and "65526 in north" in finding
    table = table_from_frame(_frame(age=ages, y=_labels(200)), inferred.schema, site="north")
    assert np.isnan(table.frame["age"].iloc[17])  # missing, then imputed: not clipped to the max


def test_a_lab_value_a_thousand_iqrs_beyond_the_quartiles_is_impossible() -> None:
    rng = np.random.default_rng(0)
    lab = rng.lognormal(1.0, 0.5, 500)
    q1, q3 = np.quantile(lab, [0.25, 0.75])
    lab[3] = q3 + 1500 * (q3 - q1)
    assert impossible_values(lab)[3] and impossible_values(lab).sum() == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sigma=st.floats(0.1, 1.5), seed=st.integers(0, 10_000))
def test_heavy_tailed_real_values_are_not_called_impossible(sigma: float, seed: int) -> None:
    lab = np.random.default_rng(seed).lognormal(0.0, sigma, 2000)
    assert not impossible_values(lab).any()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=20, max_size=200
    ),
    missing=st.integers(0, 10),
)
def test_every_file_loads_under_its_inferred_schema_and_the_impute_lies_in_range(
    values: list[float], missing: int
) -> None:
    cells: list[object] = [round(v, 3) for v in values] + [None] * missing
    frame = _frame(x=cells, y=_labels(len(cells)))
    try:
        inferred = infer_schema({"a": frame}, label="y")
    except SchemaInferenceError:
        return  # e.g. every value distinct integers: an identifier, no feature left
    x = inferred.schema.feature("x")
    assert x.min is not None and x.max is not None and x.min < x.max
    if missing:
        assert x.impute is not None and x.min <= float(x.impute) <= x.max
    table = table_from_frame(frame, inferred.schema, site="a")
    assert table.n_rows == len(cells)


def test_missing_cells_are_imputed_with_the_median_not_the_middle_of_the_range() -> None:
    lab = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 300.0] * 3 + [None] * 5
    inferred = infer_schema({"a": _frame(lab=lab, y=_labels(len(lab)))}, label="y")

    lab_spec = inferred.schema.feature("lab")
    assert lab_spec.impute == pytest.approx(1.45, abs=0.06) and lab_spec.missing_indicator


def test_a_declared_impute_value_wins_over_the_median() -> None:
    lab = [1.0, 2.0, 3.0, None] * 10
    inferred = infer_schema({"a": _frame(lab=lab, y=_labels(40))}, label="y", impute={"lab": "0"})
    assert inferred.schema.feature("lab").impute == 0


def test_categories_are_the_union_over_files_without_case_or_spaces() -> None:
    a = _frame(smoker=[" Yes", "no", "yes"] * 10, y=_labels(30))
    b = _frame(smoker=["YES ", "No", "former"] * 10, y=_labels(30))
    inferred = infer_schema({"a": a, "b": b}, label="y")

    cats = {c.casefold() for c in inferred.schema.feature("smoker").categories or []}
    assert cats == {"yes", "no", "former"}
    for frame in (a, b):  # each site's own spellings are accepted
        table_from_frame(frame, inferred.schema, site="s")


def test_a_column_with_no_values_at_all_is_reported_not_given_a_range() -> None:
    inferred = infer_schema(
        {"a": _frame(x=[i % 7 for i in range(30)], empty=[None] * 30, y=_labels(30))}, label="y"
    )
    assert "empty" not in {f.name for f in inferred.schema.features}
    assert any("'empty'" in f and "no values" in f for f in inferred.findings)
    assert "# Finding: column 'empty'" in inferred.toml


def test_a_heavily_missing_column_is_declared_and_reported() -> None:
    rare = [None] * 95 + [4.0, 5.0, 6.0, 5.5, 4.5]
    inferred = infer_schema({"a": _frame(rare=rare, y=_labels(100))}, label="y")
    assert inferred.schema.feature("rare").missing_indicator
    assert any("'rare'" in f and "95%" in f for f in inferred.findings)


def test_a_column_absent_from_one_file_is_left_out_and_named() -> None:
    a = _frame(x=[1, 2, 3] * 10, only_a=[1, 2, 3] * 10, y=_labels(30))
    b = _frame(x=[1, 2, 3] * 10, y=_labels(30))
    inferred = infer_schema({"a": a, "b": b}, label="y")
    assert "only_a" not in {f.name for f in inferred.schema.features}
    assert any("'only_a'" in f and "not in b" in f for f in inferred.findings)


def test_missing_value_tokens_in_a_numeric_column_are_declared_missing() -> None:
    inferred = infer_schema({"a": _frame(x=[1, 2, "?", "NA ", 5] * 6, y=_labels(30))}, label="y")
    x = inferred.schema.feature("x")
    assert x.kind == "numeric" and "?" in x.missing_values


def test_a_label_that_is_not_binary_needs_a_rule() -> None:
    frame = _frame(x=[i % 7 for i in range(30)], outcome=["sick", "well", "well"] * 10)
    with pytest.raises(SchemaInferenceError, match="--positive"):
        infer_schema({"a": frame}, label="outcome")
    inferred = infer_schema({"a": frame}, label="outcome", positive=["Sick"])
    assert inferred.schema.label.positive_values == ["Sick"]


def test_a_label_missing_from_one_file_names_that_file() -> None:
    with pytest.raises(SchemaInferenceError, match="b: --label column 'y'"):
        infer_schema({"a": _frame(x=[1, 2], y=[0, 1]), "b": _frame(x=[1, 2], z=[0, 1])}, label="y")


# ---- merging the sites' reviewed schemas ---------------------------------------------------


def _schema(text: str) -> DataSchema:
    return parse_schema_toml('name = "s"\n[label]\ncolumn = "y"\n' + text, "<test>")


def test_reviewed_schemas_merge_by_declared_names_into_unions() -> None:
    a = _schema(
        '[[features]]\nname = "age"\nkind = "numeric"\nmin = 18\nmax = 90\nimpute = 50\n'
        '[[features]]\nname = "smoker"\nkind = "categorical"\ncategories = ["yes", "no"]\n'
        '[[features]]\nname = "only_a"\nkind = "numeric"\nmin = 0\nmax = 1\n'
    )
    b = _schema(
        '[[features]]\nname = "age"\nkind = "numeric"\nmin = 0\nmax = 100\nimpute = 60\n'
        '[[features]]\nname = "smoker"\nkind = "categorical"\ncategories = ["No ", "former"]\n'
    )
    merged = merge_schemas({"a.toml": a, "b.toml": b})

    age = merged.schema.feature("age")
    assert (age.min, age.max, age.impute) == (0, 100, 55)
    cats = {c.casefold() for c in merged.schema.feature("smoker").categories or []}
    assert cats == {"yes", "no", "former"}
    assert "only_a" not in {f.name for f in merged.schema.features}
    assert any("'only_a'" in f for f in merged.findings)
    assert all((f.note or "").startswith(REVIEW_NOTE) for f in merged.schema.features)


def test_schemas_with_different_labels_do_not_merge() -> None:
    a = _schema('[[features]]\nname = "x"\nkind = "numeric"\nmin = 0\nmax = 1\n')
    b = parse_schema_toml(
        '[label]\ncolumn = "outcome"\n[[features]]\nname = "x"\nkind = "numeric"\nmin = 0\nmax = 1\n',
        "<test>",
    )
    with pytest.raises(SchemaInferenceError, match="label"):
        merge_schemas({"a": a, "b": b})


# ---- the command ------------------------------------------------------------------------------


def test_fedward_schema_infer_writes_one_schema_every_file_satisfies(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    files = []
    for site, n in (("north", 120), ("south", 90)):
        frame = pd.DataFrame(
            {
                "age": rng.integers(20, 90, n),
                "smoker": rng.choice(["Yes ", "no"], n),
                "y": rng.integers(0, 2, n),
            }
        )
        path = tmp_path / f"{site}.csv"
        frame.to_csv(path, index=False)
        files.append(path)
    out = tmp_path / "schema.toml"

    done = CliRunner().invoke(
        fedward_root, ["schema", "infer", *map(str, files), "--label", "y", "--out", str(out)]
    )

    assert done.exit_code == 0, done.output
    schema = load_schema(out)
    for path in files:
        load_table(path, schema, site=path.stem)
    merged_out = tmp_path / "merged.toml"
    again = CliRunner().invoke(
        fedward_root, ["schema", "infer", str(out), str(out), "--out", str(merged_out)]
    )
    assert again.exit_code == 0, again.output
    assert load_schema(merged_out).fingerprint() == schema.fingerprint()


def test_a_semicolon_separated_export_is_named_as_such() -> None:
    frame = pd.DataFrame({"age;smoker;y": ["50;yes;1", "60;no;0"]})
    with pytest.raises(SchemaInferenceError, match="separated by semicolons"):
        infer_schema({"north": frame}, label="y")
