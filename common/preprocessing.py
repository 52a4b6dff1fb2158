"""One preprocessing transform shared by every site, frozen before training.

Imputation, clipping, scaling and one-hot encoding are the same function at every site; a site
never standardises its own data, because a model averaged across sites only makes sense when every
site feeds it inputs on the same scale (on the heart-disease hospitals, one shared transform lifts
accuracy from about 0.72 to about 0.80).

Two ways to fix the transform:

* ``SharedTransform.from_schema``: from the declared ranges, categories and imputation values.
  Nothing is learnt from patients, so it costs no privacy.
* ``transform_from_aggregates``: from per-site training-split aggregates (counts, sums, sums of
  squares, category counts) released with the Gaussian mechanism (Dwork & Roth 2014, "The
  Algorithmic Foundations of Differential Privacy", Thm. A.1), the noise scale chosen by the site's
  accountant and the spend recorded in its ledger.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedward.common.schema import DataSchema, FeatureSpec

TRANSFORM_VERSION = 1
# The pooled SD is floored at this share of the declared range: a tiny (or noisy, near-zero) spread
# would otherwise blow a column up to huge values.
MIN_SCALE_SHARE = 0.02
# A log-scaled column enters as log(x - lo + offset), offset = this share of the declared range: the
# lower bound maps to a finite value, and values near it keep about three decades of resolution.
LOG_OFFSET_SHARE = 1e-3


@dataclass(frozen=True)
class NumericColumn:
    """Impute, clip to the declared range, optionally take the log, then (x - center) / scale.

    With ``log``, ``center`` and ``scale`` are on the log scale (see ``warp``): a skewed lab value
    spreads its patients over the model's input range instead of crowding them near the bottom.
    """

    name: str
    center: float
    scale: float
    impute: float
    lo: float
    hi: float
    missing_indicator: bool = False
    log: bool = False

    def warp(self, x: np.ndarray) -> np.ndarray:
        """The clipped value on the scale ``center`` and ``scale`` refer to."""
        return log_warp(x, self.lo, self.hi) if self.log else x


@dataclass(frozen=True)
class CategoricalColumn:
    """Impute the missing category, then one-hot over the declared categories."""

    name: str
    categories: tuple[str, ...]
    impute: str
    missing_indicator: bool = False


Column = NumericColumn | CategoricalColumn


@dataclass(frozen=True)
class SharedTransform:
    """The frozen input transform; JSON-safe so it can travel in a Flower ConfigRecord."""

    columns: tuple[Column, ...]
    source: str = "schema"

    # ---- construction ----

    @classmethod
    def from_schema(cls, schema: DataSchema) -> SharedTransform:
        """Declared range -> [-1, 1]; declared imputation values. No data is read."""
        return cls(
            columns=tuple(_declared_column(f) for f in schema.used_features), source="schema"
        )

    # ---- use ----

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        for col in self.columns:
            if isinstance(col, NumericColumn):
                names.append(col.name)
            else:
                names.extend(f"{col.name}={c}" for c in col.categories)
            if col.missing_indicator:
                names.append(f"{col.name}__missing")
        return names

    @property
    def n_outputs(self) -> int:
        return len(self.feature_names)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, n_outputs) float32 matrix; ``frame`` is a LoadedTable.frame (or the same shape)."""
        n = len(frame)
        blocks: list[np.ndarray] = []
        for col in self.columns:
            if col.name not in frame.columns:
                raise ValueError(f"column '{col.name}' is missing from the table to transform")
            if isinstance(col, NumericColumn):
                x = pd.to_numeric(frame[col.name], errors="raise").to_numpy(
                    dtype=np.float64, na_value=np.nan
                )
                missing = np.isnan(x)
                x = np.where(missing, col.impute, x)
                x = (col.warp(np.clip(x, col.lo, col.hi)) - col.center) / col.scale
                blocks.append(x.reshape(n, 1))
            else:
                values = frame[col.name].astype(object)
                missing = values.isna().to_numpy()
                text = np.array(
                    [
                        col.impute if m else str(v).strip().casefold()
                        for v, m in zip(values, missing, strict=True)
                    ],
                    dtype=object,
                )
                unknown = ~np.isin(text, np.array(col.categories, dtype=object))
                if unknown.any():
                    raise ValueError(
                        f"column '{col.name}': value '{text[np.flatnonzero(unknown)[0]]}' is not a "
                        f"declared category ({', '.join(col.categories)})"
                    )
                onehot = (text.reshape(n, 1) == np.array(col.categories, dtype=object)).astype(
                    np.float64
                )
                blocks.append(onehot)
            if col.missing_indicator:
                blocks.append(missing.astype(np.float64).reshape(n, 1))
        if not blocks:
            return np.zeros((n, 0), dtype=np.float32)
        return np.hstack(blocks).astype(np.float32)

    # ---- serialisation ----

    def to_dict(self) -> dict[str, Any]:
        cols: list[dict[str, Any]] = []
        for col in self.columns:
            if isinstance(col, NumericColumn):
                entry: dict[str, Any] = {
                    "name": col.name,
                    "kind": "numeric",
                    "center": float(col.center),
                    "scale": float(col.scale),
                    "impute": float(col.impute),
                    "lo": float(col.lo),
                    "hi": float(col.hi),
                    "missing_indicator": bool(col.missing_indicator),
                }
                if col.log:  # absent when off: transforms without it keep their fingerprint
                    entry["log"] = True
                cols.append(entry)
            else:
                cols.append(
                    {
                        "name": col.name,
                        "kind": "categorical",
                        "categories": list(col.categories),
                        "impute": col.impute,
                        "missing_indicator": bool(col.missing_indicator),
                    }
                )
        return {"version": TRANSFORM_VERSION, "source": self.source, "columns": cols}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SharedTransform:
        if data.get("version") != TRANSFORM_VERSION:
            raise ValueError(f"unsupported transform version {data.get('version')!r}")
        columns: list[Column] = []
        for c in data["columns"]:
            if c["kind"] == "numeric":
                scale = float(c["scale"])
                if not (math.isfinite(scale) and scale > 0):
                    raise ValueError(f"column '{c['name']}': scale must be positive, got {scale}")
                columns.append(
                    NumericColumn(
                        name=str(c["name"]),
                        center=float(c["center"]),
                        scale=scale,
                        impute=float(c["impute"]),
                        lo=float(c["lo"]),
                        hi=float(c["hi"]),
                        missing_indicator=bool(c.get("missing_indicator", False)),
                        log=bool(c.get("log", False)),
                    )
                )
            elif c["kind"] == "categorical":
                cats = tuple(str(x) for x in c["categories"])
                if str(c["impute"]) not in cats:
                    raise ValueError(f"column '{c['name']}': impute is not a category")
                columns.append(
                    CategoricalColumn(
                        name=str(c["name"]),
                        categories=cats,
                        impute=str(c["impute"]),
                        missing_indicator=bool(c.get("missing_indicator", False)),
                    )
                )
            else:
                raise ValueError(f"column '{c.get('name')}': unknown kind {c['kind']!r}")
        return cls(columns=tuple(columns), source=str(data.get("source", "schema")))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SharedTransform:
        return cls.from_dict(json.loads(text))

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON; every site checks it trains on the same transform."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def log_warp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """log(x - lo + offset) for x already clipped to [lo, hi]: monotone, finite at ``lo``."""
    offset = LOG_OFFSET_SHARE * (hi - lo)
    return np.log(np.asarray(x, dtype=np.float64) - lo + offset)


def _unwarp(value: float, lo: float, hi: float) -> float:
    """The raw value whose log warp is ``value`` (to state a DP-fitted imputation in raw units)."""
    return float(min(max(math.exp(value) - LOG_OFFSET_SHARE * (hi - lo) + lo, lo), hi))


def _warped_bounds(spec: FeatureSpec) -> tuple[float, float]:
    assert spec.min is not None and spec.max is not None
    lo, hi = float(spec.min), float(spec.max)
    if spec.transform != "log":
        return lo, hi
    w = log_warp(np.array([lo, hi]), lo, hi)
    return float(w[0]), float(w[1])


def _declared_column(spec: FeatureSpec) -> Column:
    if spec.kind == "numeric":
        assert spec.min is not None and spec.max is not None
        lo, hi = float(spec.min), float(spec.max)
        w_lo, w_hi = _warped_bounds(spec)
        center = (w_lo + w_hi) / 2.0
        # Missing cells in a column without `impute` are refused by load_table; the midpoint is
        # only a placeholder so the transform is total.
        impute = float(spec.impute) if spec.impute is not None else (lo + hi) / 2.0
        return NumericColumn(
            name=spec.name,
            center=center,
            scale=(w_hi - w_lo) / 2.0,
            impute=impute,
            lo=lo,
            hi=hi,
            missing_indicator=spec.missing_indicator,
            log=spec.transform == "log",
        )
    cats = tuple(c.strip().casefold() for c in spec.categories or [])
    imp = str(spec.impute).strip().casefold() if spec.impute is not None else cats[0]
    return CategoricalColumn(
        name=spec.name, categories=cats, impute=imp, missing_indicator=spec.missing_indicator
    )


# ---- DP-fitted variant ----


def aggregate_sensitivity(schema: DataSchema) -> float:
    """L2 sensitivity of one row's contribution to ``site_aggregates``.

    Adding or removing one patient changes, per numeric feature, n_obs by at most 1, the sum of
    the [0, 1]-scaled value by at most 1 and the sum of squares by at most 1 (squared L2 at most
    3); per categorical feature at most one category count by 1 (squared L2 at most 1). Summed
    over features: sqrt(3 * n_numeric + n_categorical).
    """
    used = schema.used_features
    n_num = sum(1 for f in used if f.kind == "numeric")
    n_cat = len(used) - n_num
    return math.sqrt(3 * n_num + n_cat)


def site_aggregates(
    frame: pd.DataFrame,
    schema: DataSchema,
    *,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> dict[str, list[float]]:
    """Noisy per-feature aggregates of the TRAINING split (pass only those rows).

    Numeric ``num:<name>`` -> [n_obs, sum, sum of squares] of the value clipped to the declared
    range and scaled to [0, 1], missing rows excluded. Categorical ``cat:<name>`` -> one count per
    declared category. Gaussian noise of std ``noise_multiplier * aggregate_sensitivity(schema)``
    is added to every entry; ``noise_multiplier = 0`` gives exact aggregates (tests, non-DP
    simulation only).
    """
    if noise_multiplier < 0:
        raise ValueError("noise_multiplier must be >= 0")
    std = noise_multiplier * aggregate_sensitivity(schema)
    out: dict[str, list[float]] = {}
    for spec in schema.used_features:
        if spec.name not in frame.columns:
            raise ValueError(f"column '{spec.name}' is missing from the table")
        if spec.kind == "numeric":
            assert spec.min is not None and spec.max is not None
            x = pd.to_numeric(frame[spec.name]).to_numpy(dtype=np.float64, na_value=np.nan)
            x = x[~np.isnan(x)]
            u = _unit(spec, x)
            exact = np.array([len(u), u.sum(), np.square(u).sum()], dtype=np.float64)
            key = f"num:{spec.name}"
        else:
            cats = [c.strip().casefold() for c in spec.categories or []]
            values = frame[spec.name].dropna().astype(str).str.strip().str.casefold()
            exact = np.array([float((values == c).sum()) for c in cats], dtype=np.float64)
            key = f"cat:{spec.name}"
        noisy = exact + (rng.normal(0.0, std, size=exact.shape) if std > 0 else 0.0)
        out[key] = [float(v) for v in noisy]
    return out


def _unit(spec: FeatureSpec, x: np.ndarray) -> np.ndarray:
    """The clipped (and, for a log column, log-scaled) value mapped onto [0, 1]."""
    assert spec.min is not None and spec.max is not None
    clipped = np.clip(x, spec.min, spec.max)
    w_lo, w_hi = _warped_bounds(spec)
    if spec.transform == "log":
        clipped = log_warp(clipped, float(spec.min), float(spec.max))
    return (clipped - w_lo) / (w_hi - w_lo)


def transform_from_aggregates(
    schema: DataSchema, aggregates: list[dict[str, list[float]]]
) -> SharedTransform:
    """Sum the sites' (noisy) aggregates into one transform: pooled mean/SD, pooled mode.

    Noise can make counts negative or variances meaningless; every estimate is clamped into what the
    declared range allows, and a feature whose pooled count is not positive falls back to the
    declared (schema) column.
    """
    columns: list[Column] = []
    for spec in schema.used_features:
        declared = _declared_column(spec)
        if spec.kind == "numeric":
            assert spec.min is not None and spec.max is not None
            key = f"num:{spec.name}"
            total = _sum_entries(aggregates, key, 3)
            n, s, ss = (float(v) for v in total)
            if n < 1.0:
                columns.append(declared)
                continue
            w_lo, w_hi = _warped_bounds(spec)
            width = w_hi - w_lo
            mean_u = min(max(s / n, 0.0), 1.0)
            var_u = max(ss / n - mean_u**2, 0.0)
            sd_u = min(max(math.sqrt(var_u), MIN_SCALE_SHARE), 1.0)
            mean = w_lo + mean_u * width
            log = spec.transform == "log"
            raw_mean = _unwarp(mean, float(spec.min), float(spec.max)) if log else mean
            columns.append(
                NumericColumn(
                    name=spec.name,
                    center=mean,
                    scale=sd_u * width,
                    impute=raw_mean,
                    lo=float(spec.min),
                    hi=float(spec.max),
                    missing_indicator=spec.missing_indicator,
                    log=log,
                )
            )
        else:
            assert isinstance(declared, CategoricalColumn)
            key = f"cat:{spec.name}"
            counts = _sum_entries(aggregates, key, len(declared.categories))
            best = int(np.argmax(counts))
            impute = declared.categories[best] if counts[best] > 0 else declared.impute
            columns.append(
                CategoricalColumn(
                    name=spec.name,
                    categories=declared.categories,
                    impute=impute,
                    missing_indicator=spec.missing_indicator,
                )
            )
    return SharedTransform(columns=tuple(columns), source="dp-aggregates")


def _sum_entries(aggregates: list[dict[str, list[float]]], key: str, length: int) -> np.ndarray:
    total = np.zeros(length, dtype=np.float64)
    for i, agg in enumerate(aggregates):
        if key not in agg:
            raise ValueError(f"aggregates of site #{i} lack '{key}'")
        vals = np.asarray(agg[key], dtype=np.float64)
        if vals.shape != (length,) or not np.isfinite(vals).all():
            raise ValueError(f"aggregates of site #{i}: '{key}' must be {length} finite numbers")
        total += vals
    return total
