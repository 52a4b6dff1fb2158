"""Strategies are Flower's own, chosen by name; fedward adds nothing to their arithmetic."""

from __future__ import annotations

from typing import Literal

import pytest
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
)

from fedward.common.strategy_config import StrategyConfig
from fedward.server.strategies import build_strategy

# The names this file builds: each one of StrategyConfig.name's.
StrategyName = Literal[
    "fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum", "multikrum"
]


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("fedavg", FedAvg),
        ("fedprox", FedProx),
        ("fedadam", FedAdam),
        ("fedmedian", FedMedian),
        ("fedtrimmedavg", FedTrimmedAvg),
        ("krum", Krum),
        ("multikrum", MultiKrum),
    ],
)
def test_each_strategy_name_builds_flowers_class(name: StrategyName, cls: type) -> None:
    strategy = build_strategy(StrategyConfig(name=name, min_sites=3))
    assert type(strategy) is cls
    assert strategy.min_train_nodes == 3  # type: ignore[attr-defined]


def test_krum_carries_the_assumed_number_of_hostile_sites() -> None:
    krum = build_strategy(StrategyConfig(name="krum", malicious_sites=1))
    assert isinstance(krum, Krum)
    assert krum.num_malicious_nodes == 1 and krum.num_nodes_to_select == 1
    multi = build_strategy(StrategyConfig(name="multikrum", malicious_sites=1, multikrum_select=3))
    assert isinstance(multi, MultiKrum)
    assert multi.num_nodes_to_select == 3


def test_fedprox_carries_the_configured_proximal_term() -> None:
    strategy = build_strategy(StrategyConfig(name="fedprox", proximal_mu=0.3))
    assert isinstance(strategy, FedProx)
    assert strategy.proximal_mu == 0.3
