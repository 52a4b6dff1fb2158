"""What differs between two data schemas, said briefly: the column and the setting, both values.

A site refuses a run whose schema differs from its own (`DataSchema.differences` decides that);
this module only words the difference for a person, so a mismatch reads "column 'age': max 120
here, 100 in the run's schema" instead of two schema dumps.
"""

from __future__ import annotations

from typing import Any

from fedward.common.schema import DataSchema, FeatureSpec

_SETTINGS = ("kind", "min", "max", "impute", "missing_indicator", "missing_values", "drop")
_SHOWN_CATEGORIES = 3


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def _categories(a: FeatureSpec, b: FeatureSpec, here: str, there: str) -> str | None:
    mine = {c.strip().casefold(): c for c in a.categories or []}
    theirs = {c.strip().casefold(): c for c in b.categories or []}
    if list(mine) == list(theirs):
        return None
    extra = [mine[k] for k in mine if k not in theirs]
    lacking = [theirs[k] for k in theirs if k not in mine]
    parts = []
    for what, values in ((f"only {here}", extra), (f"only {there}", lacking)):
        if values:
            shown = ", ".join(f"'{v}'" for v in values[:_SHOWN_CATEGORIES])
            more = f" and {len(values) - _SHOWN_CATEGORIES} more" if len(values) > 3 else ""
            parts.append(f"categories {shown}{more} {what}")
    return "; ".join(parts) or "categories in another order"


def feature_difference(a: FeatureSpec, b: FeatureSpec, here: str, there: str) -> str | None:
    """The first setting in which two declarations of one column differ, with both values."""
    for setting in _SETTINGS:
        x, y = getattr(a, setting), getattr(b, setting)
        if x != y:
            return f"{setting} {_value(x)} {here}, {_value(y)} {there}"
    return _categories(a, b, here, there)


def describe_differences(
    a: DataSchema, b: DataSchema, *, here: str = "here", there: str = "in the other schema"
) -> list[str]:
    """Every difference `DataSchema.differences` finds, each one short and specific."""
    out: list[str] = []
    if a.label != b.label:
        if a.label.column != b.label.column:
            out.append(f"label column '{a.label.column}' {here}, '{b.label.column}' {there}")
        else:
            rule = a.label.model_dump(exclude={"column"}, exclude_none=True)
            other = b.label.model_dump(exclude={"column"}, exclude_none=True)
            out.append(
                f"label '{a.label.column}': positive when {rule or '= 1'} {here}, "
                f"{other or '= 1'} {there}"
            )
    mine = {f.name: f for f in a.features}
    theirs = {f.name: f for f in b.features}
    for name in list(dict.fromkeys([*mine, *theirs])):
        x, y = mine.get(name), theirs.get(name)
        if x is None:
            out.append(f"column '{name}': declared only {there}")
        elif y is None:
            out.append(f"column '{name}': declared only {here}")
        elif x.model_dump(exclude={"note"}) != y.model_dump(exclude={"note"}):
            what = feature_difference(x, y, here, there) or "declared differently"
            out.append(f"column '{name}': {what}")
    if a.patient_id != b.patient_id:
        out.append(f"patient_id {_value(a.patient_id)} {here}, {_value(b.patient_id)} {there}")
    if a.image_shape != b.image_shape:
        out.append(f"image_shape {_value(a.image_shape)} {here}, {_value(b.image_shape)} {there}")
    return out
