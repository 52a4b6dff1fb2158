"""Property tests of the config and data parsers: any input is a valid result or a clear error.

For the config loader: any TOML document (or any bytes) gives a RunConfig or a ConfigError that
names the file and a field, never another exception. For the table loader: any CSV a hospital
export could produce gives a validated table or a SiteDataError naming the site and file (and a
column that is in the header or the schema), never an exception from pandas.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedward.common.config_files import load_schema
from fedward.common.datasource import load_table
from fedward.common.errors import ConfigError, SiteDataError
from fedward.common.run_config import RunConfig, load_run_config
from fedward.common.schema import DataSchema

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
# Generation slows down on a shared, loaded machine: that is no failure of the parsers.
PROPERTY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---- the config parser -----------------------------------------------------------------------

_SECTIONS = {
    name: list(field.annotation.model_fields)
    for name, field in RunConfig.model_fields.items()
    if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields")
}
_JUNK_KEYS = ["", " ", "rounds ", "Rounds", "épsilon", "0", "__class__", "a.b", "x" * 300]
_KEYS = st.sampled_from(
    sorted({k for keys in _SECTIONS.values() for k in keys} | set(RunConfig.model_fields))
    + _JUNK_KEYS
)

_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
    | st.just(datetime.date(1979, 5, 27))
    | st.sampled_from(["fedavg", "mlp", "rdp", "schema", "relu", "natural", "square", "1.0"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=6,
)


def _without_nulls(value: Any) -> Any:
    """TOML has no null: a default of None is left out, as a person writing the file would."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


_DEFAULTS: dict[str, Any] = _without_nulls(RunConfig().model_dump(mode="json"))


@st.composite
def run_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly-plausible run configs: real sections and keys, each holding its default (so some
    documents are valid) or a wrong, huge or junk value; now and then a junk key."""
    doc: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 5))):
        section = draw(st.sampled_from(sorted(_DEFAULTS)) | _KEYS)
        default = _DEFAULTS.get(section)
        if isinstance(default, dict) and draw(st.integers(0, 4)) > 0:
            key = draw(st.sampled_from(sorted(default)) | _KEYS)
            if key in default and draw(st.integers(0, 2)) > 0:
                value = default[key]
            else:
                value = draw(_VALUES)
            if isinstance(doc.setdefault(section, {}), dict):
                doc[section][key] = value
        else:
            doc[section] = default if default is not None and draw(st.booleans()) else draw(_VALUES)
    return doc


def _names_a_field(err: ConfigError) -> bool:
    """A field path, or (for a check across sections) the section names in the reason."""
    return bool(err.field) or any(name in err.reason for name in RunConfig.model_fields)


@PROPERTY
@given(doc=run_documents())
def test_any_toml_document_is_a_run_config_or_a_config_error_naming_a_field(
    tmp_path: Path, doc: dict[str, Any]
) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(tomli_w.dumps(doc).encode())
    try:
        cfg = load_run_config(path)
    except ConfigError as err:
        assert err.path == str(path)
        assert _names_a_field(err), str(err)
        return
    assert isinstance(cfg, RunConfig)
    assert cfg.rounds >= 1 and 0 < cfg.privacy.target_epsilon <= 100
    assert math.isfinite(cfg.privacy.target_epsilon)


@PROPERTY
@given(
    blob=st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | st.lists(
        st.sampled_from(
            [
                "rounds = ",
                "[privacy]",
                "target_epsilon = ",
                "1",
                "-1",
                "nan",
                '"x"',
                "[",
                "]",
                "{",
                "}",
                "=",
                "\n",
                ".",
                "true",
                "[[model]]",
                "hidden = [1, 2]",
                "'",
                '"""',
            ]
        ),
        max_size=25,
    ).map(lambda parts: "".join(parts).encode())
)
def test_any_bytes_are_a_run_config_or_a_config_error(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(blob)
    try:
        load_run_config(path)
    except ConfigError as err:
        assert err.path == str(path) and str(path) in str(err)


# ---- the data parser -------------------------------------------------------------------------

_HEADER_NAMES = ["patient", "age", "chol", "smoker", "outcome", "extra", "AGE", " age", ""]
_CELLS = st.sampled_from(
    [
        "",
        "40",
        "63.5",
        "-1",
        "0",
        "?",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1e999",
        "abc",
        "never",
        "Former",
        "CURRENT ",
        "yes",
        "no",
        "Yes",
        "p1",
        "p2",
        '"a,b"',
        '"x""y"',
        "é",
        "\u202e",
        "NA",
    ]
) | st.text(max_size=8)


_GOOD = {
    "patient": st.sampled_from(["p1", "p2", "p3", " p4 "]),
    "age": st.integers(18, 90).map(str),
    "chol": st.sampled_from(["200", "0", "?", "", "350.5"]),
    "smoker": st.sampled_from(["never", "Former", "CURRENT ", ""]),
    "outcome": st.sampled_from(["yes", "no", "Yes", "NO"]),
}


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """Exports as a hospital might produce them: columns shuffled, repeated or missing, mostly
    plausible cells with junk among them, now and then a ragged row, any line ending."""
    names = draw(
        st.one_of(
            st.permutations(["patient", "age", "chol", "smoker", "outcome"]),
            st.lists(st.sampled_from(_HEADER_NAMES), min_size=1, max_size=7),
        )
    )
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        row = [
            draw(_CELLS) if draw(st.integers(0, 9)) == 0 else draw(_GOOD.get(n.strip(), _CELLS))
            for n in names
        ]
        if draw(st.integers(0, 19)) == 0:  # a ragged row
            row = row[:-1] if draw(st.booleans()) else [*row, draw(_CELLS)]
        rows.append(row)
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join([",".join(names), *(",".join(r) for r in rows)])
    return (text + draw(st.sampled_from(["", newline]))).encode("utf-8")


@pytest.fixture(scope="module")
def schema() -> DataSchema:
    return load_schema(FIXTURES / "small.schema.toml")


def _check(path: Path, schema: DataSchema) -> None:
    try:
        table = load_table(path, schema, site="st-anne")
    except SiteDataError as err:
        assert err.site == "st-anne" and err.file == str(path) and str(path) in str(err)
        known = {schema.label.column, schema.patient_id, *(f.name for f in schema.features)}
        header = (
            path.read_bytes().splitlines()[0].decode("utf-8", "replace")
            if path.stat().st_size
            else ""
        )
        assert err.column is None or err.column in known or err.column in header
        assert len(str(err)) < 2000
        return
    assert list(table.frame.columns) == [f.name for f in schema.used_features]
    assert len(table.labels) == len(table.frame) and set(table.labels.tolist()) == {0, 1}


@PROPERTY
@given(data=csv_files())
def test_any_csv_is_a_table_or_a_site_data_error_naming_file_and_column(
    tmp_path: Path, schema: DataSchema, data: bytes
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    _check(path, schema)


@PROPERTY
@given(data=st.binary(max_size=400))
def test_any_bytes_as_a_csv_are_a_table_or_a_site_data_error(
    tmp_path: Path, schema: DataSchema, data: bytes
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    _check(path, schema)
