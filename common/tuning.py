"""One hyperparameter search budget, shared by every model family a site compares.

A comparison between model families is only fair when each gets the same number of tries on the
same tune split (Bergstra & Bengio 2012, "Random Search for Hyper-Parameter Optimization", for why
random search is the sensible default at a small budget). Every family, the deep model's trials
included, draws its configurations here, from scikit-learn's ``ParameterSampler`` (random) or
``ParameterGrid`` (grid), so "budget 20" means the same thing for all of them.

Configurations come back as plain Python values (no numpy scalars), so they can be reported as they
are and a run can be repeated from its record.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from scipy.stats import rv_discrete
from sklearn.model_selection import ParameterGrid, ParameterSampler

Search = Literal["random", "grid"]
SEARCHES: tuple[Search, ...] = ("random", "grid")

GRID_POINTS_PER_DISTRIBUTION = 5
"""A grid search sees a distribution as this many quantiles (log-spaced for ``loguniform``)."""


@runtime_checkable
class Distribution(Protocol):
    """What ``ParameterSampler`` needs of a scipy.stats frozen distribution, plus its quantiles."""

    def rvs(self, *args: Any, **kwargs: Any) -> Any: ...

    def ppf(self, q: Any) -> Any: ...


Space = Mapping[str, Sequence[Any] | Distribution]


def sample_configurations(
    space: Space, budget: int, *, search: Search, seed: int
) -> list[dict[str, Any]]:
    """At most ``budget`` configurations of ``space``, deterministic for a given ``seed``.

    Random: exactly ``budget`` draws, or the whole grid without repeats when every value is a list
    and the grid is smaller. Grid: the whole grid when it fits in the budget, else ``budget`` points
    evenly spaced over it (``seed`` is then unused); a distribution becomes
    ``GRID_POINTS_PER_DISTRIBUTION`` of its quantiles.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(
            f"the tuning budget must be a positive number of configurations, got {budget!r}"
        )
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
    _check_space(space)
    if search == "random":
        with warnings.catch_warnings():
            # "The total space of parameters N is smaller than n_iter": expected, the whole grid is it.
            warnings.filterwarnings("ignore", category=UserWarning, message="The total space")
            drawn = list(ParameterSampler(dict(space), n_iter=budget, random_state=seed))
        return [_plain_configuration(c) for c in drawn]
    grid = ParameterGrid({name: _grid_values(name, values) for name, values in space.items()})
    size = len(grid)
    if size <= budget:
        return [_plain_configuration(grid[i]) for i in range(size)]
    # Distinct when budget <= size: consecutive points are at least one grid index apart.
    picks = np.round(np.linspace(0, size - 1, budget)).astype(np.int64)
    return [_plain_configuration(grid[int(i)]) for i in picks]


def _check_space(space: Space) -> None:
    for name, values in space.items():
        if isinstance(values, Distribution):
            continue
        if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
            raise ValueError(
                f"search space '{name}': give a list of values or a scipy.stats distribution, "
                f"got {type(values).__name__}"
            )
        if len(values) == 0:
            raise ValueError(f"search space '{name}': the list of values is empty")


def _grid_values(name: str, values: Sequence[Any] | Distribution) -> list[Any]:
    if not isinstance(values, Distribution):
        return list(values)
    q = (np.arange(GRID_POINTS_PER_DISTRIBUTION) + 0.5) / GRID_POINTS_PER_DISTRIBUTION
    points = np.asarray(values.ppf(q), dtype=np.float64)
    if not np.isfinite(points).all():
        raise ValueError(f"search space '{name}': the distribution has non-finite quantiles")
    if _is_discrete(values):
        return sorted({int(p) for p in points})
    return sorted({float(p) for p in points})


def _is_discrete(dist: Distribution) -> bool:
    return isinstance(getattr(dist, "dist", None), rv_discrete)


def _plain_configuration(config: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _plain(config[name]) for name in sorted(config)}


def _plain(value: Any) -> Any:
    """numpy scalars to int/float/bool/str; containers element by element; the rest as given."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
