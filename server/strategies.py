"""Flower's own strategies, chosen by name in the run config. fedward wraps them; it never forks them."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian, FedProx, FedTrimmedAvg, Strategy

from fedward.common.config import StrategyConfig


def build_strategy(cfg: StrategyConfig) -> Strategy:
    common = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": 1.0,
        "min_train_nodes": cfg.min_sites,
        "min_evaluate_nodes": cfg.min_sites,
        "min_available_nodes": cfg.min_sites,
    }
    if cfg.name == "fedavg":
        return FedAvg(**common)
    if cfg.name == "fedprox":
        return FedProx(proximal_mu=cfg.proximal_mu, **common)
    if cfg.name == "fedadam":
        return FedAdam(eta=cfg.server_learning_rate, **common)
    if cfg.name == "fedmedian":
        return FedMedian(**common)
    if cfg.name == "fedtrimmedavg":
        return FedTrimmedAvg(beta=cfg.trim_beta, **common)
    raise ValueError(f"unknown strategy '{cfg.name}'")
