"""Who this site is and what data it holds, resolved afresh for every message.

Flower starts a fresh ClientApp per message (Deployment Engine), so nothing here is kept in memory
between rounds; loading and splitting are deterministic from the recorded seed, so every message sees
the same rows in the same splits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedward.client.splits import SiteSplits, split_for_run
from fedward.common.datasets.bundled import bundled_federation
from fedward.common.datasource import LoadedTable, load_table, table_from_frame
from fedward.common.errors import ConfigError, SiteDataError
from fedward.common.run_config import RunConfig
from fedward.common.schema import DataSchema
from fedward.common.site_config import PolicyConfig, SiteConfig, load_site_config

SITE_CONFIG_KEY = "site-config"  # --node-config "site-config='/etc/fedward/site.toml'"


@dataclass(frozen=True)
class Site:
    name: str
    source: str
    schema: DataSchema
    table: LoadedTable
    policy: PolicyConfig
    simulated: bool
    config_file: str | None = None
    dataset_id: str = ""
    state_dir: str | None = None
    simulated_node: bool = False

    @property
    def multi_row_patients(self) -> bool:
        """Patients with several rows: DP-SGD then protects each row, not each patient."""
        groups = self.table.groups
        return groups is not None and len(set(groups.tolist())) < len(groups)


@dataclass(frozen=True)
class PreparedSite:
    site: Site
    splits: SiteSplits

    def rows(self, split: str) -> tuple[Any, np.ndarray]:
        """The frame and labels of one split (train, tune, audit or test)."""
        idx = getattr(self.splits, split)
        return self.site.table.frame.iloc[idx], self.site.table.labels[idx]


@dataclass(frozen=True)
class SiteEntry:
    """Who a node is and what its policy says, known before any data file is opened.

    Approval, withdrawal and the ledger are checked on this; only then does ``load`` read the
    site's table, so a request the site refuses learns nothing about its data.
    """

    name: str
    policy: PolicyConfig
    config_file: str | None
    dataset_id: str
    state_dir: str | None
    simulated_node: bool
    _load: Callable[[], Site]

    def load(self) -> Site:
        return self._load()


def _entry_from_site_config(path: str, *, simulated_node: bool = False) -> SiteEntry:
    cfg: SiteConfig = load_site_config(path)

    def load() -> Site:
        schema = cfg.load_schema()
        table = load_table(cfg.data_path, schema, site=cfg.name, fmt=cfg.data.format)
        return Site(
            name=cfg.name,
            source=str(cfg.data_path),
            schema=schema,
            table=table,
            policy=cfg.policy,
            simulated=False,
            config_file=str(path),
            dataset_id=cfg.data.dataset_id or cfg.name,
            state_dir=str(cfg.state_path),
            simulated_node=simulated_node,
        )

    return SiteEntry(
        name=cfg.name,
        policy=cfg.policy,
        config_file=str(path),
        dataset_id=cfg.data.dataset_id or cfg.name,
        state_dir=str(cfg.state_path),
        simulated_node=simulated_node,
        _load=load,
    )


def _from_site_config(path: str) -> Site:
    return _entry_from_site_config(path).load()


def _from_bundled(run: RunConfig, index: int, n_nodes: int) -> Site:
    name = run.task.dataset
    if name is None:
        raise ConfigError(
            None,
            "task.dataset",
            "no bundled dataset and no site config for this node: start the SuperNode with "
            f"--node-config \"{SITE_CONFIG_KEY}='PATH/site.toml'\"",
        )
    fed = bundled_federation(
        name,
        n_sites=run.task.n_sites,
        partition=run.task.partition,
        alpha=run.task.dirichlet_alpha,
        seed=run.seed,
    )
    names = list(fed.sites)
    if n_nodes != len(names):
        raise ConfigError(
            None,
            "task.n_sites",
            f"the simulation has {n_nodes} nodes but dataset '{name}' is split into "
            f"{len(names)} sites ({', '.join(names)})",
        )
    site_name = names[index]
    # The bundled tables go through the same validation as a site's own file.
    table = table_from_frame(
        fed.sites[site_name], fed.schema, site=site_name, file=f"bundled:{name}/{site_name}"
    )
    # Bundled data only exist for simulation, where non-DP comparison runs are allowed.
    return Site(
        name=site_name,
        source=f"bundled:{name}/{site_name}",
        schema=fed.schema,
        table=table,
        policy=PolicyConfig(allow_non_dp=True, auto_approve=True),
        simulated=True,
        dataset_id=f"{name}/{site_name}",
        simulated_node=True,
    )


def resolve_site(
    node_config: dict[str, Any], run: RunConfig, sim_site_configs: list[str]
) -> SiteEntry:
    """This node's site as its config declares it; a site config's data are not read yet.

    Bundled data sets exist only in simulation, auto-approve, and are package data: their table
    is read at once.
    """
    path = node_config.get(SITE_CONFIG_KEY)
    if path:
        return _entry_from_site_config(str(path))
    if "partition-id" not in node_config:
        raise ConfigError(
            None,
            "node-config",
            f"this SuperNode has no '{SITE_CONFIG_KEY}': start it with "
            f"--node-config \"{SITE_CONFIG_KEY}='PATH/site.toml'\"",
        )
    index = int(node_config["partition-id"])
    n_nodes = int(node_config.get("num-partitions", 1))
    if sim_site_configs:
        if n_nodes != len(sim_site_configs):
            raise ConfigError(
                None,
                "sites",
                f"{len(sim_site_configs)} site configs for {n_nodes} simulated nodes",
            )
        return _entry_from_site_config(sim_site_configs[index], simulated_node=True)
    site = _from_bundled(run, index, n_nodes)
    return SiteEntry(
        name=site.name,
        policy=site.policy,
        config_file=None,
        dataset_id=site.dataset_id,
        state_dir=site.state_dir,
        simulated_node=True,
        _load=lambda: site,
    )


def open_site(node_config: dict[str, Any], run: RunConfig, sim_site_configs: list[str]) -> Site:
    """Resolve this node's site: a site config (deployment or simulation) or a bundled dataset."""
    return resolve_site(node_config, run, sim_site_configs).load()


def prepare(site: Site, run: RunConfig, run_schema: DataSchema) -> PreparedSite:
    """Check the site's schema against the run's, then split with the run's recorded seed."""
    diffs = site.schema.differences(run_schema)
    if diffs:
        first = diffs[0]
        column = first.split("'")[1] if first.count("'") >= 2 else None
        error = SiteDataError(
            site.name,
            "schema differs from the run's schema: " + "; ".join(diffs),
            file=site.config_file or site.source,
            column=column,
        )
        # Only a column the run's schema declares may be named; the site's own extras are counted.
        if column is not None and column in run_schema.column_names:
            raise error.publicly("schema-differs-at", n_differences=len(diffs), column=column)
        raise error.publicly("schema-differs", n_differences=len(diffs))
    splits = split_for_run(
        site.table.labels,
        groups=site.table.groups,
        config=run.splits,
        seed=run.seed,
        site=site.name,
        file=site.source,
    )
    return PreparedSite(site=site, splits=splits)


def schema_from_json(text: str) -> DataSchema:
    return DataSchema.model_validate(json.loads(text))
