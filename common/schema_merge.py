"""Merging the schemas the sites reviewed into one, by their declared column names.

For a deployment each site infers a schema from its own file, its operator reviews it (replacing
observed ranges by plausible ones), and only the reviewed schemas are merged here: no patient
value crosses a site boundary unreviewed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np

from fedward.common.numeric_summary import round_sig
from fedward.common.schema import DataSchema, FeatureSpec, Scalar
from fedward.common.schema_toml import (
    REVIEW_NOTE,
    InferredSchema,
    SchemaInferenceError,
    schema_document,
    toml_number,
    toml_str,
    toml_value,
)


def merge_schemas(schemas: Mapping[str, DataSchema], *, name: str | None = None) -> InferredSchema:
    """One schema from the sites' reviewed schemas, matched by declared column names.

    Numeric ranges become the union of the declared ranges; categories the union (case-folded);
    an impute value the sites disagree on becomes the median of theirs (numeric) or is left to
    review (categorical: the first site's). A column not declared by every site, or declared with
    different kinds, is left out and reported. The label and patient id must agree.
    """
    if not schemas:
        raise SchemaInferenceError("no schemas to merge")
    sources = list(schemas)
    first = schemas[sources[0]]
    for source in sources[1:]:
        other = schemas[source]
        if other.label != first.label:
            raise SchemaInferenceError(
                f"{source}: label {other.label.model_dump(exclude_none=True)} differs from "
                f"{sources[0]}'s {first.label.model_dump(exclude_none=True)}; agree on one label "
                "rule first"
            )
        if other.patient_id != first.patient_id:
            raise SchemaInferenceError(
                f"{source}: patient_id '{other.patient_id}' differs from {sources[0]}'s "
                f"'{first.patient_id}'"
            )
    findings: list[str] = []
    features: list[str] = []
    order = list(dict.fromkeys(f.name for s in schemas.values() for f in s.features))
    for column in order:
        specs = {s: schemas[s].feature(column) for s in sources if _declares(schemas[s], column)}
        if len(specs) < len(sources):
            absent = [s for s in sources if s not in specs]
            findings.append(f"column '{column}': not declared by {', '.join(absent)}: left out")
            continue
        kinds = {spec.kind for spec in specs.values()}
        if len(kinds) > 1:
            findings.append(
                f"column '{column}': declared {' and '.join(sorted(kinds))} by different sites: "
                "left out"
            )
            continue
        features += _merged_feature(column, list(specs.values()), findings)
    if not features:
        raise SchemaInferenceError(f"{', '.join(sources)}: the schemas share no feature column")
    label = first.label
    label_lines = ["[label]", f"column = {toml_str(label.column)}"]
    if label.positive_values is not None:
        label_lines.append(
            f"positive_values = [{', '.join(toml_value(v) for v in label.positive_values)}]"
        )
    if label.positive_above is not None:
        label_lines.append(f"positive_above = {toml_number(label.positive_above)}")
    head = [
        f"# Data schema merged by `fedward schema infer` on {datetime.now(UTC):%Y-%m-%d} from the",
        f"# reviewed schemas of {', '.join(sources)}, by declared column names. Review it before use.",
        *(f"# Finding: {line}" for line in findings),
    ]
    return schema_document(
        head,
        name or first.name,
        first.patient_id,
        label_lines,
        features,
        findings,
        source="<merged schema>",
    )


def _declares(schema: DataSchema, column: str) -> bool:
    return any(f.name == column for f in schema.features)


def _merged_feature(column: str, specs: list[FeatureSpec], findings: list[str]) -> list[str]:
    kind = specs[0].kind
    lines = ["[[features]]", f"name = {toml_str(column)}", f"kind = {toml_str(kind)}"]
    notes = [f"{REVIEW_NOTE} (fedward schema infer): merged from {len(specs)} site schema(s)"]
    if any(s.drop for s in specs):
        lines.append("drop = true")
    if kind == "numeric" and all(s.min is not None and s.max is not None for s in specs):
        lo = min(float(s.min) for s in specs if s.min is not None)
        hi = max(float(s.max) for s in specs if s.max is not None)
        if len({(s.min, s.max) for s in specs}) > 1:
            notes.append("ranges differed: their union is declared")
        lines += [f"min = {toml_number(lo)}", f"max = {toml_number(hi)}"]
        logged = [s.transform == "log" for s in specs]
        if any(logged):  # one site saw the long tail: the shared transform must take it
            lines.append('transform = "log"')
            if not all(logged):
                notes.append("some sites declared a log scale: it is declared for all")
    elif kind == "categorical":
        seen: dict[str, str] = {}
        for s in specs:
            for c in s.categories or []:
                seen.setdefault(c.strip().casefold(), c.strip())
        if len({frozenset(c.strip().casefold() for c in s.categories or []) for s in specs}) > 1:
            notes.append("categories differed: their union is declared")
        lines.append(f"categories = [{', '.join(toml_str(c) for c in seen.values())}]")
    missing: list[Scalar] = []
    for s in specs:
        for v in s.missing_values:
            if v not in missing:
                missing.append(v)
    if missing:
        lines.append(f"missing_values = [{', '.join(toml_value(v) for v in missing)}]")
    imputes = [s.impute for s in specs if s.impute is not None]
    if imputes:
        if len(set(map(str, imputes))) == 1:
            value: Scalar = imputes[0]
        elif kind == "numeric":
            value = toml_number(round_sig(float(np.median([float(v) for v in imputes]))))
            notes.append("impute values differed: the median of the sites' is declared")
        else:
            value = imputes[0]
            notes.append("impute values differed: the first site's is declared")
            findings.append(f"column '{column}': the sites impute different categories")
        lines.append(f"impute = {toml_value(value)}")
    if any(s.missing_indicator for s in specs):
        lines.append("missing_indicator = true")
    lines += [f"note = {toml_str('; '.join(notes))}", ""]
    return lines
