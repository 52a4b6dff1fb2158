"""The synthetic bundled dataset: deterministic, valid against its schema, and a skewed federation
of a hundred sites that every site can split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedward.client.splits import split_for_run
from fedward.common.datasets.bundled import (
    DIRICHLET_MIN_PER_CLASS,
    MIN_SITE_ROWS,
    SYNTHETIC_FEATURES,
    SYNTHETIC_ROWS,
    bundled_federation,
    bundled_schema,
    bundled_table,
)
from fedward.common.datasource import table_from_frame
from fedward.common.learning_config import TaskConfig
from fedward.common.run_config import RunConfig, run_schema

N_SITES = 100


def _federation(seed: int = 0, n_sites: int = N_SITES) -> dict[str, np.ndarray]:
    """Each site's labels as the sites read them (through schema validation)."""
    fed = bundled_federation("synthetic", n_sites=n_sites, partition="dirichlet", seed=seed)
    return {s: table_from_frame(f, fed.schema, site=s).labels for s, f in fed.sites.items()}


def test_table_is_generated_the_same_every_time() -> None:
    a, b = bundled_table("synthetic"), bundled_table("synthetic")
    pd.testing.assert_frame_equal(a, b)
    assert a.shape == (SYNTHETIC_ROWS, SYNTHETIC_FEATURES + 1)
    # A copy each time: a caller that edits its table cannot change anyone else's.
    a.loc[0, "x01"] = 99.0
    assert bundled_table("synthetic").loc[0, "x01"] != 99.0


def test_schema_validates_the_whole_table_without_clipping() -> None:
    schema = bundled_schema("synthetic")
    assert len(schema.used_features) == SYNTHETIC_FEATURES
    loaded = table_from_frame(bundled_table("synthetic"), schema, site="all")
    assert not loaded.warnings  # nothing outside the declared ranges, nothing missing
    prevalence = loaded.labels.mean()
    assert 0.25 < prevalence < 0.45  # mildly imbalanced


def test_dirichlet_partition_is_deterministic_for_a_seed() -> None:
    first, again, other = _federation(seed=7), _federation(seed=7), _federation(seed=8)
    assert all(np.array_equal(first[s], again[s]) for s in first)
    assert any(len(first[s]) != len(other[s]) for s in first)


def test_hundred_sites_each_have_enough_rows_and_both_classes() -> None:
    sites = _federation()
    assert len(sites) == N_SITES
    assert sum(len(y) for y in sites.values()) == SYNTHETIC_ROWS
    for name, y in sites.items():
        assert len(y) >= MIN_SITE_ROWS["synthetic"], name
        assert min(int(y.sum()), int((1 - y).sum())) >= DIRICHLET_MIN_PER_CLASS, name


def test_every_site_can_be_split_with_the_default_splits() -> None:
    task = TaskConfig(dataset="synthetic", n_sites=N_SITES, partition="dirichlet")
    run = RunConfig(seed=3, task=task)
    for name, y in _federation(seed=run.seed).items():
        splits = split_for_run(y, groups=None, config=run.splits, seed=run.seed, site=name)
        for part in ("train", "tune", "test", "audit"):
            labels = y[splits.indices(part)]
            assert min(int(labels.sum()), int((1 - labels).sum())) >= 2, (name, part)
    assert run_schema(run) == bundled_schema("synthetic")


def test_labels_are_skewed_across_sites() -> None:
    rates = np.array([y.mean() for y in _federation().values()])
    # Dirichlet(0.5) label skew: some sites mostly negative, some mostly positive.
    assert rates.min() < 0.1 and rates.max() > 0.8
    assert np.percentile(rates, 90) - np.percentile(rates, 10) > 0.5


def test_iid_split_of_the_synthetic_table_is_even() -> None:
    fed = bundled_federation("synthetic", n_sites=N_SITES, partition="iid", seed=0)
    sizes = [len(f) for f in fed.sites.values()]
    assert max(sizes) - min(sizes) <= 2


def test_more_sites_than_the_table_supports_at_200_rows_still_fill_every_site() -> None:
    n_sites = 400  # 100 rows each at most
    sites = _federation(n_sites=n_sites)
    assert min(len(y) for y in sites.values()) >= SYNTHETIC_ROWS // n_sites
    assert min(min(int(y.sum()), int((1 - y).sum())) for y in sites.values()) >= (
        DIRICHLET_MIN_PER_CLASS
    )


@pytest.mark.parametrize("alpha", [0.1, 100.0])
def test_minimum_rows_hold_at_extreme_skew_and_near_iid(alpha: float) -> None:
    fed = bundled_federation(
        "synthetic", n_sites=N_SITES, partition="dirichlet", alpha=alpha, seed=1
    )
    sizes = [len(f) for f in fed.sites.values()]
    assert min(sizes) >= MIN_SITE_ROWS["synthetic"] and sum(sizes) == SYNTHETIC_ROWS
