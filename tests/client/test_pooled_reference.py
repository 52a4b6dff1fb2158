"""The simulation's pooled reference: the run's model and the baselines on every site's rows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fedward.client.accounting import EPSILON_TOLERANCE
from fedward.client.baselines import FAMILIES
from fedward.client.pooled_reference import open_simulated_sites, pooled_reference
from fedward.common.metrics import DIFFERENCE_KEYS, PANEL_KEYS
from fedward.common.preprocessing import SharedTransform
from fedward.common.run_config import RunConfig, run_schema


def _run(dp: bool) -> RunConfig:
    return RunConfig.model_validate(
        {"rounds": 2, "privacy": {"dp": dp}, "evaluation": {"bootstrap": 50}}
    )


def _reference(run: RunConfig, families: tuple[str, ...] = FAMILIES) -> dict[str, Any]:
    transform = SharedTransform.from_schema(run_schema(run)).to_dict()
    return pooled_reference(
        run, [], transform, n_sites=4, baseline_budget=2, search="random", families=families
    )


@pytest.fixture(scope="module")
def dp_reference() -> dict[str, Any]:
    return _reference(_run(dp=True))


def test_pools_every_sites_own_splits(dp_reference: dict[str, Any]) -> None:
    run = _run(dp=True)
    sites = open_simulated_sites(run, [], n_sites=4)
    assert dp_reference["sites"] == [p.site.name for p in sites]
    for split in ("train", "tune", "test"):
        assert dp_reference[f"n_{split}"] == sum(len(p.splits.indices(split)) for p in sites)


def test_trains_the_runs_model_under_dp_within_the_target(dp_reference: dict[str, Any]) -> None:
    model = dp_reference["model"]
    assert model["dp"] is True
    assert model["epochs"] == 2
    assert model["noise_multiplier"] > 0
    assert model["epsilon"] <= _run(dp=True).privacy.target_epsilon + EPSILON_TOLERANCE
    assert model["steps"] == model["dp_steps"]
    assert set(model["test"]) == set(PANEL_KEYS)
    assert model["test"]["n"] == dp_reference["n_test"]
    assert model["test"]["auroc"] > 0.6


def test_every_family_reports_its_public_result_and_test_panel(
    dp_reference: dict[str, Any],
) -> None:
    baselines = dp_reference["baselines"]
    assert baselines["budget"] == 2
    assert list(baselines["families"]) == list(FAMILIES)
    for family, entry in baselines["families"].items():
        assert entry["status"] == "ok", (family, entry["reason"])
        assert entry["n_configurations"] == 2
        assert "test_scores" not in entry
        assert set(entry["test"]) == set(PANEL_KEYS)
        assert entry["test"]["auroc"] > 0.6
        assert set(entry["auroc_minus_model"]) == set(DIFFERENCE_KEYS)


def test_the_result_is_json(dp_reference: dict[str, Any]) -> None:
    assert json.loads(json.dumps(dp_reference)) == dp_reference


def test_without_dp_no_noise_is_planned() -> None:
    out = _reference(_run(dp=False), families=("naive_bayes",))
    model = out["model"]
    assert model["dp"] is False
    assert model["noise_multiplier"] is None and model["epsilon"] is None
    assert list(out["baselines"]["families"]) == ["naive_bayes"]
