"""Inferring a data schema from the sites' own files, pooled column by column, for review.

A schema inferred from data is a skeleton for a person to review, never a federation's final word:
its ranges and imputation values come from patients' values. So the inference is built to be worth
reviewing rather than to be trusted:

- ranges come from robust quantiles (0.5 % to 99.5 %) widened a little and rounded outward, so no
  single patient's extreme sets a bound and the range does not copy a patient's value;
- impossible values (an age of 65526, a lab value a thousand interquartile ranges beyond the
  quartiles) are reported as such, kept out of the range and declared missing, never used silently;
- missing cells are imputed with the median (or a declared value), not the middle of the range;
- categories are the union over every file, with whitespace and case normalised (" Yes" is "yes"),
  which is how the data loader compares them;
- a column with no values at all is reported and left out, never given an invented range;
- every feature carries a REVIEW note, so `fedward site check` asks the operator to review it.

For a deployment each site infers from its own file, its operator reviews the result (replacing
observed ranges by plausible ones), and only the reviewed schemas are merged by their declared
names (``fedward.common.schema_merge``): no patient value crosses a site boundary unreviewed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fedward.common.numeric_summary import (
    HIGH_QUANTILE,
    IMPOSSIBLE_IQRS,
    LOW_QUANTILE,
    round_sig,
    summarise_numeric,
)
from fedward.common.schema import Scalar
from fedward.common.schema_toml import (
    REVIEW_NOTE,
    InferredSchema,
    SchemaInferenceError,
    schema_document,
    toml_number,
    toml_str,
    toml_value,
)

MAX_CATEGORIES = 30  # more distinct texts than this: an identifier or free text, not declared
ID_MIN_ROWS = 20  # an integer column with this many rows, all distinct: an identifier
BINARY_LABELS = {"0", "1", "false", "true", "0.0", "1.0"}
MAX_IMPOSSIBLE_DECLARED = 10  # distinct impossible values written into missing_values
HEAVY_MISSING_SHARE = 0.5
# Texts exports use for "no value" besides an empty cell (pandas already reads NA, NULL, NaN, …).
# Symbols mean "no value" in any column; words only where the rest of the column is numbers (a
# categorical column may well have a category "none" or "unknown").
MISSING_SYMBOLS = frozenset({"?", "-", "--", "."})
MISSING_WORDS = frozenset({"na", "n/a", "none", "null", "missing", "unknown"})


# ---- reading cells ----------------------------------------------------------------------------


def cell_texts(col: pd.Series) -> list[str]:
    """Non-missing cells as stripped text (numbers without a spurious '.0')."""
    out = []
    for v in col.tolist():
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, bool | np.bool_):
            text = "true" if v else "false"
        elif isinstance(v, float | np.floating) and float(v).is_integer():
            text = str(int(v))
        else:
            text = str(v).strip()
        if text:
            out.append(text)
    return out


def _as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ---- inference over files ----------------------------------------------------------------------


@dataclass
class _Column:
    name: str
    files: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    cells: int = 0
    per_file_texts: dict[str, list[str]] = field(default_factory=dict)


def _gather(frames: Mapping[str, pd.DataFrame]) -> dict[str, _Column]:
    columns: dict[str, _Column] = {}
    for source, frame in frames.items():
        for name in frame.columns:
            col = columns.setdefault(str(name), _Column(str(name)))
            texts = cell_texts(frame[name])
            col.files.append(source)
            col.texts += texts
            col.cells += len(frame)
            col.per_file_texts[source] = texts
    return columns


def _split_numbers(texts: list[str]) -> tuple[list[str], list[str]]:
    """The texts that read as finite numbers, and the others."""
    numbers: list[str] = []
    others: list[str] = []
    for t in texts:
        (numbers if _as_number(t) is not None else others).append(t)
    return numbers, others


def _label_lines(
    column: _Column, positive: Sequence[str], positive_above: float | None, where: str
) -> list[str]:
    lines = ["[label]", f"column = {toml_str(column.name)}"]
    if positive:
        return [*lines, f"positive_values = [{', '.join(toml_str(v) for v in positive)}]"]
    if positive_above is not None:
        return [*lines, f"positive_above = {toml_number(positive_above)}"]
    values = {t.casefold() for t in column.texts}
    if not values <= BINARY_LABELS:
        shown = sorted(values)[:10]
        raise SchemaInferenceError(
            f"{where}: column '{column.name}' has values other than 0/1 and true/false "
            f"({', '.join(shown)}{', …' if len(values) > 10 else ''}): give --positive VALUE "
            "(once per value meaning the positive class) or --positive-above NUMBER"
        )
    return lines


def _numeric_lines(
    col: _Column, numbers: list[str], tokens: list[str], declared: str | None, findings: list[str]
) -> tuple[list[str], str]:
    values = np.array([float(t) for t in numbers], dtype=np.float64)
    summary = summarise_numeric(values)
    missing = col.cells - len(numbers)  # empty cells and "no value" tokens
    lines = [
        'kind = "numeric"',
        f"min = {toml_number(summary.lo)}",
        f"max = {toml_number(summary.hi)}",
    ]
    how = (
        "range = the smallest and largest code seen"
        if summary.code
        else f"range from the {LOW_QUANTILE:.1%}–{HIGH_QUANTILE:.1%} quantiles, widened and "
        "rounded outward"
    )
    note = f"{how}; declare the clinically plausible range"
    if summary.skewed:
        lines.append('transform = "log"')
        note += "; skewed (long upper tail): enters the model on a log scale"
    missing_tokens = sorted({t for t in tokens}, key=str.casefold)
    missing_values: list[Scalar] = list(missing_tokens)
    if summary.impossible:
        shown = sorted(summary.impossible)
        n_far = sum(summary.impossible.values())
        where = ", ".join(f"{toml_number(v)} in {', '.join(_holding(col, v))}" for v in shown[:5])
        findings.append(
            f"column '{col.name}': {n_far} impossible value(s) ({where}), more than "
            f"{IMPOSSIBLE_IQRS:g} interquartile ranges beyond the quartiles: kept out of the range "
            "and declared missing (imputed)"
        )
        missing_values += [toml_number(v) for v in shown[:MAX_IMPOSSIBLE_DECLARED]]
        note += f"; {n_far} impossible value(s) declared missing: check the source"
        missing += sum(summary.impossible[v] for v in shown[:MAX_IMPOSSIBLE_DECLARED])
    if missing_values:
        lines.append(f"missing_values = [{', '.join(toml_value(v) for v in missing_values)}]")
    if missing:
        if declared is not None:
            value = _as_number(declared)
            if value is None:
                raise SchemaInferenceError(
                    f"--impute {col.name}={declared}: the column is numeric; give a number"
                )
            impute, how_imputed = toml_number(value), "the declared value"
        else:
            median = min(max(round_sig(summary.median), summary.lo), summary.hi)
            impute, how_imputed = toml_number(median), "the median"
        lines += [f"impute = {impute}", "missing_indicator = true"]
        note += f"; {missing} missing cell(s) imputed with {how_imputed}: check the value"
        _heavy_missing(col, missing, findings)
    return lines, note


def _holding(col: _Column, value: float) -> list[str]:
    """The files with a cell equal to ``value``: where a reviewer looks for it."""
    return sorted(
        s for s, texts in col.per_file_texts.items() if any(_as_number(t) == value for t in texts)
    )


def _heavy_missing(col: _Column, missing: int, findings: list[str]) -> None:
    share = missing / col.cells
    if share >= HEAVY_MISSING_SHARE:
        findings.append(
            f"column '{col.name}': {share:.0%} of cells missing; it is imputed with a "
            "missing-value indicator (drop = true leaves it out of the model)"
        )


def _categorical_lines(
    col: _Column, texts: list[str], tokens: list[str], declared: str | None, findings: list[str]
) -> tuple[list[str] | None, str]:
    spellings: dict[str, Counter[str]] = {}
    for t in texts:
        spellings.setdefault(t.casefold(), Counter())[t] += 1
    if len(spellings) > MAX_CATEGORIES:
        return None, f"{len(spellings)} distinct texts: free text or an identifier?"
    # One spelling names a category as written; several (" Yes", "yes") name it in lower case. The
    # loader compares categories case-folded and stripped anyway.
    categories = sorted(
        (c.most_common(1)[0][0] if len(c) == 1 else k for k, c in spellings.items()),
        key=str.casefold,
    )
    merged = [k for k, c in spellings.items() if len(c) > 1]
    missing = col.cells - len(texts)
    note = f"categories seen in {len(col.files)} file(s); add those other sites may have"
    if merged:
        note += f"; spellings differing in case merged for {len(merged)} of them"
    lines = ['kind = "categorical"']
    impute: str | None = None
    if missing:
        impute = declared.strip() if declared is not None else "unknown"
        if impute.casefold() not in spellings:
            categories.append(impute)
    lines.append(f"categories = [{', '.join(toml_str(c) for c in categories)}]")
    if tokens:
        lines.append(f"missing_values = [{', '.join(toml_str(t) for t in sorted(set(tokens)))}]")
    if impute is not None:
        lines += [f"impute = {toml_str(impute)}", "missing_indicator = true"]
        note += f"; {missing} missing cell(s) imputed as '{impute}': check the value"
        _heavy_missing(col, missing, findings)
    return lines, note


def _feature_lines(
    col: _Column, declared: str | None, findings: list[str], left_out: list[str], made_by: str
) -> list[str] | None:
    words = MISSING_SYMBOLS | MISSING_WORDS
    if any(_as_number(t) is None for t in col.texts if t.casefold() not in words):
        words = MISSING_SYMBOLS  # a text column: only symbols mean "no value"
    present = [t for t in col.texts if t.casefold() not in words]
    tokens = [t for t in col.texts if t.casefold() in words]
    if not present:
        findings.append(f"column '{col.name}': no values in any file: not declared")
        left_out.append(f"{col.name} (no values)")
        return None
    numbers, others = _split_numbers(present)
    head = ["[[features]]", f"name = {toml_str(col.name)}"]
    if not others:
        values = np.array([float(t) for t in numbers])
        integers = bool(np.all(values == np.round(values)))
        if integers and len(values) >= ID_MIN_ROWS and len(np.unique(values)) == len(values):
            left_out.append(f"{col.name} (every value distinct: an identifier?)")
            return None
        body, note = _numeric_lines(col, numbers, tokens, declared, findings)
    else:
        if numbers and len(others) <= max(1, 0.01 * len(present)):
            findings.append(
                f"column '{col.name}': mostly numbers but {len(others)} cell(s) are text "
                f"(e.g. '{others[0][:20]}'): treated as text; fix the cells, or declare them in "
                "missing_values and make the column numeric"
            )
        lines, note = _categorical_lines(col, present, tokens, declared, findings)
        if lines is None:
            left_out.append(f"{col.name} ({note})")
            return None
        body = lines
    return [*head, *body, f"note = {toml_str(f'{REVIEW_NOTE} ({made_by}): {note}')}", ""]


def infer_schema(
    frames: Mapping[str, pd.DataFrame],
    *,
    label: str,
    positive: Sequence[str] = (),
    positive_above: float | None = None,
    patient_id: str | None = None,
    impute: Mapping[str, str] | None = None,
    name: str = "dataset",
    made_by: str = "fedward schema infer",
) -> InferredSchema:
    """One schema over every file (``{source name: table read as text}``), pooled column by column.

    A column missing from some files is left out (each site must have every declared column);
    the label and patient id must be in every file.
    """
    if not frames:
        raise SchemaInferenceError("no data files to infer a schema from")
    impute = dict(impute or {})
    sources = list(frames)
    columns = _gather(frames)
    for what, column in (("--label", label), ("--patient-id", patient_id)):
        if column is None:
            continue
        lacking = [s for s in sources if column not in frames[s].columns]
        if lacking:
            header = [str(c) for c in frames[lacking[0]].columns]
            shown = ", ".join(header[:20])
            hint = (
                "; the header looks separated by semicolons: export the file with commas"
                if len(header) == 1 and ";" in header[0]
                else ""
            )
            raise SchemaInferenceError(
                f"{lacking[0]}: {what} column '{column}' is not in the file (columns: {shown})"
                + hint
            )
    for column in impute:
        if column not in columns:
            raise SchemaInferenceError(f"--impute {column}=…: no file has a column '{column}'")
    findings: list[str] = []
    left_out: list[str] = []
    features: list[str] = []
    for col in columns.values():
        if col.name in (label, patient_id):
            continue
        if len(col.files) < len(sources):
            absent = [s for s in sources if s not in col.files]
            findings.append(
                f"column '{col.name}': not in {', '.join(absent)}: not declared (every site "
                "needs every declared column)"
            )
            left_out.append(f"{col.name} (not in every file)")
            continue
        lines = _feature_lines(col, impute.get(col.name), findings, left_out, made_by)
        if lines is not None:
            features += lines
    if not features:
        raise SchemaInferenceError(
            f"{', '.join(sources)}: no column besides the label can be a feature"
        )
    label_lines = _label_lines(columns[label], positive, positive_above, sources[0])
    shown_sources = ", ".join(sources[:8]) + (
        f" and {len(sources) - 8} more" if len(sources) > 8 else ""
    )
    head = [
        f"# Data schema skeleton written by `{made_by}` on {datetime.now(UTC):%Y-%m-%d}",
        f"# from {len(sources)} file(s): {shown_sources}. Review it before use:",
        "#  - numeric ranges come from the pooled values' 0.5–99.5 % quantiles, widened and rounded",
        "#    outward: replace them with the clinically plausible range (in a deployment, ranges come",
        "#    from domain knowledge, or the shared preprocessing leaks patients' extremes);",
        "#  - missing cells are imputed with the median (numbers) or 'unknown' (categories);",
        "#  - categories are the union over the files, compared without case or surrounding spaces;",
        f"#  - remove each note starting '{REVIEW_NOTE}' once reviewed (`fedward site check` warns).",
    ]
    head += [f"# Finding: {line}" for line in findings]
    if left_out:
        head.append(f"# Not declared: {', '.join(left_out)}")
    return schema_document(
        head, name, patient_id, label_lines, features, findings, source="<inferred schema>"
    )


def read_site_files(paths: Sequence[Path]) -> dict[str, pd.DataFrame]:
    """Each file read as text, named by its stem (the site's name in a data folder)."""
    from fedward.common.datasource import read_raw

    frames: dict[str, pd.DataFrame] = {}
    for path in paths:
        key = path.stem if path.stem not in frames else str(path)
        frames[key] = read_raw(path, site=path.stem)
    return frames
