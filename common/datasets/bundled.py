"""Bundled datasets, split into federations of sites, for simulation and deployment tests.

Nothing is downloaded: the heart-disease table ships with fedward (see PROVENANCE.md) and breast
cancer and digits ship with scikit-learn. Artificial federations are either IID (stratified, equal
shares) or label-skewed with a per-class Dirichlet draw over sites (Hsu, Qi & Brown 2019, "Measuring
the Effects of Non-Identical Data Distribution for Federated Visual Classification").
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from fedward.common.config import load_schema
from fedward.common.datasource import LoadedTable, table_from_frame
from fedward.common.errors import ConfigError
from fedward.common.schema import DataSchema

BUNDLED = ("heart-disease", "breast-cancer", "digits")
Partition = Literal["natural", "iid", "dirichlet"]

_SCHEMA_FILES = {
    "heart-disease": "heart_disease.schema.toml",
    "breast-cancer": "breast_cancer.schema.toml",
    "digits": "digits.schema.toml",
}
HEART_CSV = "heart_disease_uci.csv"
HEART_SITES = {
    "Cleveland": "cleveland",
    "Hungary": "hungary",
    "Switzerland": "switzerland",
    "VA Long Beach": "va-long-beach",
}
DEFAULT_N_SITES = 4
# Dirichlet partitions give every site at least this many rows of each class when the class is
# large enough (otherwise its fair share); a site without one class cannot be split or evaluated.
DIRICHLET_MIN_PER_CLASS = 10


@dataclass(frozen=True)
class Federation:
    """A dataset split into sites; each frame is a raw table that load_table accepts as CSV."""

    schema: DataSchema
    sites: dict[str, pd.DataFrame]


def _check_name(name: str) -> None:
    if name not in BUNDLED:
        raise ConfigError(
            None, "task.dataset", f"unknown bundled dataset '{name}'; one of {', '.join(BUNDLED)}"
        )


def _schema_path(name: str) -> Path:
    _check_name(name)
    return Path(str(resources.files("fedward.common.datasets").joinpath(_SCHEMA_FILES[name])))


def bundled_schema(name: str) -> DataSchema:
    """The declared schema of a bundled dataset."""
    return load_schema(_schema_path(name))


def bundled_table(name: str) -> pd.DataFrame:
    """The whole raw table (label column included), before any split into sites."""
    _check_name(name)
    if name == "heart-disease":
        with resources.files("fedward.common.datasets").joinpath(HEART_CSV).open("rb") as fh:
            return pd.read_csv(fh)
    if name == "breast-cancer":
        from sklearn.datasets import load_breast_cancer

        bc = load_breast_cancer()
        frame = pd.DataFrame(bc.data, columns=[_snake(n) for n in bc.feature_names])
        # sklearn codes 0 = malignant, 1 = benign; the clinically positive class is malignant.
        frame["diagnosis"] = np.where(bc.target == 0, "malignant", "benign")
        return frame
    from sklearn.datasets import load_digits

    dg = load_digits()
    cols = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    frame = pd.DataFrame(dg.data, columns=cols)
    frame["digit"] = dg.target.astype(np.int64)
    return frame


def bundled_federation(
    name: str,
    *,
    n_sites: int | None = None,
    partition: Partition = "natural",
    alpha: float = 0.5,
    seed: int = 0,
) -> Federation:
    """Split a bundled dataset into sites, deterministically from ``seed``."""
    schema = bundled_schema(name)
    table = bundled_table(name)
    if partition == "natural":
        if name != "heart-disease":
            raise ConfigError(
                None,
                "task.partition",
                f"dataset '{name}' has no natural sites; use partition 'iid' or 'dirichlet'",
            )
        if n_sites not in (None, len(HEART_SITES)):
            raise ConfigError(
                None,
                "task.n_sites",
                f"the natural heart-disease split has {len(HEART_SITES)} hospitals, not {n_sites}",
            )
        sites = {
            slug: table[table["dataset"] == hospital].reset_index(drop=True)
            for hospital, slug in HEART_SITES.items()
        }
        return Federation(schema=schema, sites=sites)

    n = DEFAULT_N_SITES if n_sites is None else n_sites
    if n < 1:
        raise ConfigError(None, "task.n_sites", f"needs at least 1 site, got {n}")
    if partition not in ("iid", "dirichlet"):
        raise ConfigError(None, "task.partition", f"unknown partition '{partition}'")
    if partition == "dirichlet" and not alpha > 0:
        raise ConfigError(None, "task.dirichlet_alpha", f"must be positive, got {alpha}")
    labels = table_from_frame(table, schema, site=name, file=f"<bundled {name}>").labels
    rng = np.random.default_rng(seed)
    assignment = _iid(labels, n, rng) if partition == "iid" else _dirichlet(labels, n, alpha, rng)
    sites = {
        f"site-{k + 1}": table.iloc[np.flatnonzero(assignment == k)].reset_index(drop=True)
        for k in range(n)
    }
    return Federation(schema=schema, sites=sites)


def _iid(labels: np.ndarray, n_sites: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified equal shares: each class is shuffled and dealt out evenly."""
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for cls in (0, 1):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        # Rotate who gets the remainder so small sites do not always lose the same class.
        owners = (np.arange(len(rows)) + offset) % n_sites
        assignment[rows] = owners
        offset += len(rows)
    return assignment


