"""One federation over the connected sites: Flower's strategy inside `SiteTracking`, then one read
of the sealed test splits.

The run itself, each deep-model tuning trial, the federated logistic baseline and the controls are
all federations of this one shape; they differ only in the run config they ask for, their purpose
(which the sites record in their ledgers) and the sites they leave out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedward.common.errors import ConfigError
from fedward.common.models import build_model
from fedward.common.protocol import KEY_PURPOSE, KEY_RUN, KEY_RUN_ID, KEY_SPLIT
from fedward.common.run_config import RunConfig
from fedward.common.schema import DataSchema
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.run_folder import RunFolder
from fedward.server.site_registry import SiteRegistry
from fedward.server.site_tracking import SiteTracking
from fedward.server.strategies import build_strategy
from fedward.server.tracking_book import TooFewSites
from fedward.server.update_validation import UpdateValidator


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    """Flower's own wait for nodes never times out; this one does."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def build_run_strategy(grid: Grid, run: RunConfig) -> Strategy:
    """Flower's strategy, inside Flower's central-DP wrapper when ``privacy.central.enabled``.

    Central DP needs the federation's size N (sites are sampled from it): the configured
    ``privacy.central.num_sites``, else the sites connected once ``min_sites`` have joined (in
    simulation every simulated site is registered from the start). Sites joining later only make
    the stated ε conservative: more sites per round get noise sized for fewer, from a larger
    population.
    """
    central = run.privacy.central
    num_sites = None
    if central.enabled:
        num_sites = central.num_sites or len(
            wait_for_nodes(grid, run.strategy.min_sites, run.strategy.site_wait)
        )
    try:
        return build_strategy(run.strategy, central, num_sites=num_sites)
    except ValueError as exc:
        # Flower's wrappers check their arguments with plain ValueErrors (e.g. adaptive clipping's
        # count noise too small for the noise multiplier): name the run config's section.
        where = "privacy.central" if central.enabled else "strategy"
        raise ConfigError(None, where, str(exc)) from exc


@dataclass
class Federation:
    """What one federation asks for and where it records it."""

    run: RunConfig
    run_id: str
    purpose: str
    folder: RunFolder
    shared: dict[str, Any]  # the keys every message carries: schema, transform, simulation state
    heads: LedgerHeads | None = None
    exclude: set[int] = field(default_factory=set)  # node ids left out (leave-one-site-out)
    sealed_test: bool = True  # tuning trials never read the sealed test split

    def config(self) -> dict[str, Any]:
        return {
            **self.shared,
            KEY_RUN: self.run.to_json(),
            KEY_RUN_ID: self.run_id,
            KEY_PURPOSE: self.purpose,
        }

    def tracker(self, grid: Grid) -> SiteTracking:
        tracker = SiteTracking(
            build_run_strategy(grid, self.run),
            folder=self.folder,
            histogram_bins=self.run.evaluation.histogram_bins,
            min_sites=self.run.strategy.min_sites,
            heads=self.heads,
            validator=UpdateValidator.from_config(self.run.strategy.validation),
            # The register lives beside the remembered heads, in the coordinator's state folder.
            registry=None if self.heads is None else SiteRegistry(self.heads.path.parent),
        )
        tracker.excluded.update(self.exclude)
        return tracker


@dataclass
class FederationResult:
    federation: Federation
    tracker: SiteTracking
    initial: ArrayRecord
    arrays: ArrayRecord | None
    test: dict[str, Any] | None
    elapsed: float
    stopped: str | None

    @property
    def final_arrays(self) -> ArrayRecord:
        return self.arrays if self.arrays is not None else self.initial

    def tune_auroc(self) -> float | None:
        """Mean of the sites' tune AUROCs after the last round: what tuning and the choice of the
        best baseline select on, never the test split.

        Within-site AUROCs, averaged: a pooled AUROC would also reward telling the sites apart
        when their prevalences differ, which is not the signal.
        """
        for entry in reversed(self.tracker.history["tune"]):
            values = [
                float(panel["auroc"])
                for panel in (entry.get("sites") or {}).values()
                if panel.get("auroc") is not None
            ]
            if values:
                return sum(values) / len(values)
        return None

    def summary(self) -> dict[str, Any]:
        fed = self.federation
        return {
            "name": fed.run.name,
            "run_id": fed.run_id,
            "purpose": fed.purpose,
            "folder": fed.folder.path.name,
            "config_hash": fed.run.config_hash(),
            "status": "stopped" if self.stopped else "finished",
            "stopped_reason": self.stopped,
            "elapsed_s": round(self.elapsed, 3),
            "tune_auroc": self.tune_auroc(),
            "test": self.test,
            "sites": [
                {
                    k: s[k]
                    for k in (
                        "site",
                        "status",
                        "reason",
                        "epsilon",
                        "delta",
                        "epsilon_lifetime",
                        "delta_lifetime",
                        "epsilon_remaining",
                        "epsilon_tuning",
                    )
                }
                for s in self.tracker.site_summary()
            ],
        }


def federate(
    grid: Grid,
    fed: Federation,
    schema: DataSchema,
    n_inputs: int,
    *,
    tracker: SiteTracking | None = None,
    test_nodes: Iterable[int] | None = None,
    initial_arrays: ArrayRecord | None = None,
) -> FederationResult:
    """Train ``fed.run.rounds`` rounds, then (unless a tuning trial) read the sealed test splits once.

    ``test_nodes``: the sites whose test splits the final model is read on (default: every site
    that trained); leave-one-site-out tests only on the site it left out. A resumed run passes its
    checkpoint's model as ``initial_arrays`` and a tracker whose ``round_offset`` is the rounds the
    checkpoint holds: only the rounds after it are run, under their real numbers.
    """
    run = fed.run
    tracker = tracker or fed.tracker(grid)
    model = build_model(run.model, n_inputs, schema.image_shape, seed=run.seed)
    initial = initial_arrays if initial_arrays is not None else ArrayRecord(model.state_dict())
    config = fed.config()
    wait_for_nodes(grid, run.strategy.min_sites + len(fed.exclude), run.strategy.site_wait)
    started = time.time()
    try:
        result = tracker.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=max(0, run.rounds - tracker.round_offset),
            timeout=run.strategy.round_timeout,
            train_config=ConfigRecord(dict(config)),
            evaluate_config=ConfigRecord({**config, KEY_SPLIT: "tune"}),
        )
    except TooFewSites as stop:
        # A clean stop: the sealed test splits stay unread, no final model is released.
        return FederationResult(fed, tracker, initial, None, None, time.time() - started, str(stop))
    arrays = result.arrays
    test = None
    if fed.sealed_test:
        test = tracker.final_test(
            grid,
            arrays if arrays is not None else initial,
            ConfigRecord(dict(config)),
            run.rounds,
            timeout=run.strategy.round_timeout,
            nodes=None if test_nodes is None else list(test_nodes),
        )
    return FederationResult(fed, tracker, initial, arrays, test, time.time() - started, None)


def describe_model(run: RunConfig) -> str:
    if run.model.kind == "logistic":
        return "logistic regression"
    layers = "-".join(str(h) for h in run.model.hidden)
    return f"{run.model.kind} ({layers}, {run.model.activation})"
