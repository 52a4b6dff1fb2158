"""One search budget for every model family: what sample_configurations promises."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import loguniform, randint

from fedward.common.tuning import GRID_POINTS_PER_DISTRIBUTION, Search, sample_configurations

MIXED = {
    "C": loguniform(1e-3, 1e2),
    "n": randint(1, 50),
    "class_weight": [None, "balanced"],
}


def test_random_search_returns_exactly_the_budget() -> None:
    configs = sample_configurations(MIXED, 17, search="random", seed=3)
    assert len(configs) == 17
    assert all(set(c) == {"C", "n", "class_weight"} for c in configs)


def test_random_search_is_deterministic_for_a_seed() -> None:
    first = sample_configurations(MIXED, 10, search="random", seed=7)
    assert sample_configurations(MIXED, 10, search="random", seed=7) == first
    assert sample_configurations(MIXED, 10, search="random", seed=8) != first


def test_random_search_over_a_small_grid_returns_the_whole_grid_quietly() -> None:
    space: dict[str, Sequence[object]] = {"a": [1, 2, 3], "b": ["x", "y"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        configs = sample_configurations(space, 20, search="random", seed=0)
    assert len(configs) == 6
    assert {(c["a"], c["b"]) for c in configs} == {(a, b) for a in (1, 2, 3) for b in "xy"}


def test_grid_search_returns_the_whole_grid_when_it_fits() -> None:
    configs = sample_configurations({"a": [1, 2], "b": [3, 4, 5]}, 6, search="grid", seed=0)
    assert [(c["a"], c["b"]) for c in configs] == [(a, b) for a in (1, 2) for b in (3, 4, 5)]


def test_grid_search_spreads_the_budget_evenly_over_a_larger_grid() -> None:
    configs = sample_configurations({"k": list(range(10))}, 4, search="grid", seed=0)
    assert [c["k"] for c in configs] == [0, 3, 6, 9]


def test_grid_search_ignores_the_seed() -> None:
    space = {"a": list(range(7)), "b": [0, 1, 2]}
    assert sample_configurations(space, 5, search="grid", seed=1) == sample_configurations(
        space, 5, search="grid", seed=2
    )


def test_grid_search_sees_a_distribution_as_its_quantiles() -> None:
    configs = sample_configurations(
        {"C": loguniform(1e-2, 1e3), "n": randint(1, 11)}, 100, search="grid", seed=0
    )
    cs = sorted({c["C"] for c in configs})
    ns = sorted({c["n"] for c in configs})
    assert len(cs) == GRID_POINTS_PER_DISTRIBUTION
    ratios = np.diff(np.log10(cs))
    assert np.allclose(ratios, ratios[0])  # log-uniform: evenly spaced in log C
    assert all(type(n) is int for n in ns)
    assert ns == [1, 3, 5, 7, 9]


def test_values_are_plain_json_types() -> None:
    space = {"a": np.array([1, 2, 3], dtype=np.int64), "C": loguniform(1e-3, 1.0), "f": [True]}
    for search in ("random", "grid"):
        for config in sample_configurations(space, 5, search=search, seed=0):
            assert type(config["a"]) is int
            assert type(config["C"]) is float
            assert type(config["f"]) is bool
            assert json.loads(json.dumps(config)) == config


@pytest.mark.parametrize(
    ("space", "budget", "search"),
    [
        (MIXED, 0, "random"),
        (MIXED, -1, "grid"),
        (MIXED, 5, "bayes"),
        ({"a": []}, 5, "random"),
        ({"a": "abc"}, 5, "grid"),
        ({"a": 3}, 5, "random"),
    ],
)
def test_rejects_bad_arguments(space: dict[str, object], budget: int, search: str) -> None:
    with pytest.raises(ValueError):
        # A wrong space or search name on purpose: each is refused at run time.
        sample_configurations(space, budget, search=search, seed=0)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=0, max_size=4),
    budget=st.integers(1, 40),
    search=st.sampled_from(["random", "grid"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_list_only_space_gives_the_budget_or_the_whole_grid_without_repeats(
    sizes: list[int], budget: int, search: Search, seed: int
) -> None:
    space = {f"p{i}": list(range(n)) for i, n in enumerate(sizes)}
    configs = sample_configurations(space, budget, search=search, seed=seed)
    assert len(configs) == min(budget, math.prod(sizes))
    keys = [tuple(sorted(c.items())) for c in configs]
    assert len(set(keys)) == len(keys)


@settings(max_examples=30, deadline=None)
@given(budget=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_random_search_with_a_distribution_always_gives_the_budget(budget: int, seed: int) -> None:
    assert len(sample_configurations(MIXED, budget, search="random", seed=seed)) == budget
