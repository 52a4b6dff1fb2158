"""The declared data schema: what a site's table must look like, and how it is preprocessed.

Declared ranges, categories and imputation values make the shared preprocessing free of privacy
cost: nothing in them is derived from patient data.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = str | int | float | bool


class LabelSpec(BaseModel):
    """The label column and how it maps to the positive class."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    positive_values: list[Scalar] | None = Field(
        default=None,
        description="Values that mean the positive class; compared as case-folded strings.",
    )
    positive_above: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="A numeric label above this value is the positive class.",
    )

    @model_validator(mode="after")
    def _one_rule(self) -> LabelSpec:
        if self.positive_values is not None and self.positive_above is not None:
            raise ValueError("give either positive_values or positive_above, not both")
        return self


class FeatureSpec(BaseModel):
    """One input column: its kind, declared range or categories, and how missing values are handled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["numeric", "categorical"]
    # Finite: an infinite bound would turn the shared scaling of every site's inputs into NaN.
    min: float | None = Field(
        default=None, allow_inf_nan=False, description="Declared lower bound (numeric)."
    )
    max: float | None = Field(
        default=None, allow_inf_nan=False, description="Declared upper bound (numeric)."
    )
    categories: list[str] | None = Field(
        default=None, description="Declared categories (categorical), compared case-folded."
    )
    missing_values: list[Scalar] = Field(
        default_factory=list,
        description="Values that mean 'missing' besides empty cells (e.g. cholesterol 0).",
    )
    impute: Scalar | None = Field(
        default=None,
        description="Declared value for missing cells; without it a missing cell is an error.",
    )
    missing_indicator: bool = Field(
        default=False, description="Add a 0/1 input that says the value was imputed."
    )
    transform: Literal["none", "log"] = Field(
        default="none",
        description="'log': the (clipped) value enters the model on a log scale, for skewed "
        "positive values such as lab concentrations, where range scaling squeezes most patients "
        "into a sliver of the range.",
    )
    drop: bool = Field(default=False, description="Declared but not used as a model input.")
    note: str | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> FeatureSpec:
        if self.drop:
            return self
        if self.kind == "numeric":
            if self.min is None or self.max is None:
                raise ValueError(f"numeric feature '{self.name}' needs a declared min and max")
            if not self.max > self.min:
                raise ValueError(f"feature '{self.name}': max must be greater than min")
            if self.impute is not None and not isinstance(self.impute, int | float):
                raise ValueError(f"feature '{self.name}': impute must be a number")
            if isinstance(self.impute, float) and not math.isfinite(self.impute):
                raise ValueError(f"feature '{self.name}': impute must be a finite number")
        else:
            if self.transform != "none":
                raise ValueError(f"feature '{self.name}': transform applies to numeric features")
            if not self.categories:
                raise ValueError(f"categorical feature '{self.name}' needs declared categories")
            folded = [c.strip().casefold() for c in self.categories]
            if len(set(folded)) != len(folded):
                raise ValueError(f"feature '{self.name}': categories repeat")
            if self.impute is not None and str(self.impute).strip().casefold() not in folded:
                raise ValueError(
                    f"feature '{self.name}': impute value '{self.impute}' is not a declared category"
                )
        return self

    @property
    def imputable(self) -> bool:
        return self.impute is not None


class DataSchema(BaseModel):
    """A table's declared shape, shared by every site of a federation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "dataset"
    label: LabelSpec
    features: list[FeatureSpec]
    patient_id: str | None = Field(
        default=None, description="Rows sharing this id stay in one split."
    )
    image_shape: list[int] | None = Field(
        default=None,
        description="When set (e.g. [1, 8, 8]), the numeric features are pixels in this shape.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DataSchema:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features repeat: {', '.join(dupes)}")
        if self.label.column in names:
            raise ValueError(f"label column '{self.label.column}' is also listed as a feature")
        if not self.used_features:
            raise ValueError("no feature is left after dropping")
        if self.image_shape is not None:
            size = 1
            for d in self.image_shape:
                size *= d
            if any(f.kind != "numeric" for f in self.used_features) or size != len(
                self.used_features
            ):
                raise ValueError(
                    f"image_shape {self.image_shape} needs exactly {size} numeric features"
                )
        return self

    @property
    def used_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if not f.drop]

    @property
    def column_names(self) -> frozenset[str]:
        """Every column the schema declares: the names a site's messages may use."""
        names = {self.label.column, *(f.name for f in self.features)}
        if self.patient_id is not None:
            names.add(self.patient_id)
        return frozenset(names)

    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def fingerprint(self) -> str:
        """A hash of everything that shapes the model's input; sites must agree on it."""
        payload = self.model_dump(mode="json", exclude={"name"})
        for feat in payload["features"]:
            feat.pop("note", None)
            # Added later: a schema that leaves it at its default keeps the fingerprint it had.
            if feat.get("transform") == "none":
                del feat["transform"]
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def differences(self, other: DataSchema) -> list[str]:
        """Column-level differences, for an error that names the column."""
        out: list[str] = []
        if self.label != other.label:
            out.append(f"label: {self.label.column} vs {other.label.column}")
        mine = {f.name: f for f in self.features}
        theirs = {f.name: f for f in other.features}
        for name in sorted(set(mine) | set(theirs)):
            a, b = mine.get(name), theirs.get(name)
            if a is None:
                out.append(f"column '{name}' is not in this schema")
            elif b is None:
                out.append(f"column '{name}' is missing from the other schema")
            elif a.model_dump(exclude={"note"}) != b.model_dump(exclude={"note"}):
                out.append(f"column '{name}' is declared differently")
        if self.patient_id != other.patient_id:
            out.append(f"patient_id: {self.patient_id} vs {other.patient_id}")
        if self.image_shape != other.image_shape:
            out.append(f"image_shape: {self.image_shape} vs {other.image_shape}")
        return out
