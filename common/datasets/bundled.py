"""Bundled datasets, split into federations of sites, for simulation and deployment tests.

Nothing is downloaded: the heart-disease table ships with fedward (see PROVENANCE.md), breast
cancer and digits ship with scikit-learn, and the synthetic table is generated in-process from a
fixed seed (large enough for federations of a hundred sites). Artificial federations are either IID
(stratified, equal shares) or label-skewed with a per-class Dirichlet draw over sites (Hsu, Qi &
Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification").
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from fedward.common.config_files import load_schema
from fedward.common.datasource import LoadedTable, table_from_frame
from fedward.common.errors import ConfigError
from fedward.common.schema import DataSchema

BUNDLED = ("heart-disease", "breast-cancer", "digits", "synthetic")
Partition = Literal["natural", "iid", "dirichlet"]

_SCHEMA_FILES = {
    "heart-disease": "heart_disease.schema.toml",
    "breast-cancer": "breast_cancer.schema.toml",
    "digits": "digits.schema.toml",
    "synthetic": "synthetic.schema.toml",
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
# The synthetic table: fixed size and generator seed, so every process derives the same rows.
SYNTHETIC_ROWS = 40_000
SYNTHETIC_FEATURES = 30
SYNTHETIC_SEED = 20_240_601
SYNTHETIC_NEGATIVE_SHARE = 0.65  # mildly imbalanced: about 35% positive
SYNTHETIC_BOUND = 4.0  # declared range [-4, 4] of every standardised feature
# Artificial sites of these datasets get at least this many rows (fewer only when the table is too
# small for it), so a scale test measures sites of a realistic size, not empty ones.
MIN_SITE_ROWS = {"synthetic": 200}


@dataclass(frozen=True)
class Federation:
    """A dataset split into sites; each frame is a raw table that load_table accepts as CSV."""

    schema: DataSchema
    sites: Mapping[str, pd.DataFrame]


class _SiteFrames(Mapping[str, pd.DataFrame]):
    """Site frames cut from the table on first access.

    A simulated site rebuilds its federation for every message but reads only its own frame;
    cutting all of them each time would cost every message time in proportion to the sites.
    """

    def __init__(self, table: pd.DataFrame, assignment: np.ndarray, n_sites: int) -> None:
        self._table = table
        # Rows of each site in table order, without one pass over the table per site.
        self._order = np.argsort(assignment, kind="stable")
        self._bounds = np.searchsorted(assignment[self._order], np.arange(n_sites + 1))
        self._names = [f"site-{k + 1}" for k in range(n_sites)]
        self._index = {name: k for k, name in enumerate(self._names)}
        self._frames: dict[str, pd.DataFrame] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            k = self._index[name]  # KeyError for an unknown site, as a dict raises
            rows = self._order[self._bounds[k] : self._bounds[k + 1]]
            self._frames[name] = self._table.iloc[rows].reset_index(drop=True)
        return self._frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


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
    return _cached_table(name).copy()


@lru_cache(maxsize=4)
def _cached_table(name: str) -> pd.DataFrame:
    # Every simulated site's ClientApp rebuilds its federation for each message; building the table
    # once per process keeps that cheap with a hundred sites. Callers only ever see copies.
    _check_name(name)
    if name == "synthetic":
        return _synthetic_table()
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


def _synthetic_table() -> pd.DataFrame:
    """A generated binary task: deterministic, so no file ships and nothing is downloaded."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=SYNTHETIC_ROWS,
        n_features=SYNTHETIC_FEATURES,
        n_informative=8,
        n_redundant=4,
        n_classes=2,
        weights=[SYNTHETIC_NEGATIVE_SHARE],
        flip_y=0.02,
        class_sep=1.0,
        random_state=SYNTHETIC_SEED,
    )
    # Unit variance and a declared range that holds exactly: the shared transform maps [-4, 4] to
    # [-1, 1], so inputs are on the scale it gives the real datasets, and it clips nothing.
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x = np.clip(np.round(x, 4), -SYNTHETIC_BOUND, SYNTHETIC_BOUND)
    frame = pd.DataFrame(x, columns=[f"x{i + 1:02d}" for i in range(SYNTHETIC_FEATURES)])
    frame["label"] = y.astype(np.int64)
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
    table = _cached_table(name)  # every site frame below is a copy
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
    assignment = _cached_assignment(name, n, partition, alpha, seed)
    return Federation(schema=schema, sites=_SiteFrames(table, assignment, n))


@lru_cache(maxsize=16)
def _cached_assignment(
    name: str, n_sites: int, partition: Partition, alpha: float, seed: int
) -> np.ndarray:
    """Site index of every row; read-only, computed once per process for the same arguments."""
    table = _cached_table(name)
    labels = table_from_frame(
        table, bundled_schema(name), site=name, file=f"<bundled {name}>"
    ).labels
    rng = np.random.default_rng(seed)
    if partition == "iid":
        assignment = _iid(labels, n_sites, rng)
    elif name in MIN_SITE_ROWS:
        assignment = _dirichlet_sized(labels, n_sites, alpha, rng, MIN_SITE_ROWS[name])
    else:
        assignment = _dirichlet(labels, n_sites, alpha, rng)
    assignment.setflags(write=False)
    return assignment


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


def _dirichlet_sized(
    labels: np.ndarray, n_sites: int, alpha: float, rng: np.random.Generator, min_rows: int
) -> np.ndarray:
    """Dirichlet label skew that also gives every site ``min_rows`` rows.

    Per class, shares ~ Dir(alpha) over sites as in ``_dirichlet``. Each site first gets the
    per-class minimum, then is topped up to ``min_rows`` with rows in its own expected label mix
    (the mix its Dirichlet shares imply), and the rest of each class is dealt by the shares. The
    top-up keeps small sites as skewed as large ones; the floor keeps every site splittable.
    """
    n_rows = len(labels)
    pools = [rng.permutation(np.flatnonzero(labels == cls)) for cls in (0, 1)]
    sizes = np.array([len(p) for p in pools], dtype=np.int64)
    floors = np.minimum(DIRICHLET_MIN_PER_CLASS, sizes // n_sites)
    shares = rng.dirichlet(np.full(n_sites, alpha), size=2)  # [class, site]
    weight = shares * sizes[:, None]
    positive_mix = weight[1] / np.maximum(weight.sum(axis=0), np.finfo(float).tiny)
    top_up = max(0, min(min_rows, n_rows // n_sites) - int(floors.sum()))
    counts = np.repeat(floors[:, None], n_sites, axis=1)
    left = sizes - floors * n_sites
    for site in range(n_sites):
        # Clamped to what is left of each class; the total left always covers the remaining top-ups.
        positives = round(float(top_up * positive_mix[site]))
        positives = min(max(positives, top_up - int(left[0])), int(left[1]))
        counts[:, site] += (top_up - positives, positives)
        left -= (top_up - positives, positives)
    for cls in (0, 1):
        counts[cls] += rng.multinomial(int(left[cls]), shares[cls])
    assignment = np.empty(n_rows, dtype=np.int64)
    for cls in (0, 1):
        assignment[pools[cls]] = np.repeat(np.arange(n_sites), counts[cls])
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
