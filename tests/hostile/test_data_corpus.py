"""Malformed schemas and data files: each refused with an error naming the file and column.

A site's table comes from a hospital export: any encoding, any shape, any size. Every file either
loads or is refused with a SiteDataError (a schema with a ConfigError) that names the file and,
where one is at fault, the column, and whose text stays short: an example value is named, a 50 MB
cell is never copied into a message that may be logged or shown.
"""

from __future__ import annotations

import datetime
import gzip
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedward.common.config_files import load_schema
from fedward.common.datasource import load_table
from fedward.common.errors import ConfigError, SiteDataError
from fedward.common.schema import DataSchema

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
HEADER = "patient,age,chol,smoker,outcome\n"
ROWS = "p1,40,200,never,yes\np2,50,210,former,no\n"
MiB = 1 << 20


@pytest.fixture(scope="module")
def schema() -> DataSchema:
    return load_schema(FIXTURES / "small.schema.toml")


def _csv(extra: str) -> bytes:
    return (HEADER + ROWS + extra).encode()


def _fifty_mib_line() -> bytes:
    return b"a" * (50 * MiB)


def _huge_cell() -> bytes:
    return _csv("") + b"p3," + b"9" * (8 * MiB) + b",200,never,yes\n"


# (file bytes, the column the error must name or None, words it must say)
CSV_CASES = [
    pytest.param(lambda: (HEADER + ROWS).encode("utf-16"), None, "not UTF-8", id="utf16-file"),
    pytest.param(
        lambda: gzip.compress(_csv("")), None, "gzip-compressed", id="gzip-file-named-csv"
    ),
    pytest.param(
        lambda: _csv("") + b"p3,40,200,n\xe9ver,yes\n",
        None,
        "not UTF-8",
        id="latin1-byte-in-a-cell",
    ),
    pytest.param(
        lambda: _csv("p3,40,200,never,yes,extra,more\n"),
        None,
        "Expected 5 fields in line 4, saw 7",
        id="ragged-row-too-many-fields",
    ),
    pytest.param(lambda: _csv("p3,41\n"), "outcome", "no label", id="ragged-row-too-few-fields"),
    pytest.param(
        lambda: _csv('p3,"40,200,never,yes\np4,41,210,never,no\n'),
        None,
        "EOF inside string",
        id="unclosed-quote",
    ),
    pytest.param(
        lambda: _csv("p3,nan,200,never,yes\n"),
        "age",
        "missing values",
        id="nan-in-numeric-column-without-impute",
    ),
    pytest.param(
        lambda: _csv("p3,-Infinity,200,never,yes\n"), "age", "infinite", id="minus-infinity"
    ),
    pytest.param(
        lambda: _csv("p3,1e999,200,never,yes\n"), "age", "'1e999'", id="number-overflowing-float"
    ),
    pytest.param(lambda: _csv('p3,"40,5",200,never,yes\n'), "age", "'40,5'", id="decimal-comma"),
    pytest.param(
        lambda: _csv("p3,40,200,1,yes\n"), "smoker", "'1'", id="numeric-code-in-categorical"
    ),
    pytest.param(lambda: _csv("p3,40,200,vaper,yes\n"), "smoker", "'vaper'", id="unknown-category"),
    pytest.param(lambda: _csv("p3,40,200,never,NaN\n"), "outcome", "no label", id="nan-label"),
    pytest.param(
        lambda: b"PK\x03\x04" + bytes(200), None, "Excel .xlsx", id="excel-workbook-named-csv"
    ),
    pytest.param(lambda: b"\n\n   \n\n", None, "file is empty", id="whitespace-only-file"),
    pytest.param(
        lambda: b"patient,age,chol,smoker,outcome",
        None,
        "no data rows",
        id="header-only-no-newline",
    ),
    pytest.param(_fifty_mib_line, None, "longer than 1 MiB", id="single-50-MiB-line"),
    pytest.param(
        lambda: b",".join(b"c%d" % i for i in range(30_000)) + b"\n1\n",
        None,
        "more than 20000",
        id="header-with-30000-columns",
    ),
    pytest.param(_huge_cell, "age", "8388608 chars", id="8-MiB-cell-in-numeric-column"),
    pytest.param(
        lambda: (
            b"patient,age,age,chol,smoker,outcome\np1,40,99,200,never,yes\np2,50,98,210,former,no\n"
        ),
        "age",
        "more than once",
        id="duplicate-column",
    ),
    pytest.param(
        lambda: (
            b"patient,age, age ,chol,smoker,outcome\np1,40,9,200,never,yes\np2,50,9,210,former,no\n"
        ),
        "age",
        "more than once",
        id="duplicate-column-after-trimming-spaces",
    ),
    pytest.param(
        lambda: b"patient,age,chol,smoker\np1,40,200,never\np2,50,210,former\n",
        "outcome",
        "label column 'outcome' is missing",
        id="label-column-absent",
    ),
]


