"""Privacy arithmetic: ε of a history, planned noise, default δ, one-shot Gaussian releases."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from fedward.client import accounting
from fedward.client.accounting import (
    _rdp_per_step,
    default_delta,
    epsilon_of,
    gaussian_release_sigma,
    plan_noise_multiplier,
)
from fedward.common.errors import FedwardError

DELTA = 1e-4
HISTORY = [(1.2, 0.3, 3), (0.9, 0.3, 3), (1.5, 0.05, 20)]


@pytest.mark.parametrize(("sigma", "q"), [(0.5, 0.01), (1.0, 0.3), (2.5, 0.7), (30.0, 0.1)])
def test_rdp_curve_equals_opacus_compute_rdp(sigma: float, q: float) -> None:
    expected = rdp_analysis.compute_rdp(
        q=q, noise_multiplier=sigma, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS
    )
    np.testing.assert_allclose(_rdp_per_step(sigma, q), expected, rtol=1e-6)


def test_rdp_epsilon_equals_opacus_rdp_accountant() -> None:
    acc = RDPAccountant()
    acc.history = list(HISTORY)
    assert epsilon_of(HISTORY, DELTA) == pytest.approx(acc.get_epsilon(delta=DELTA), rel=1e-6)


def test_prv_epsilon_equals_opacus_prv_accountant() -> None:
    acc = PRVAccountant()
    acc.history = [(1.2, 0.3, 3)]
    assert epsilon_of([(1.2, 0.3, 3)], DELTA, "prv") == pytest.approx(
        acc.get_epsilon(delta=DELTA), rel=1e-6
    )


def test_empty_history_spends_nothing() -> None:
    assert epsilon_of([], DELTA) == 0.0


def test_epsilon_grows_with_every_round() -> None:
    assert epsilon_of(HISTORY[:2], DELTA) < epsilon_of(HISTORY, DELTA)


def test_zero_noise_history_is_refused() -> None:
    with pytest.raises(FedwardError, match="noise_multiplier"):
        epsilon_of([(0.0, 0.3, 3)], DELTA)


def test_planned_noise_meets_the_target_within_tolerance() -> None:
    sigma = plan_noise_multiplier(1.0, DELTA, 0.3, 60)
    eps = epsilon_of([(sigma, 0.3, 60)], DELTA)
    assert 1.0 - 0.01 <= eps <= 1.0


def test_planned_noise_composes_the_prior_history() -> None:
    prior = [(4.0, 0.3, 30)]
    sigma = plan_noise_multiplier(2.0, DELTA, 0.3, 30, prior=prior)
    eps = epsilon_of([*prior, (sigma, 0.3, 30)], DELTA)
    assert 2.0 - 0.01 <= eps <= 2.0
    assert sigma > plan_noise_multiplier(2.0, DELTA, 0.3, 30)


def test_planned_noise_with_prv_meets_the_target() -> None:
    sigma = plan_noise_multiplier(2.0, DELTA, 0.3, 10, accountant="prv")
    assert epsilon_of([(sigma, 0.3, 10)], DELTA, "prv") <= 2.0
    assert sigma <= plan_noise_multiplier(2.0, DELTA, 0.3, 10, accountant="rdp")


def test_planning_is_refused_when_the_prior_spent_the_budget() -> None:
    prior = [(0.8, 0.5, 100)]
    with pytest.raises(FedwardError, match="budget is spent"):
        plan_noise_multiplier(1.0, DELTA, 0.3, 3, prior=prior)


def test_planning_twenty_rounds_takes_under_a_second() -> None:
    history: list[tuple[float, float, int]] = []
    start = time.perf_counter()
    for r in range(1, 21):
        # Spread the budget over 20 rounds: each round's plan targets its share of epsilon.
        sigma = plan_noise_multiplier(r * 0.1, DELTA, 0.32, 3, prior=history)
        history.append((sigma, 0.32, 3))
    per_plan = (time.perf_counter() - start) / 20
    assert per_plan < 1.0
    assert epsilon_of(history, DELTA) <= 2.0


@pytest.mark.parametrize("n", [1, 7, 100, 200, 300, 920, 1000, 123456])
def test_default_delta_is_one_digit_strictly_below_one_over_ten_n(n: int) -> None:
    delta = default_delta(n)
    assert 0 < delta < 1 / (10 * n)
    mantissa = f"{delta:.0e}"
    assert float(mantissa) == delta
    assert delta >= 1 / (10 * n) / 10  # no more than one digit of rounding down


def test_default_delta_example() -> None:
    assert default_delta(200) == 4e-4


def test_gaussian_release_sigma_gives_the_asked_epsilon_in_one_release() -> None:
    sigma = gaussian_release_sigma(0.5, DELTA)
    assert 0.49 <= epsilon_of([(sigma, 1.0, 1)], DELTA) <= 0.5


def test_smaller_release_epsilon_needs_more_noise() -> None:
    assert gaussian_release_sigma(0.1, DELTA) > gaussian_release_sigma(1.0, DELTA)


def test_planning_a_run_evaluates_few_rdp_curves() -> None:
    """Each ε evaluation is a new RDP curve; the search guesses its steps from ε ~ 1/σ."""
    accounting._rdp_per_step.cache_clear()
    accounting._epsilon_cached.cache_clear()
    sigma = plan_noise_multiplier(1.0, DELTA, 64 / 180, 63)
    assert 0.99 <= epsilon_of([(sigma, 64 / 180, 63)], DELTA) <= 1.0
    assert accounting._rdp_per_step.cache_info().misses <= 8  # bisection needed 11


@settings(max_examples=25, deadline=None)
@given(
    target=st.floats(0.2, 20.0),
    q=st.floats(0.005, 1.0),
    steps=st.integers(1, 3000),
    delta=st.sampled_from([1e-7, 1e-5, 1e-3]),
)
def test_planned_noise_lands_in_the_tolerance_band(
    target: float, q: float, steps: int, delta: float
) -> None:
    try:
        sigma = plan_noise_multiplier(target, delta, q, steps)
    except FedwardError as exc:  # only when no σ up to the maximum fits
        assert "no noise multiplier" in str(exc)
        return
    eps = epsilon_of([(sigma, q, steps)], delta)
    assert target - 0.01 <= eps <= target
