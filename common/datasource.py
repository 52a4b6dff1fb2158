"""Reading a site's table and checking it against the declared schema.

A site's data is read once, at the site, and every problem is reported in words a hospital IT team
can act on: the site, the file, the column, an example value and its row. Nothing here is derived
across sites; row-count and class minimums are checked when the table is split
(:mod:`fedward.client.splits`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from fedward.common.errors import SiteDataError
from fedward.common.schema import DataSchema, FeatureSpec, LabelSpec, Scalar
from fedward.common.site_messages import SiteMessage

Format = Literal["auto", "csv", "parquet"]
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
# A header longer than this, or with more columns, is not a clinical table's: pandas would spend
# minutes and gigabytes building millions of columns before any check could name the problem.
MAX_HEADER_BYTES = 1 << 20
MAX_COLUMNS = 20_000
# Example cell values in error details are cut to this length: a 50 MB cell stays in the file.
_EXAMPLE_CHARS = 60
# What a file that is not a CSV at all most often is, by its first bytes.
_NOT_CSV = {
    b"\x1f\x8b": "gzip-compressed; decompress it first",
    b"PK\x03\x04": "a ZIP archive (an Excel .xlsx workbook is one); export it as UTF-8 CSV",
    b"\xd0\xcf\x11\xe0": "an old Excel .xls workbook; export it as UTF-8 CSV",
    b"PAR1": "a Parquet file; name it .parquet or set data.format = 'parquet'",
}


@dataclass(frozen=True)
class LoadedTable:
    """A validated table: the used feature columns, 0/1 labels, optional patient groups."""

    frame: pd.DataFrame
    labels: np.ndarray
    groups: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    # The same warnings as templates a site may send (``fedward.common.site_messages``).
    notices: list[SiteMessage] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return len(self.labels)


def load_table(
    path: Path | str, schema: DataSchema, *, site: str, fmt: Format = "auto"
) -> LoadedTable:
    """Read a CSV or Parquet file and validate it; every failure is a SiteDataError."""
    p = Path(path)
    raw = read_raw(p, site=site, fmt=fmt)
    return table_from_frame(raw, schema, site=site, file=str(p), row_offset=_row_offset(p, fmt))


def read_raw(path: Path, *, site: str, fmt: Format = "auto") -> pd.DataFrame:
    """Read the file with every column as text (CSV) or as stored (Parquet)."""
    if not path.exists():
        raise SiteDataError(
            site, "data file not found; check data.path in the site config", file=path
        ).publicly("data-unreadable")
    if not path.is_file():
        raise SiteDataError(site, "data path is not a file", file=path).publicly("data-unreadable")
    kind = _format_of(path, fmt)
    if kind == "csv":
        _check_csv_header(path, site)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            _refuse_duplicates(list(pq.read_schema(path).names), site=site, file=str(path))
            frame = pq.read_table(path).to_pandas()
        else:
            # header=None: pandas would silently rename a repeated column 'age' to 'age.1'.
            frame = pd.read_csv(
                path,
                dtype=str,
                encoding="utf-8",
                skipinitialspace=True,
                keep_default_na=True,
                header=None,
            )
            frame.columns = ["" if _is_missing(c) else str(c) for c in frame.iloc[0]]
            frame = frame.iloc[1:].reset_index(drop=True)
    except SiteDataError:
        raise
    except UnicodeDecodeError as exc:
        raise SiteDataError(
            site,
            f"file is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
            f"({_line_of(path, exc.start)}) cannot be decoded ({exc.reason}); if it was saved as "
            "latin-1 / Windows-1252, re-save it as UTF-8 CSV",
            file=path,
        ).publicly("data-not-utf8") from exc
    except pd.errors.EmptyDataError as exc:
        raise SiteDataError(site, "file is empty (no header, no rows)", file=path).publicly(
            "data-empty"
        ) from exc
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise SiteDataError(site, f"cannot read the file as {kind}: {exc}", file=path).publicly(
            "data-unparseable", format=kind
        ) from exc
    except Exception as exc:  # pyarrow raises its own error classes for corrupt files
        raise SiteDataError(site, f"cannot read the file as {kind}: {exc}", file=path).publicly(
            "data-unparseable", format=kind
        ) from exc
    if len(frame) == 0:
        raise SiteDataError(site, "file has a header but no data rows", file=path).publicly(
            "data-empty"
        )
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def table_from_frame(
    raw: pd.DataFrame,
    schema: DataSchema,
    *,
    site: str,
    file: str | None = None,
    row_offset: int = 1,
) -> LoadedTable:
    """Validate an already-read table (any dtypes); ``row_offset`` maps positions to file rows."""
    if len(raw) == 0:
        raise SiteDataError(site, "table has no rows", file=file).publicly("data-empty")
    raw = raw.reset_index(drop=True)
    columns = [str(c) for c in raw.columns]

    def require(name: str, what: str) -> None:
        _require_column(
            name, columns, site=site, file=file, what=what, schema_columns=schema.column_names
        )

    if not set(columns) & schema.column_names:
        # Not one declared name: a file without its header line, or another table. Its first
        # line may be a patient's row, so only the number of columns leaves the site.
        require(schema.label.column, "label column")
    _refuse_duplicates(columns, site=site, file=file)
    require(schema.label.column, "label column")
    labels = _labels(raw[schema.label.column], schema.label, site=site, file=file, off=row_offset)

    warnings: list[str] = []
    notices: list[SiteMessage] = []
    out: dict[str, pd.Series] = {}
    for spec in schema.used_features:
        require(spec.name, "feature column")
        col = raw[spec.name]
        if spec.kind == "numeric":
            values = _numeric(col, spec, site=site, file=file, off=row_offset)
        else:
            values = _categorical(col, spec, site=site, file=file, off=row_offset)
        _check_missing(
            values, spec, site=site, file=file, off=row_offset, warnings=warnings, notices=notices
        )
        if spec.kind == "numeric":
            _range_warning(values, spec, site=site, file=file, warnings=warnings, notices=notices)
        out[spec.name] = values

    groups = None
    if schema.patient_id is not None:
        require(schema.patient_id, "patient id column")
        ids = raw[schema.patient_id]
        missing = ids.isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0]) + row_offset
            raise SiteDataError(
                site,
                f"{int(missing.sum())} rows have no patient id; "
                "every row needs one so a patient's rows stay in one split",
                file=file,
                column=schema.patient_id,
                detail=f"first at row {row}",
            )
        groups = ids.astype(str).str.strip().to_numpy()

    frame = pd.DataFrame(out, index=pd.RangeIndex(len(raw)))
    return LoadedTable(
        frame=frame, labels=labels, groups=groups, warnings=warnings, notices=notices
    )


# ---- helpers of one concept: turning raw cells into checked values ----


def _check_csv_header(path: Path, site: str) -> None:
    """Refuse a first line that cannot be a header before pandas tries to build its columns."""
    try:
        with path.open("rb") as fh:
            head = fh.readline(MAX_HEADER_BYTES + 1)
    except OSError as exc:
        raise SiteDataError(site, f"cannot read the file: {exc}", file=path).publicly(
            "data-unreadable"
        ) from exc
    for magic, what in _NOT_CSV.items():
        if head.startswith(magic):
            raise SiteDataError(site, f"not a CSV table: the file is {what}", file=path).publicly(
                "data-unparseable", format="csv"
            )
    if len(head) > MAX_HEADER_BYTES:
        raise SiteDataError(
            site,
            f"the first line is longer than {MAX_HEADER_BYTES // (1 << 20)} MiB, too long for a "
            "header row; check that this is a CSV table with one header line",
            file=path,
        ).publicly("data-unparseable", format="csv")
    if head.count(b",") + 1 > MAX_COLUMNS:
        raise SiteDataError(
            site,
            f"the header has {head.count(b',') + 1} columns, more than {MAX_COLUMNS}; "
            "check that this is a CSV table with one header line",
            file=path,
        ).publicly("data-unparseable", format="csv")


def _refuse_duplicates(columns: list[str], *, site: str, file: str | None) -> None:
    """A repeated column name makes it ambiguous which values are meant: name it, never guess."""
    seen: set[str] = set()
    for name in columns:
        key = name.strip()
        if key in seen:
            raise SiteDataError(
                site,
                f"column '{key}' appears more than once in the header; rename or remove the copy",
                file=file,
                column=key,
            ).publicly("column-repeated")
        seen.add(key)


def _example(value: Any) -> str:
    """A cell value for an error's detail, cut short: the detail names, it does not copy."""
    text = str(value)
    return text if len(text) <= _EXAMPLE_CHARS else f"{text[:_EXAMPLE_CHARS]}… ({len(text)} chars)"


