"""Site-level central DP: Flower's server-side wrapper inside SiteTracking, and the ε it reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedProx,
)
from opacus.accountants import RDPAccountant

from fedward.client.app import app
from fedward.common.datasets.bundled import write_site_files
from fedward.common.errors import ConfigError
from fedward.common.evaluation_config import BaselinesConfig, EvaluationConfig
from fedward.common.privacy_config import CentralDPConfig, PrivacyConfig
from fedward.common.run_config import RunConfig
from fedward.common.strategy_config import StrategyConfig
from fedward.server.app import coordinate
from fedward.server.central_dp import adaptive_noise_multiplier
from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.federation import build_run_strategy
from fedward.server.run_folder import RunFolder
from fedward.server.site_tracking import SiteTracking
from fedward.server.strategies import CentralDPAccounting, build_strategy, sampled_sites
from tests.conftest import make_message
from tests.server.loopback import LoopbackGrid, as_grid, server_context

CENTRAL = CentralDPConfig(enabled=True, noise_multiplier=1.0, clipping_norm=1.0)


def _opacus_epsilon(noise: float, q: float, rounds: int, delta: float) -> float:
    accountant = RDPAccountant()
    for _ in range(rounds):
        accountant.step(noise_multiplier=noise, sample_rate=q)
    return float(accountant.get_epsilon(delta=delta))


# ---- the wrapping order -------------------------------------------------------------------------


def test_flowers_dp_wrapper_sits_between_site_tracking_and_the_strategy(tmp_path: Path) -> None:
    run = RunConfig(rounds=2, privacy=PrivacyConfig(central=CentralDPConfig(enabled=True)))
    strategy = build_run_strategy(as_grid(LoopbackGrid(app, 4)), run)
    folder = RunFolder.at(tmp_path / "run", run, run_id=1, engine="test")
    tracker = SiteTracking(strategy, folder=folder, histogram_bins=20, min_sites=2)
    # Outermost first: SiteTracking -> fedward's accounting -> Flower's DP wrapper -> FedAvg.
    assert isinstance(tracker.strategy, CentralDPAccounting)
    dp = tracker.strategy.strategy
    assert type(dp) is DifferentialPrivacyServerSideFixedClipping
    assert type(dp.strategy) is FedAvg
    assert dp.num_sampled_clients == 4  # every connected simulated site, fraction_train = 1


def test_adaptive_clipping_uses_flowers_adaptive_wrapper() -> None:
    central = CENTRAL.model_copy(update={"adaptive": True, "clipped_count_stddev": 2.0})
    strategy = build_strategy(StrategyConfig(name="fedprox"), central, num_sites=40)
    assert isinstance(strategy, CentralDPAccounting)
    assert type(strategy.strategy) is DifferentialPrivacyServerSideAdaptiveClipping
    assert type(strategy.strategy.strategy) is FedProx


def test_sampled_sites_follow_fedavgs_rule() -> None:
    cfg = StrategyConfig(fraction_train=0.25, min_sites=3)
    assert sampled_sites(cfg, 40) == 10
    assert sampled_sites(cfg, 8) == 3  # int(8 * 0.25) = 2 < min_sites
    with pytest.raises(ValueError, match="min_sites"):
        sampled_sites(StrategyConfig(min_sites=5), 4)


def test_without_central_dp_the_strategy_is_flowers_alone() -> None:
    assert type(build_strategy(StrategyConfig(), CentralDPConfig())) is FedAvg


def test_flowers_argument_errors_name_the_run_config_section() -> None:
    # Flower's default count noise (sampled / 20 = 0.2) is too small for noise_multiplier 1.
    run = RunConfig(privacy=PrivacyConfig(central=CentralDPConfig(enabled=True, adaptive=True)))
    with pytest.raises(ConfigError, match=r"privacy\.central.*clipped_count_stddev"):
        build_run_strategy(as_grid(LoopbackGrid(app, 4)), run)


def test_the_message_api_coordinator_refuses_secure_aggregation(tmp_path: Path) -> None:
    run = RunConfig(strategy=StrategyConfig(secure_aggregation=True))
    settings = CoordinatorSettings(run=run, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="never runs SecAgg"):
        coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings)
    assert not list(tmp_path.iterdir())  # refused before any run folder exists


# ---- what the wrapper does to a round -----------------------------------------------------------


def _reply(node: int, value: float, n: float) -> Message:
    msg = make_message(RecordDict(), "train", dst_node_id=node)
    arrays = ArrayRecord({"w": torch.full((3,), value)})
    metrics = MetricRecord({"num-examples": n, "train_loss": 0.5})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def _accounting(noise: float, sampled: int, num_sites: int) -> CentralDPAccounting:
    wrapper = DifferentialPrivacyServerSideFixedClipping(
        FedAvg(), noise_multiplier=noise, clipping_norm=100.0, num_sampled_clients=sampled
    )
    return CentralDPAccounting(wrapper, config=CENTRAL, num_sites=num_sites)


def _configure(strategy: CentralDPAccounting, nodes: list[int]) -> None:
    grid = LoopbackGrid(app, len(nodes))
    start = ArrayRecord({"w": torch.zeros(3)})
    list(strategy.configure_train(1, start, ConfigRecord(), as_grid(grid)))


def test_every_site_weighs_the_same_in_the_noised_mean() -> None:
    # Without noise the output is the plain mean: a weighted mean would let the large site move
    # the model by more than C/m, which Flower's noise z·C/m does not cover.
    strategy = _accounting(noise=0.0, sampled=2, num_sites=2)
    _configure(strategy, [1, 2])
    arrays, _ = strategy.aggregate_train(1, [_reply(1, 1.0, 10.0), _reply(2, 3.0, 30.0)])
    assert arrays is not None
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0, 2.0, 2.0])


def test_a_round_with_fewer_sites_than_sampled_is_accounted_with_less_noise() -> None:
    strategy = _accounting(noise=1.0, sampled=4, num_sites=4)
    _configure(strategy, [1, 2, 3, 4])
    strategy.aggregate_train(1, [_reply(n, 0.1, 50.0) for n in (1, 2, 3, 4)])
    strategy.aggregate_train(2, [_reply(n, 0.1, 50.0) for n in (1, 2, 3)])
    releases = [r.effective_noise_multiplier for r in strategy.releases]
    assert releases == [1.0, 0.75]  # noise sized for 4 sites, mean of 3
    report = strategy.report(rounds=2)
    delta = report["delta"]
    assert report["epsilon"] == pytest.approx(_opacus_epsilon(1.0, 1.0, 2, delta), rel=1e-12)
    accountant = RDPAccountant()
    accountant.step(noise_multiplier=1.0, sample_rate=1.0)
    accountant.step(noise_multiplier=0.75, sample_rate=1.0)
    assert report["epsilon_as_run"] == pytest.approx(accountant.get_epsilon(delta=delta))
    assert report["epsilon_as_run"] > report["epsilon"]
    assert any("fewer sites" in w for w in report["warnings"])


# ---- the site-level ε in the privacy summary ----------------------------------------------------


@pytest.mark.parametrize(("num_sites", "fraction"), [(40, 0.25), (100, 0.1)])
def test_planned_epsilon_is_opacus_at_sampled_over_total_sites(
    num_sites: int, fraction: float
) -> None:
    cfg = StrategyConfig(fraction_train=fraction, min_sites=2)
    strategy = build_strategy(cfg, CENTRAL, num_sites=num_sites)
    assert isinstance(strategy, CentralDPAccounting)
    report = strategy.report(rounds=30)
    q = sampled_sites(cfg, num_sites) / num_sites
    delta = 1 / (10 * num_sites)
    assert (report["sample_rate"], report["delta"]) == (q, delta)
    assert report["epsilon"] == pytest.approx(_opacus_epsilon(1.0, q, 30, delta), rel=1e-12)
    assert report["privacy_unit"].startswith("site")
    assert "composes with each site's sample-level" in report["guarantee"]
    assert report["warnings"] == []  # tens of sites: no few-sites warning


def test_a_configured_delta_is_used() -> None:
    central = CENTRAL.model_copy(update={"delta": 1e-5})
    strategy = build_strategy(StrategyConfig(), central, num_sites=50)
    assert isinstance(strategy, CentralDPAccounting)
    assert strategy.report(rounds=5)["delta"] == 1e-5


# ---- a whole run, in process --------------------------------------------------------------------


def _summary(folder: RunFolder) -> dict[str, Any]:
    return json.loads((folder.path / "privacy_summary.json").read_text())


def test_a_central_dp_run_completes_and_records_the_site_level_epsilon(tmp_path: Path) -> None:
    run = RunConfig(
        rounds=2,
        evaluation=EvaluationConfig(bootstrap=20),
        privacy=PrivacyConfig(central=CentralDPConfig(enabled=True, noise_multiplier=1.0)),
        baselines=BaselinesConfig(enabled=False),
    )
    settings = CoordinatorSettings(run=run, run_dir=str(tmp_path / "run"), engine="simulation")
    folder = coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings)
    central = _summary(folder)["central_dp"]
    assert central["enabled"] and central["num_sites"] == 4
    assert central["sites_sampled_per_round"] == 4 and central["sample_rate"] == 1.0
    assert central["delta"] == 1 / 40
    assert central["epsilon"] == pytest.approx(_opacus_epsilon(1.0, 1.0, 2, 1 / 40), rel=1e-12)
    assert central["epsilon_as_run"] == pytest.approx(central["epsilon"])
    assert [r["sites_in_mean"] for r in central["releases"]] == [4, 4]
    assert any("only 4 sites" in w for w in central["warnings"])
    metrics = json.loads((folder.path / "metrics.json").read_text())
    assert set(metrics["test"]["sites"]) == {"cleveland", "hungary", "switzerland", "va-long-beach"}
    assert _summary(folder)["secure_aggregation"] == {"enabled": False}


def test_a_refusing_site_makes_the_run_pay_more_than_planned(tmp_path: Path) -> None:
    configs = write_site_files("heart-disease", tmp_path / "sites", seed=5)
    va = next(p for p in configs if p.parent.name == "va-long-beach").parent / "data.csv"
    lines = va.read_text().splitlines()
    lines[0] = lines[0].replace(",num", ",nmu")  # the label column is missing: va refuses
    va.write_text("\n".join(lines) + "\n")
    run = RunConfig(
        rounds=2,
        evaluation=EvaluationConfig(bootstrap=0),
        privacy=PrivacyConfig(central=CentralDPConfig(enabled=True)),
        baselines=BaselinesConfig(enabled=False),
    )
    settings = CoordinatorSettings(
        run=run,
        run_dir=str(tmp_path / "run"),
        engine="simulation",
        sim_site_configs=[str(p) for p in configs],
    )
    folder = coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings)
    central = _summary(folder)["central_dp"]
    assert [r["sites_in_mean"] for r in central["releases"]] == [3, 3]
    assert [r["effective_noise_multiplier"] for r in central["releases"]] == [0.75, 0.75]
    assert central["epsilon_as_run"] > central["epsilon"]


def test_adaptive_rounds_are_accounted_with_the_norm_the_noise_really_used() -> None:
    # Every update (norm ≈ 17) is clipped at C = 1. Flower 1.41 then shrinks C (it steers on the
    # clipped fraction where Andrew et al. steer on the unclipped one) *before* adding the noise,
    # so each round's noise is sized for a smaller norm than the updates were clipped to.
    np.random.seed(0)
    central = CENTRAL.model_copy(update={"adaptive": True, "clipped_count_stddev": 1.0})
    strategy = build_strategy(StrategyConfig(min_sites=4), central, num_sites=4)
    assert isinstance(strategy, CentralDPAccounting)
    for rnd in (1, 2, 3):
        _configure(strategy, [1, 2, 3, 4])
        strategy.aggregate_train(rnd, [_reply(n, 10.0, 50.0) for n in (1, 2, 3, 4)])
    dp = strategy.strategy
    assert isinstance(dp, DifferentialPrivacyServerSideAdaptiveClipping)
    for release in strategy.releases:
        assert release.noise_clipping_norm < release.clipping_norm
        ratio = release.noise_clipping_norm / release.clipping_norm
        assert release.effective_noise_multiplier == pytest.approx(
            adaptive_noise_multiplier(dp.noise_multiplier * ratio, dp.clipped_count_stddev)
        )
    report = strategy.report(rounds=3)
    assert report["epsilon_as_run"] > report["epsilon"]
    assert any("clipping norm already updated" in w for w in report["warnings"])
