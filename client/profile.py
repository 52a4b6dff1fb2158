"""A site's training-data profile for the model card: counts, prevalence, missingness and feature
summaries, with every small cell suppressed.

The model card describes the data a model was trained and evaluated on; only the site can. What
leaves is coarse: split sizes, the training split's prevalence, per feature its missing fraction,
mean and standard deviation (numeric) or category counts (categorical). A value that would reveal
a count under the minimum cell size is replaced by None. These are non-DP aggregates, listed as
such; minima, maxima and quantiles are never sent (they are single patients' values).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fedward.common.schema import DataSchema

_MISSING = "\x00missing"  # a key no declared category can have


def _count(n: int, min_cell: int) -> int | None:
    return n if n == 0 or n >= min_cell else None


def suppress(counts: Mapping[str, int], min_cell: int) -> dict[str, int | None]:
    """Small cells to None, and more until the hidden cells add up to at least ``min_cell``.

    With the total known, one hidden cell could be recovered by subtraction (complementary
    disclosure); hiding the next smallest cells too, until the hidden total is not itself small,
    closes that.
    """
    hidden = {k for k, v in counts.items() if 0 < v < min_cell}
    while hidden and sum(counts[k] for k in hidden) < min_cell:
        rest = sorted((v, k) for k, v in counts.items() if k not in hidden and v > 0)
        if not rest:
            break
        hidden.add(rest[0][1])
    return {k: (None if k in hidden else int(v)) for k, v in counts.items()}


def _fraction(part: int, whole: int, min_cell: int) -> float | None:
    """part/whole, unless part or the rest is a small (non-zero) cell."""
    if whole < min_cell or 0 < part < min_cell or 0 < whole - part < min_cell:
        return None
    return part / whole


def site_profile(
    frame: pd.DataFrame,
    labels: np.ndarray,
    split_sizes: Mapping[str, int],
    schema: DataSchema,
    min_cell: int,
) -> dict[str, Any]:
    """The profile of ``frame`` (the training split's rows) with small cells suppressed."""
    n = len(frame)
    n_pos = int(np.asarray(labels).sum())
    features: dict[str, Any] = {}
    for spec in schema.used_features:
        if spec.name not in frame.columns:
            continue
        column = frame[spec.name]
        missing = int(column.isna().sum())
        observed = n - missing
        entry: dict[str, Any] = {
            "kind": spec.kind,
            "missing_fraction": _fraction(missing, n, min_cell),
        }
        if spec.kind == "numeric":
            values = pd.to_numeric(column, errors="coerce").dropna().to_numpy(dtype=np.float64)
            enough = observed >= min_cell
            entry["mean"] = float(values.mean()) if enough and len(values) else None
            entry["sd"] = float(values.std(ddof=1)) if enough and len(values) > 1 else None
        else:
            folded = column.dropna().astype(str).str.strip().str.casefold()
            cells = {c: int((folded == c.strip().casefold()).sum()) for c in spec.categories or []}
            # Missing values are one more cell of the same table: categories plus missing add up
            # to the split's size, so they are suppressed together (complementary suppression).
            cells[_MISSING] = missing
            shown = suppress(cells, min_cell)
            if shown.pop(_MISSING) is None:
                entry["missing_fraction"] = None
            entry["categories"] = shown
        features[spec.name] = entry
    return {
        "n_rows": _count(int(sum(split_sizes.values())), min_cell),
        "splits": suppress({k: int(v) for k, v in split_sizes.items()}, min_cell),
        "prevalence": _fraction(n_pos, n, min_cell),
        "features": features,
    }