def _line_of(path: Path, offset: int) -> str:
    """The line holding byte ``offset``, for the operator's console."""
    try:
        with path.open("rb") as fh:
            lines = fh.read(offset).count(b"\n") + 1
        return f"line {lines}"
    except OSError:
        return "line unknown"


def _format_of(path: Path, fmt: Format) -> Literal["csv", "parquet"]:
    if fmt != "auto":
        return fmt
    return "parquet" if path.suffix.lower() in _PARQUET_SUFFIXES else "csv"


def _row_offset(path: Path, fmt: Format) -> int:
    # CSV: line 1 is the header, so data row i (0-based) is on line i + 2.
    return 1 if _format_of(path, fmt) == "parquet" else 2


def _row_word(off: int) -> str:
    return "line" if off == 2 else "row"


def _require_column(
    name: str,
    columns: list[str],
    *,
    site: str,
    file: str | None,
    what: str,
    schema_columns: frozenset[str] | None = None,
) -> None:
    if name in columns:
        return
    hint = ""
    close = difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
    if not close:
        folded = {c.casefold(): c for c in columns}
        if name.casefold() in folded:
            close = [folded[name.casefold()]]
    if close:
        hint = f"; did you mean '{close[0]}'?"
    error = SiteDataError(
        site,
        f"{what} '{name}' is missing from the file{hint} (columns: {', '.join(columns[:20])})",
        file=file,
        column=name,
    )
    if schema_columns is not None and not set(columns) & set(schema_columns):
        # No declared name at all: a file without a header line, or another table. The header's
        # cells may be a patient's values, so only their number leaves.
        raise error.publicly("header-mismatch", n_columns=len(columns), what=what, column=name)
    raise error.publicly("column-missing", what=what, column=name)