@pytest.mark.parametrize(("make", "column", "says"), CSV_CASES)
def test_malformed_csv_is_a_site_data_error_naming_file_and_column(
    tmp_path: Path,
    schema: DataSchema,
    make: Callable[[], bytes],
    column: str | None,
    says: str,
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(make())
    with pytest.raises(SiteDataError) as err:
        load_table(path, schema, site="st-anne")
    text = str(err.value)
    assert err.value.site == "st-anne" and err.value.file == str(path) and str(path) in text
    assert err.value.column == column
    if column is not None:
        assert f"column '{column}'" in text
    assert says in text
    assert len(text) < 1000


def test_an_excel_utf8_bom_does_not_hide_the_first_column(
    tmp_path: Path, schema: DataSchema
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv(""))
    table = load_table(path, schema, site="st-anne")
    assert table.groups is not None and table.groups.tolist() == ["p1", "p2"]


def _parquet_table(**columns: pa.Array | list[object]) -> pa.Table:
    base: dict[str, pa.Array | list[object]] = {
        "patient": ["p1", "p2", "p3"],
        "age": [40.0, 50.0, 60.0],
        "chol": [200.0, 210.0, 220.0],
        "smoker": ["never", "former", "current"],
        "outcome": ["yes", "no", "yes"],
    }
    base.update(columns)
    return pa.table(base)


PARQUET_CASES = [
    pytest.param(
        lambda: _parquet_table(age=["forty", "50", "60"]),
        "age",
        "'forty'",
        id="ages-stored-as-text",
    ),
    pytest.param(
        lambda: _parquet_table(age=pa.array([datetime.datetime(2020, 1, 1)] * 3)),
        "age",
        "non-numeric",
        id="ages-stored-as-timestamps",
    ),
    pytest.param(
        lambda: _parquet_table(age=pa.array([[1], [2], [3]])),
        "age",
        "non-numeric",
        id="ages-stored-as-lists",
    ),
    pytest.param(
        lambda: _parquet_table(age=pa.array([b"\x00\x01"] * 3)),
        "age",
        "non-numeric",
        id="ages-stored-as-bytes",
    ),
    pytest.param(
        lambda: _parquet_table(smoker=[1, 2, 3]),
        "smoker",
        "not declared",
        id="categories-as-int-codes",
    ),
    pytest.param(
        lambda: _parquet_table(outcome=[1.0, 0.0, 1.0]),
        "outcome",
        "every one of the 3 rows is negative",
        id="label-as-floats-against-text-positive-values",
    ),
    pytest.param(
        lambda: pa.Table.from_arrays(
            [pa.array(["p1", "p2"]), pa.array([40.0, 50.0]), pa.array([41.0, 51.0])],
            names=["patient", "age", "age"],
        ),
        "age",
        "more than once",
        id="duplicate-column-in-parquet",
    ),
    pytest.param(
        lambda: pa.table({"patient": pa.array([], pa.string()), "age": pa.array([], pa.float64())}),
        None,
        "no data rows",
        id="parquet-without-rows",
    ),
]


@pytest.mark.parametrize(("make", "column", "says"), PARQUET_CASES)
def test_parquet_with_wrong_dtypes_is_a_site_data_error_naming_the_column(
    tmp_path: Path,
    schema: DataSchema,
    make: Callable[[], pa.Table],
    column: str | None,
    says: str,
) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(make(), path)
    with pytest.raises(SiteDataError) as err:
        load_table(path, schema, site="st-anne")
    text = str(err.value)
    assert err.value.file == str(path) and str(path) in text
    assert err.value.column == column
    assert says in text and len(text) < 1000


_LABEL = '[label]\ncolumn = "y"\n'
_AGE = '[[features]]\nname = "age"\nkind = "numeric"\n'

SCHEMA_CASES = [
    pytest.param(
        _LABEL + _AGE, "features.0", "needs a declared min and max", id="numeric-without-range"
    ),
    pytest.param(
        _LABEL + _AGE + "min = -inf\nmax = 90\n",
        "features.0.min",
        "finite number",
        id="minus-infinite-lower-bound",
    ),
    pytest.param(
        _LABEL + _AGE + "min = 0\nmax = nan\n",
        "features.0.max",
        "finite number",
        id="nan-upper-bound",
    ),
    pytest.param(
        _LABEL + _AGE + "min = 90\nmax = 18\n",
        "features.0",
        "max must be greater than min",
        id="range-upside-down",
    ),
    pytest.param(
        _LABEL + _AGE + "min = 0\nmax = 90\nimpute = nan\n",
        "features.0",
        "impute must be a finite number",
        id="nan-impute-value",
    ),
    pytest.param(
        '[label]\ncolumn = "y"\npositive_above = nan\n' + _AGE + "min = 0\nmax = 90\n",
        "label.positive_above",
        "finite number",
        id="nan-label-threshold",
    ),
    pytest.param(
        _LABEL + (_AGE + "min = 0\nmax = 90\n") * 2,
        None,
        "features repeat: age",
        id="feature-declared-twice",
    ),
    pytest.param(
        '[label]\ncolumn = "age"\n' + _AGE + "min = 0\nmax = 90\n",
        None,
        "label column 'age' is also listed as a feature",
        id="label-is-also-a-feature",
    ),
    pytest.param(
        _LABEL + '[[features]]\nname = "sex"\nkind = "categorical"\ncategories = ["f", "F"]\n',
        "features.0",
        "categories repeat",
        id="categories-repeat-case-folded",
    ),
    pytest.param(
        _LABEL + '[[features]]\nname = "sex"\nkind = "ordinal"\n',
        "features.0.kind",
        "'numeric' or 'categorical'",
        id="unknown-feature-kind",
    ),
]


@pytest.mark.parametrize(("text", "field", "says"), SCHEMA_CASES)
def test_malformed_schema_is_a_config_error_naming_file_and_field(
    tmp_path: Path, text: str, field: str | None, says: str
) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_schema(path)
    assert err.value.path == str(path) and str(path) in str(err.value)
    assert err.value.field == field
    assert says in str(err.value)