def _dirichlet(
    labels: np.ndarray, n_sites: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Per class, shares ~ Dir(alpha) over sites, after a guaranteed minimum per site and class."""
    assignment = np.empty(len(labels), dtype=np.int64)
    for cls in (0, 1):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        floor = min(DIRICHLET_MIN_PER_CLASS, len(rows) // n_sites)
        counts = np.full(n_sites, floor, dtype=np.int64)
        rest = len(rows) - floor * n_sites
        shares = rng.dirichlet(np.full(n_sites, alpha))
        counts += rng.multinomial(rest, shares)
        assignment[rows] = np.repeat(np.arange(n_sites), counts)
    return assignment


def write_site_files(
    name: str,
    out_dir: Path | str,
    *,
    n_sites: int | None = None,
    partition: Partition = "natural",
    alpha: float = 0.5,
    seed: int = 0,
) -> list[Path]:
    """Write ``<site>/data.csv``, ``<site>/site.toml`` and a shared ``schema.toml``.

    Returns the site config paths, in site order. Used by deployment tests and ``fedward simulate``
    with real files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fed = bundled_federation(name, n_sites=n_sites, partition=partition, alpha=alpha, seed=seed)
    shutil.copyfile(_schema_path(name), out / "schema.toml")
    paths: list[Path] = []
    for site, frame in fed.sites.items():
        site_dir = out / site
        site_dir.mkdir(parents=True, exist_ok=True)
        frame.to_csv(site_dir / "data.csv", index=False)
        config = site_dir / "site.toml"
        config.write_text(
            f"name = {json.dumps(site)}\n"
            'state_dir = "state"\n\n'
            "[data]\n"
            'path = "data.csv"\n'
            'schema_file = "../schema.toml"\n\n'
            "# Public demonstration data: runs need no approval. A real site approves each run\n"
            "# with `fedward site approve RUN.toml` and leaves auto_approve off.\n"
            "[policy]\n"
            "auto_approve = true\n",
            encoding="utf-8",
        )
        paths.append(config)
    return paths


def load_bundled_site(
    name: str,
    site: str,
    *,
    n_sites: int | None = None,
    partition: Partition = "natural",
    alpha: float = 0.5,
    seed: int = 0,
    via_csv: bool = False,
) -> LoadedTable:
    """One site's validated table, as load_table would return it from the written CSV.

    ``via_csv=True`` really writes and reads the CSV (slower; proves the round trip).
    """
    fed = bundled_federation(name, n_sites=n_sites, partition=partition, alpha=alpha, seed=seed)
    if site not in fed.sites:
        raise ConfigError(
            None, "site", f"dataset '{name}' has no site '{site}'; sites: {', '.join(fed.sites)}"
        )
    frame = fed.sites[site]
    if via_csv:
        from fedward.common.datasource import load_table

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data.csv"
            frame.to_csv(path, index=False)
            return load_table(path, fed.schema, site=site)
    return table_from_frame(frame, fed.schema, site=site, file=f"<bundled {name}/{site}>")


def _snake(label: str) -> str:
    return "_".join(str(label).strip().lower().split())
