"""How wrong are DP-released preprocessing statistics, next to the schema's declared defaults?

For the four heart-disease hospitals, each site releases its training-split aggregates through the
Gaussian mechanism at a given epsilon (as ``fedward.client.app.query`` does); the coordinator pools
them. We compare the pooled DP means and SDs of every numeric feature with the exact pooled values
of the same training rows, as a share of the feature's declared range, and do the same for the
schema's declared center (midpoint of the range) and declared imputation value.

    python -m tests.benchmarks.bench_preprocessing [--draws 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import pandas as pd

from fedward.client.accounting import default_delta, gaussian_release_sigma
from fedward.client.splits import split_for_run
from fedward.common.datasets.bundled import bundled_federation, load_bundled_site
from fedward.common.preprocessing import (
    NumericColumn,
    SharedTransform,
    site_aggregates,
    transform_from_aggregates,
)
from fedward.common.run_config import RunConfig
from fedward.common.schema import FeatureSpec

EPSILONS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def training_frames(run: RunConfig) -> dict[str, pd.DataFrame]:
    fed = bundled_federation("heart-disease", n_sites=None, partition="natural", seed=run.seed)
    frames = {}
    for name in fed.sites:
        table = load_bundled_site("heart-disease", name, seed=run.seed)
        splits = split_for_run(
            table.labels, groups=table.groups, config=run.splits, seed=run.seed, site=name
        )
        frames[name] = table.frame.iloc[splits.train]
    return frames


def numeric_columns(transform: SharedTransform) -> dict[str, NumericColumn]:
    """The transform's numeric columns by name (the only ones compared here)."""
    return {c.name: c for c in transform.columns if isinstance(c, NumericColumn)}


def declared_width(spec: FeatureSpec) -> tuple[float, float, float]:
    """A numeric feature's declared min, max and their difference (a numeric feature has both)."""
    assert spec.min is not None and spec.max is not None
    return spec.min, spec.max, spec.max - spec.min


def measure(draws: int, seed: int = 42) -> dict[str, Any]:
    run = RunConfig(seed=seed)
    fed = bundled_federation("heart-disease", n_sites=None, partition="natural", seed=seed)
    schema = fed.schema
    frames = training_frames(run)
    exact = transform_from_aggregates(
        schema,
        [
            site_aggregates(f, schema, noise_multiplier=0.0, rng=np.random.default_rng(0))
            for f in frames.values()
        ],
    )
    numeric = [s for s in schema.used_features if s.kind == "numeric"]
    exact_cols = numeric_columns(exact)
    declared = {s.name: declared_width(s) for s in numeric}
    rows: list[dict[str, Any]] = []
    declared_center = {
        name: abs((lo + hi) / 2 - exact_cols[name].center) / width
        for name, (lo, hi, width) in declared.items()
    }
    declared_impute = {
        s.name: abs(float(s.impute) - exact_cols[s.name].center) / declared[s.name][2]
        for s in numeric
        if s.impute is not None
    }
    rng = np.random.default_rng(seed)
    for eps in EPSILONS:
        mean_err, sd_err = [], []
        for _ in range(draws):
            aggs = []
            for frame in frames.values():
                sigma = gaussian_release_sigma(eps, default_delta(len(frame)), "rdp")
                aggs.append(site_aggregates(frame, schema, noise_multiplier=sigma, rng=rng))
            cols = numeric_columns(transform_from_aggregates(schema, aggs))
            for s in numeric:
                width = declared[s.name][2]
                mean_err.append(abs(cols[s.name].center - exact_cols[s.name].center) / width)
                sd_err.append(abs(cols[s.name].scale - exact_cols[s.name].scale) / width)
        rows.append(
            {
                "epsilon": eps,
                "mean_error_pct_of_range_median": 100 * float(np.median(mean_err)),
                "mean_error_pct_of_range_p90": 100 * float(np.percentile(mean_err, 90)),
                "sd_error_pct_of_range_median": 100 * float(np.median(sd_err)),
            }
        )
    return {
        "sites": {k: len(v) for k, v in frames.items()},
        "numeric_features": [s.name for s in numeric],
        "dp": rows,
        "declared_center_error_pct_of_range_median": 100
        * float(np.median(list(declared_center.values()))),
        "declared_impute_error_pct_of_range_median": 100
        * float(np.median(list(declared_impute.values()))),
        "draws": draws,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = measure(args.draws)
    print(f"training rows per site: {result['sites']}")
    print(
        f"{'epsilon':>8} {'mean err % (median)':>20} {'mean err % (p90)':>17} {'SD err % (median)':>18}"
    )
    for r in result["dp"]:
        print(
            f"{r['epsilon']:>8} {r['mean_error_pct_of_range_median']:>20.1f} "
            f"{r['mean_error_pct_of_range_p90']:>17.1f} {r['sd_error_pct_of_range_median']:>18.1f}"
        )
    print(
        f"declared range midpoint as center: {result['declared_center_error_pct_of_range_median']:.1f}% of range (median)"
    )
    print(
        f"declared imputation value as mean:  {result['declared_impute_error_pct_of_range_median']:.1f}% of range (median)"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