def _as_text(value: Any) -> str:
    """A cell as case-folded, stripped text; numbers without a spurious '.0'."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if (
        isinstance(value, float | np.floating)
        and math.isfinite(value)
        and float(value).is_integer()
    ):
        return str(int(value))
    return str(value).strip().casefold()


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


# From this many rows on, pandas' vectorised string methods beat a Python loop over the cells
# (about 3x at 100,000 rows); below it their fixed cost per call is larger than the loop.
VECTORISED_MIN_ROWS = 1000


def _only_text(col: pd.Series) -> bool:
    """A long column whose every present cell is a str (a CSV read as text): pandas' vectorised
    string methods then give exactly what the per-cell ``_is_missing`` / ``_as_text`` give, in a
    fraction of the time."""
    return (
        len(col) >= VECTORISED_MIN_ROWS
        and col.dtype == object
        and pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty")
    )


def _stripped(col: pd.Series) -> pd.Series:
    """Stripped text of an all-text column, NaN for empty or missing cells."""
    text = col.str.strip()
    return text.where(text.notna() & (text != ""), np.nan).astype(object)


def _text_column(col: pd.Series) -> pd.Series:
    """Case-folded text with NaN for missing cells."""
    if _only_text(col):
        return _stripped(col).str.casefold().astype(object)
    return pd.Series(
        [np.nan if _is_missing(v) else _as_text(v) for v in col.tolist()],
        index=col.index,
        dtype=object,
    )


def _folded(values: Iterable[Scalar]) -> set[str]:
    return {_as_text(v) for v in values}


def _labels(
    col: pd.Series, spec: LabelSpec, *, site: str, file: str | None, off: int
) -> np.ndarray:
    text = _text_column(col)
    missing = text.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0]) + off
        raise SiteDataError(
            site,
            f"{int(missing.sum())} rows have no label; remove them or fill them in",
            file=file,
            column=spec.column,
            detail=f"first at {_row_word(off)} {row}",
        )
    values = text.to_numpy(dtype=object)
    if spec.positive_values is not None:
        positive = _folded(spec.positive_values)
        labels = np.fromiter((v in positive for v in values), dtype=np.int64, count=len(values))
    elif spec.positive_above is not None:
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        _refuse_non_numeric(numbers, values, site=site, file=file, column=spec.column, off=off)
        labels = (numbers > spec.positive_above).astype(np.int64)
    else:
        mapping = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}
        bad = [i for i, v in enumerate(values) if v not in mapping]
        if bad:
            i = bad[0]
            raise SiteDataError(
                site,
                f"{len(bad)} label values are not 0/1 or true/false; "
                "declare label.positive_values or label.positive_above in the schema",
                file=file,
                column=spec.column,
                detail=f"e.g. '{_example(values[i])}' at {_row_word(off)} {i + off}",
            )
        labels = np.array([mapping[v] for v in values], dtype=np.int64)
    classes = np.unique(labels)
    if len(classes) < 2:
        name = "positive" if classes[0] == 1 else "negative"
        raise SiteDataError(
            site,
            f"every one of the {len(labels)} rows is {name}; training needs both classes",
            file=file,
            column=spec.column,
        )
    return labels


def _refuse_non_numeric(
    numbers: np.ndarray,
    texts: np.ndarray,
    *,
    site: str,
    file: str | None,
    column: str,
    off: int,
) -> None:
    bad = np.flatnonzero(np.isnan(numbers) & pd.notna(texts))
    if len(bad):
        i = int(bad[0])
        raise SiteDataError(
            site,
            f"{len(bad)} non-numeric values in a numeric column; "
            "declare it categorical or fix the values",
            file=file,
            column=column,
            detail=f"e.g. '{_example(texts[i])}' at {_row_word(off)} {i + off}",
        )


def _numeric(
    col: pd.Series, spec: FeatureSpec, *, site: str, file: str | None, off: int
) -> pd.Series:
    if pd.api.types.is_bool_dtype(col.dtype):
        numbers = col.astype(np.float64).to_numpy()
    elif pd.api.types.is_numeric_dtype(col.dtype):
        numbers = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = (
            _stripped(col)
            if _only_text(col)
            else col.astype(object).map(lambda v: np.nan if _is_missing(v) else str(v).strip())
        )
        text_missing = {
            str(v).strip().casefold() for v in spec.missing_values if isinstance(v, str)
        }
        if text_missing:
            text = text.map(
                lambda v: np.nan if isinstance(v, str) and v.casefold() in text_missing else v
            )
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        _refuse_non_numeric(
            numbers, text.to_numpy(dtype=object), site=site, file=file, column=spec.name, off=off
        )
    inf = np.flatnonzero(np.isinf(numbers))
    if len(inf):
        i = int(inf[0])
        raise SiteDataError(
            site,
            f"{len(inf)} infinite values; "
            "replace them with real measurements or leave the cells empty",
            file=file,
            column=spec.name,
            detail=f"first at {_row_word(off)} {i + off}",
        )
    numeric_missing = [
        float(v)
        for v in spec.missing_values
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    for mv in numeric_missing:
        numbers[numbers == mv] = np.nan
    return pd.Series(numbers, index=col.index, dtype=np.float64)


def _categorical(
    col: pd.Series, spec: FeatureSpec, *, site: str, file: str | None, off: int
) -> pd.Series:
    text = _text_column(col)
    missing = _folded(spec.missing_values)
    if missing:
        text = text.map(lambda v: np.nan if isinstance(v, str) and v in missing else v)
    declared = [c.strip().casefold() for c in spec.categories or []]
    present = text.notna().to_numpy()
    unknown = np.flatnonzero(present & ~text.isin(declared).to_numpy())
    if len(unknown):
        i = int(unknown[0])
        raise SiteDataError(
            site,
            f"{len(unknown)} values are not declared categories ({', '.join(declared)}); "
            "fix the values or declare them",
            file=file,
            column=spec.name,
            detail=f"e.g. '{_example(text.iloc[i])}' at {_row_word(off)} {i + off}",
        )
    return text


def _check_missing(
    values: pd.Series,
    spec: FeatureSpec,
    *,
    site: str,
    file: str | None,
    off: int,
    warnings: list[str],
    notices: list[SiteMessage],
) -> None:
    missing = values.isna().to_numpy()
    n_missing = int(missing.sum())
    if n_missing == 0:
        return
    where = f"site '{site}', file '{file}', column '{spec.name}'"
    if n_missing == len(values):
        if not spec.imputable:
            raise SiteDataError(
                site,
                "every value is missing and the schema declares no impute value; "
                "provide the column or declare an impute value",
                file=file,
                column=spec.name,
            )
        warnings.append(
            f"{where}: every value is missing; the declared value {spec.impute!r} is used for all "
            "rows, so this input carries no information at this site"
        )
        notices.append(SiteMessage("warn-all-missing", {"column": spec.name}))
        return
    if not spec.imputable:
        row = int(np.flatnonzero(missing)[0]) + off
        raise SiteDataError(
            site,
            f"{n_missing} missing values and the schema declares "
            "no impute value; fill them in or declare one",
            file=file,
            column=spec.name,
            detail=f"first at {_row_word(off)} {row}",
        )


def _range_warning(
    values: pd.Series,
    spec: FeatureSpec,
    *,
    site: str,
    file: str | None,
    warnings: list[str],
    notices: list[SiteMessage],
) -> None:
    assert spec.min is not None and spec.max is not None
    arr = values.to_numpy()
    outside = int(np.sum((arr < spec.min) | (arr > spec.max)))
    if outside:
        warnings.append(
            f"site '{site}', file '{file}', column '{spec.name}': {outside} of {len(arr)} values "
            f"lie outside the declared range [{spec.min:g}, {spec.max:g}] and are clipped to it"
        )
        notices.append(SiteMessage("warn-out-of-range", {"column": spec.name, "count": outside}))
