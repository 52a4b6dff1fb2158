"""Bundled datasets: schemas, federations, site files, and that the heart schema predicts."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedward.client.splits import split_site
from fedward.common.datasets.bundled import (
    BUNDLED,
    DIRICHLET_MIN_PER_CLASS,
    bundled_federation,
    bundled_schema,
    load_bundled_site,
    write_site_files,
)
from fedward.common.datasource import load_table, table_from_frame
from fedward.common.errors import ConfigError
from fedward.common.preprocessing import SharedTransform
from fedward.common.site_config import load_site_config

HEART_SHA256 = "574f2fa2b43012fa25fca4fcdb36bd7c6bccdd0af4242f6c0e4c8633c5a072ae"


def _labels(name: str, **kw: Any) -> dict[str, np.ndarray]:
    fed = bundled_federation(name, **kw)
    return {s: table_from_frame(f, fed.schema, site=s).labels for s, f in fed.sites.items()}


def test_heart_csv_is_the_unchanged_upstream_file() -> None:
    data = resources.files("fedward.common.datasets").joinpath("heart_disease_uci.csv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == HEART_SHA256


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_schema_loads(name: str) -> None:
    assert bundled_schema(name).used_features


def test_heart_schema_drops_ca_and_thal_and_keeps_ids_out() -> None:
    used = {f.name for f in bundled_schema("heart-disease").used_features}
    assert not used & {"ca", "thal", "id", "dataset", "num"}
    assert "slope" in used and "chol" in used


def test_digits_schema_is_an_8x8_image() -> None:
    schema = bundled_schema("digits")
    assert schema.image_shape == [1, 8, 8] and len(schema.used_features) == 64


def test_heart_natural_sites_are_the_four_hospitals() -> None:
    labels = _labels("heart-disease")
    assert {s: len(y) for s, y in labels.items()} == {
        "cleveland": 304,
        "hungary": 293,
        "switzerland": 123,
        "va-long-beach": 200,
    }
    assert int((labels["switzerland"] == 0).sum()) == 8


def test_heart_natural_split_refuses_other_site_counts() -> None:
    with pytest.raises(ConfigError, match="4 hospitals"):
        bundled_federation("heart-disease", n_sites=3, partition="natural")


def test_dataset_without_natural_sites_refuses_natural_partition() -> None:
    with pytest.raises(ConfigError, match="no natural sites"):
        bundled_federation("digits", partition="natural")


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown bundled dataset"):
        bundled_schema("mnist")


def test_iid_sites_are_even_and_stratified() -> None:
    labels = _labels("breast-cancer", n_sites=5, partition="iid", seed=3)
    sizes = [len(y) for y in labels.values()]
    assert list(labels) == [f"site-{i}" for i in range(1, 6)]
    assert sum(sizes) == 569 and max(sizes) - min(sizes) <= 1
    prev = [y.mean() for y in labels.values()]
    assert max(prev) - min(prev) < 0.02


def test_dirichlet_is_skewed_deterministic_and_keeps_minimum_per_class() -> None:
    a = _labels("digits", n_sites=6, partition="dirichlet", alpha=0.1, seed=5)
    b = _labels("digits", n_sites=6, partition="dirichlet", alpha=0.1, seed=5)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    for y in a.values():
        assert (y == 0).sum() >= DIRICHLET_MIN_PER_CLASS and (
            y == 1
        ).sum() >= DIRICHLET_MIN_PER_CLASS
    prev = [y.mean() for y in a.values()]
    assert max(prev) - min(prev) > 0.3


def test_dirichlet_seed_changes_the_partition() -> None:
    a = _labels("digits", n_sites=4, partition="dirichlet", seed=1)
    b = _labels("digits", n_sites=4, partition="dirichlet", seed=2)
    assert [len(y) for y in a.values()] != [len(y) for y in b.values()]


def test_written_site_files_are_valid_configs_and_tables(tmp_path: Path) -> None:
    paths = write_site_files("heart-disease", tmp_path)
    assert [p.parent.name for p in paths] == [
        "cleveland",
        "hungary",
        "switzerland",
        "va-long-beach",
    ]
    assert (tmp_path / "schema.toml").is_file()
    cfg = load_site_config(paths[2])
    assert cfg.name == "switzerland"
    table = load_table(cfg.data_path, cfg.load_schema(), site=cfg.name)
    assert table.n_rows == 123
    assert any("'chol'" in w for w in table.warnings)  # Switzerland never recorded cholesterol


def test_bundled_site_from_memory_equals_the_csv_round_trip() -> None:
    direct = load_bundled_site("heart-disease", "va-long-beach")
    via = load_bundled_site("heart-disease", "va-long-beach", via_csv=True)
    assert direct.frame.equals(via.frame)
    assert np.array_equal(direct.labels, via.labels)


def test_unknown_site_is_refused() -> None:
    with pytest.raises(ConfigError, match="no site 'boston'"):
        load_bundled_site("heart-disease", "boston")


def test_heart_schema_transform_gives_useful_local_models() -> None:
    # Guards the declared schema: logistic regression per hospital, one shared transform.
    fed = bundled_federation("heart-disease")
    tf = SharedTransform.from_schema(fed.schema)
    accs = []
    for seed in range(3):
        for site, raw in fed.sites.items():
            t = table_from_frame(raw, fed.schema, site=site)
            sp = split_site(
                t.labels,
                groups=None,
                tune=0.15,
                test=0.2,
                audit=0.0,
                seed=seed,
                min_per_class=2,
                min_rows=20,
                site=site,
            )
            x = tf.transform(t.frame)
            model = LogisticRegression(max_iter=1000).fit(x[sp.train], t.labels[sp.train])
            accs.append(model.score(x[sp.tune], t.labels[sp.tune]))
    assert np.mean(accs) > 0.75
