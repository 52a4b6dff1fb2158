"""Site-level DP arithmetic: the ε of Flower's server-side DP wrappers, from Opacus's RDP accountant."""

from __future__ import annotations

import math

import pytest
from flwr.supercore.differential_privacy import compute_adaptive_noise_params
from opacus.accountants import RDPAccountant

from fedward.common.errors import FedwardError
from fedward.server.central_dp import adaptive_noise_multiplier, default_delta, site_level_epsilon


def _opacus(noise: float, q: float, steps: int, delta: float) -> float:
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=noise, sample_rate=q)
    return float(accountant.get_epsilon(delta=delta))


@pytest.mark.parametrize(("noise", "q", "rounds"), [(1.0, 1.0, 20), (1.2, 0.1, 50), (0.8, 0.25, 5)])
def test_epsilon_is_opacus_rdp_accountant_stepped_once_per_round(
    noise: float, q: float, rounds: int
) -> None:
    delta = default_delta(40)
    assert site_level_epsilon([(noise, q, rounds)], delta) == pytest.approx(
        _opacus(noise, q, rounds, delta), rel=1e-12
    )


def test_every_site_every_round_matches_the_closed_form() -> None:
    # q = 1: R rounds of the Gaussian mechanism have RDP α·R/(2z²); converted to (ε, δ) with
    # Balle et al. 2020 (Opacus's conversion), minimised over Opacus's orders. z=1, R=20, δ=1e-3:
    # ε ≈ 25.09 at α = 1.8.
    rounds, delta = 20, default_delta(100)
    by_order = [
        a * rounds / 2 + (math.log(1 / delta) - math.log(a)) / (a - 1) + math.log((a - 1) / a)
        for a in RDPAccountant.DEFAULT_ALPHAS
    ]
    assert site_level_epsilon([(1.0, 1.0, rounds)], delta) == pytest.approx(min(by_order))
    assert min(by_order) == pytest.approx(25.09, abs=0.01)


def test_rounds_with_less_noise_cost_more() -> None:
    delta = 1e-3
    full = site_level_epsilon([(1.0, 0.5, 10)], delta)
    short = site_level_epsilon([(1.0, 0.5, 8), (0.75, 0.5, 2)], delta)
    assert short > full


def test_no_release_costs_nothing() -> None:
    assert site_level_epsilon([], 1e-3) == 0.0


def test_default_delta_is_one_over_ten_sites() -> None:
    assert default_delta(4) == 0.025
    with pytest.raises(FedwardError):
        default_delta(0)


def test_adaptive_pair_is_as_private_as_the_configured_noise() -> None:
    # Flower splits z into update noise z_Δ and count noise σ_b; composing them gives z back.
    count_stddev, update_noise = compute_adaptive_noise_params(1.0, 100, None)
    assert update_noise > 1.0
    assert adaptive_noise_multiplier(update_noise, count_stddev) == pytest.approx(1.0)


def test_bad_histories_are_refused() -> None:
    with pytest.raises(FedwardError, match="noise multiplier"):
        site_level_epsilon([(0.0, 1.0, 3)], 1e-3)
    with pytest.raises(FedwardError, match="sample rate"):
        site_level_epsilon([(1.0, 1.5, 3)], 1e-3)
    with pytest.raises(FedwardError, match="delta"):
        site_level_epsilon([(1.0, 1.0, 3)], 1.0)
