"""load_table: what a valid table becomes, and how every kind of bad table is refused."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import patch

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedward.common import datasource
from fedward.common.config_files import load_schema
from fedward.common.datasource import (
    _as_text,
    _is_missing,
    _text_column,
    load_table,
    table_from_frame,
)
from fedward.common.errors import SiteDataError
from fedward.common.schema import DataSchema

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.fixture
def schema() -> DataSchema:
    return load_schema(FIXTURES / "small.schema.toml")


def _write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


HEADER = "patient,age,chol,smoker,outcome\n"


def _load(tmp_path: Path, schema: DataSchema, body: str) -> None:
    load_table(_write(tmp_path, HEADER + body), schema, site="st-anne")


def test_valid_csv_gives_used_columns_labels_and_groups(schema: DataSchema) -> None:
    table = load_table(FIXTURES / "small.csv", schema, site="st-anne")
    assert list(table.frame.columns) == ["age", "chol", "smoker"]
    assert table.labels.tolist() == [1, 1, 0, 0, 1, 0]
    assert table.labels.dtype == np.int64
    assert table.groups is not None and table.groups.tolist()[:2] == ["p1", "p1"]


def test_numeric_columns_are_float_with_declared_missing_values_as_nan(schema: DataSchema) -> None:
    frame = load_table(FIXTURES / "small.csv", schema, site="st-anne").frame
    assert frame["chol"].dtype == np.float64
    assert frame["chol"].isna().tolist() == [False, True, True, False, True, False]


def test_categorical_values_are_case_folded_and_stripped(schema: DataSchema) -> None:
    frame = load_table(FIXTURES / "small.csv", schema, site="st-anne").frame
    assert frame["smoker"].tolist()[:3] == ["never", "former", "current"]
    assert pd.isna(frame["smoker"].iloc[3])


def test_parquet_reads_like_csv(tmp_path: Path, schema: DataSchema) -> None:
    csv = load_table(FIXTURES / "small.csv", schema, site="st-anne")
    raw = pd.read_csv(FIXTURES / "small.csv")
    raw.to_parquet(tmp_path / "data.parquet")
    pq = load_table(tmp_path / "data.parquet", schema, site="st-anne")
    pd.testing.assert_frame_equal(pq.frame, csv.frame)
    assert pq.labels.tolist() == csv.labels.tolist()


def test_missing_file_names_site_and_file(tmp_path: Path, schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match="not found") as err:
        load_table(tmp_path / "nope.csv", schema, site="st-anne")
    assert err.value.site == "st-anne" and err.value.file is not None
    assert err.value.file.endswith("nope.csv")


def test_non_utf8_file_is_refused_with_advice(schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match="UTF-8"):
        load_table(FIXTURES / "latin1.csv", schema, site="st-anne")


def test_empty_file_is_refused(tmp_path: Path, schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match="empty"):
        load_table(_write(tmp_path, ""), schema, site="st-anne")


def test_header_without_rows_is_refused(tmp_path: Path, schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match="no data rows"):
        load_table(_write(tmp_path, HEADER), schema, site="st-anne")


def test_corrupt_parquet_is_refused(tmp_path: Path, schema: DataSchema) -> None:
    p = tmp_path / "data.parquet"
    p.write_bytes(b"not parquet at all")
    with pytest.raises(SiteDataError, match="cannot read"):
        load_table(p, schema, site="st-anne")


def test_misspelt_label_column_suggests_the_close_name(tmp_path: Path, schema: DataSchema) -> None:
    path = _write(tmp_path, "patient,age,chol,smoker,outcom\np1,40,200,never,yes\n")
    with pytest.raises(SiteDataError, match="did you mean 'outcom'") as err:
        load_table(path, schema, site="st-anne")
    assert err.value.column == "outcome"


def test_missing_feature_column_is_named(tmp_path: Path, schema: DataSchema) -> None:
    path = _write(tmp_path, "patient,age,smoker,outcome\np1,40,never,yes\np2,41,never,no\n")
    with pytest.raises(SiteDataError, match="feature column 'chol'") as err:
        load_table(path, schema, site="st-anne")
    assert err.value.column == "chol"


def test_dropped_feature_need_not_be_present(tmp_path: Path, schema: DataSchema) -> None:
    body = "p1,40,200,never,yes\np2,41,210,never,no\n"
    table = load_table(_write(tmp_path, HEADER + body), schema, site="st-anne")
    assert "unused" not in table.frame.columns


def test_non_numeric_value_gives_example_line_and_advice(
    tmp_path: Path, schema: DataSchema
) -> None:
    with pytest.raises(SiteDataError, match=r"declare it categorical.*'forty' at line 3") as err:
        _load(tmp_path, schema, "p1,40,200,never,yes\np2,forty,210,never,no\n")
    assert err.value.column == "age"
    # The example value is for the site's operator only: it never appears in what leaves the site.
    assert "forty" not in err.value.public() and "age" in err.value.public()


def test_undeclared_category_gives_example_and_line(tmp_path: Path, schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match=r"'vaper' at line 2") as err:
        _load(tmp_path, schema, "p1,40,200,vaper,yes\np2,41,210,never,no\n")
    assert err.value.column == "smoker"


def test_missing_cell_without_impute_is_refused(tmp_path: Path, schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match=r"1 missing values and .*\(first at line 3\)") as err:
        _load(tmp_path, schema, "p1,40,200,never,yes\np2,,210,never,no\n")
    assert err.value.column == "age"


def test_all_missing_column_without_impute_is_refused(tmp_path: Path, schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match="every value is missing") as err:
        _load(tmp_path, schema, "p1,,200,never,yes\np2,,210,never,no\n")
    assert err.value.column == "age"


def test_all_missing_imputable_column_is_a_warning(tmp_path: Path, schema: DataSchema) -> None:
    path = _write(tmp_path, HEADER + "p1,40,0,never,yes\np2,41,0,never,no\n")
    table = load_table(path, schema, site="st-anne")
    assert len(table.warnings) == 1
    assert "st-anne" in table.warnings[0] and "'chol'" in table.warnings[0]
    assert str(path) in table.warnings[0]


def test_value_outside_declared_range_is_a_warning(tmp_path: Path, schema: DataSchema) -> None:
    path = _write(tmp_path, HEADER + "p1,40,900,never,yes\np2,41,210,never,no\n")
    table = load_table(path, schema, site="st-anne")
    assert any("outside the declared range" in w and "'chol'" in w for w in table.warnings)


def test_missing_label_is_refused(tmp_path: Path, schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match="no label") as err:
        _load(tmp_path, schema, "p1,40,200,never,yes\np2,41,210,never,\n")
    assert err.value.column == "outcome"


def test_single_class_is_refused(tmp_path: Path, schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match="both classes"):
        _load(tmp_path, schema, "p1,40,200,never,no\np2,41,210,never,no\n")


def test_infinite_value_is_refused(tmp_path: Path, schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match="infinite") as err:
        _load(tmp_path, schema, "p1,40,inf,never,yes\np2,41,210,never,no\n")
    assert err.value.column == "chol"


def test_missing_patient_id_is_refused(tmp_path: Path, schema: DataSchema) -> None:
    with pytest.raises(SiteDataError, match="no patient id") as err:
        _load(tmp_path, schema, "p1,40,200,never,yes\n,41,210,never,no\n")
    assert err.value.column == "patient"


def test_label_positive_above_threshold() -> None:
    schema = DataSchema.model_validate(
        {
            "label": {"column": "num", "positive_above": 0},
            "features": [{"name": "x", "kind": "numeric", "min": 0, "max": 1}],
        }
    )
    raw = pd.DataFrame({"x": [0.1, 0.2, 0.3], "num": [0, 2, 1]})
    assert table_from_frame(raw, schema, site="s").labels.tolist() == [0, 1, 1]


def test_label_without_rule_must_be_zero_one_or_bool() -> None:
    schema = DataSchema.model_validate(
        {
            "label": {"column": "y"},
            "features": [{"name": "x", "kind": "numeric", "min": 0, "max": 1}],
        }
    )
    ok = pd.DataFrame({"x": [0.1, 0.2], "y": ["TRUE", "false"]})
    assert table_from_frame(ok, schema, site="s").labels.tolist() == [1, 0]
    bad = pd.DataFrame({"x": [0.1, 0.2], "y": ["sick", "well"]})
    with pytest.raises(SiteDataError, match="positive_values"):
        table_from_frame(bad, schema, site="s")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet=st.sampled_from(list(" \tabcXYZéÇß0129.-")), max_size=8),
            st.just(np.nan),
            st.none(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_vectorised_text_cells_read_as_the_per_cell_rules(cells: list[object]) -> None:
    """The fast path for all-text columns gives what the per-cell rules give, cell by cell."""
    col = pd.Series(cells, dtype=object)
    expected = [np.nan if _is_missing(v) else _as_text(v) for v in cells]
    with patch.object(datasource, "VECTORISED_MIN_ROWS", 0):  # the fast path, on short columns
        got = _text_column(col).tolist()
    assert [None if pd.isna(v) else v for v in got] == [None if pd.isna(v) else v for v in expected]
