"""The one check a simulated federation must pass before any site is asked: one SuperNode per site.

`flwr run .` on Flower's local simulation starts as many SuperNodes as its federation config says,
and each is one site; with another number every site would refuse. The ServerApp stops first,
naming the line to change.
"""

from __future__ import annotations

import logging

from fedward.common.datasets.bundled import bundled_federation
from fedward.server.coordinator_settings import CoordinatorSettings


def count_sites(settings: CoordinatorSettings) -> int:
    if settings.sim_site_configs:
        return len(settings.sim_site_configs)
    task = settings.run.task
    if task.dataset is None:
        raise ValueError("give site configs or a bundled dataset")
    fed = bundled_federation(
        task.dataset,
        n_sites=task.n_sites,
        partition=task.partition,
        alpha=task.dirichlet_alpha,
        seed=settings.run.seed,
    )
    return len(fed.sites)


class FederationSizeError(RuntimeError):
    """Flower's simulation has another number of SuperNodes than the federation has sites."""


def federation_size_problem(n_nodes: int, settings: CoordinatorSettings) -> str | None:
    """The one line to change when `flwr run .` simulates a different number of sites.

    Each simulated SuperNode is one site, so a mismatch would only make every site refuse
    (Flower's default local simulation has 2 SuperNodes, heart-disease 4 hospitals).
    """
    try:
        n_sites = count_sites(settings)
    except ValueError:
        return None  # no bundled dataset and no site configs: the sites bring their own configs
    if n_nodes == n_sites:
        return None
    what = (
        f"dataset '{settings.run.task.dataset}'"
        if not settings.sim_site_configs
        else "the run's site configs"
    )
    return (
        f"the simulation has {n_nodes} SuperNodes but {what} has {n_sites} sites: run "
        f'flwr run . --stream --federation-config "num-supernodes={n_sites}"'
    )


class _WithoutTraceback(logging.Filter):
    """Flower logs a ServerApp's exception with its traceback; this one is a sentence."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FederationSizeError):
            record.exc_info = None
            record.exc_text = None
        return True


_WITHOUT_TRACEBACK = _WithoutTraceback()


def stop_on_federation_size(n_nodes: int, settings: CoordinatorSettings) -> None:
    """Stop before any site is asked anything when the node count cannot match the sites.

    The run then ends failed (Flower's run status and `flwr-simulation`'s exit code), with the
    line to change as its last log line instead of one refusal and traceback per site.
    """
    problem = federation_size_problem(n_nodes, settings)
    if problem is None:
        return
    from flwr.common.logger import log

    logging.getLogger("flwr").addFilter(_WITHOUT_TRACEBACK)  # added once, however many runs
    log(logging.ERROR, "fedward: %s", problem)
    raise FederationSizeError(problem)
