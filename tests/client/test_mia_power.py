"""Canary-audit power at small sites: the guess grid keeps only guesses that can certify something,
the canary count is chosen from sizes and δ alone, synthetic canaries add power without displacing
training rows, and the bound stays exact."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

from fedward.client.canaries import (
    CANARY_COUNTS,
    MAX_CANARIES,
    SYNTHETIC_CANARIES_PER_MEMBER,
    canary_audit,
    canary_sources,
    default_canary_count,
    synthetic_canaries,
)
from fedward.client.canary_bound import (
    CANARY_GUESS_FRACTIONS,
    canary_epsilon_max,
    canary_guess_grid,
    one_run_audit,
    one_run_epsilon_lower_bound,
)
from fedward.client.egress_guard import EgressGuard, EgressPolicy
from fedward.client.mia import audit_site
from fedward.client.reply_fields import lookup

SMALL_SITE_DELTA = 1e-3  # a heart-disease hospital's δ (1/(10 n) for about 120 rows)


def _unpruned_ceiling(m: int, delta: float, confidence: float = 0.95) -> float:
    """What the earlier audit could certify: k IN and k OUT guesses, no count dropped."""
    grid = sorted({max(1, min(m // 2, round(f * m))) for f in CANARY_GUESS_FRACTIONS})
    alpha = (1.0 - confidence) / len(grid)
    return max(one_run_epsilon_lower_bound(m, 2 * k, 2 * k, delta, alpha) for k in grid)


# ---- the guess grid ----------------------------------------------------------------------------


@pytest.mark.parametrize("m", [40, 104, 150, 300])
def test_the_grid_keeps_only_guess_counts_that_can_certify_something(m: int) -> None:
    grid = canary_guess_grid(m, SMALL_SITE_DELTA, 0.95)
    alpha = 0.05 / len(grid)
    assert all(one_run_epsilon_lower_bound(m, r, r, SMALL_SITE_DELTA, alpha) > 0 for r in grid)
    candidates = {max(1, min(m // 2, round(f * m))) for f in CANARY_GUESS_FRACTIONS}
    assert set(grid) < candidates  # small r were dropped: they could never certify anything
    assert max(grid) <= m // 2  # no more OUT guesses than canaries left out, on average


def test_pruning_raises_what_a_small_site_can_certify() -> None:
    def unpruned(m: int) -> float:
        grid = sorted({max(1, min(m // 2, round(f * m))) for f in CANARY_GUESS_FRACTIONS})
        alpha = 0.05 / len(grid)
        return max(one_run_epsilon_lower_bound(m, r, r, SMALL_SITE_DELTA, alpha) for r in grid)

    for m in (50, 104, 150, 300):
        assert canary_epsilon_max(m, SMALL_SITE_DELTA, 0.95) > 1.2 * unpruned(m)


def test_a_large_site_with_a_small_delta_keeps_its_whole_grid() -> None:
    assert canary_guess_grid(1000, 1e-5, 0.95) == (20, 50, 100, 250, 500)
    assert canary_guess_grid(1000, 1e-3, 0.95) == (500,)  # 2mδ leaves only the most guesses


def test_the_pruned_bound_stays_exact_when_scores_carry_no_membership() -> None:
    # Scores independent of membership: a bound above 0 is a false certificate, which the exact
    # (Bonferroni over the pruned grid) bound allows at most 5 % of the time.
    rng = np.random.default_rng(3)
    false = 0
    for _ in range(300):
        included = rng.random(150) < 0.5
        audit = one_run_audit(rng.normal(0, 1, 150), included, delta=SMALL_SITE_DELTA, rng=rng)
        assert audit.grid == canary_guess_grid(150, SMALL_SITE_DELTA, 0.95)
        false += audit.epsilon_lb > 0
    assert false <= 0.05 * 300


def test_guesses_go_to_the_lowest_scores_where_a_model_that_fits_its_rows_is_sure() -> None:
    # A model that fits its rows but generalises badly: every left-out canary it predicts with
    # its row's label is clearly OUT, while left-out canaries it gets "wrong" score like members.
    rng = np.random.default_rng(7)
    included = rng.random(200) < 0.5
    scores = np.where(included, rng.normal(5, 1, 200), rng.choice([-8.0, 7.0], 200, p=[0.6, 0.4]))
    audit = one_run_audit(scores, included, delta=1e-5, rng=rng)
    assert audit.k_plus == 0 and audit.k_minus == audit.guesses
    assert audit.correct == audit.guesses  # the lowest scores are all OUT
    ranked = included[np.argsort(-scores)]
    grid = canary_guess_grid(200, 1e-5, 0.95)
    alpha = 0.05 / len(grid)
    # The earlier placement (half the guesses IN at the top) certifies much less here.
    both_sides = max(
        one_run_epsilon_lower_bound(
            200, r, int(ranked[: r // 2].sum() + (~ranked[200 - r // 2 :]).sum()), 1e-5, alpha
        )
        for r in grid
    )
    assert audit.epsilon_lb > both_sides + 0.5


# ---- how many canaries -------------------------------------------------------------------------


def test_canaries_come_from_audit_rows_then_synthetic_then_training_rows() -> None:
    src = canary_sources(68, 12)  # a Swiss-sized site
    assert (src.from_nonmembers, src.synthetic, src.from_members) == (12, 68, 28)
    assert src.from_nonmembers + src.from_members == (68 + 12) // 2  # flipped rows: half the pool
    small = canary_sources(68, 12, 50)
    assert (small.from_nonmembers, small.synthetic, small.from_members) == (12, 38, 0)
    big = canary_sources(2750, 500)
    assert (big.from_nonmembers, big.synthetic, big.from_members) == (500, 1500, 0)
    assert big.total == MAX_CANARIES


def test_without_synthetic_canaries_the_audit_uses_half_of_the_rows_as_before() -> None:
    src = canary_sources(68, 12, synthetic=False)
    assert (src.from_nonmembers, src.synthetic, src.from_members) == (12, 0, 28)
    assert canary_sources(2750, 500, synthetic=False).total == (2750 + 500) // 2


def test_synthetic_canaries_are_capped_by_the_training_rows() -> None:
    src = canary_sources(40, 0)
    assert src.synthetic == int(SYNTHETIC_CANARIES_PER_MEMBER * 40)


def test_the_default_count_maximises_what_the_site_could_certify_within_tolerance() -> None:
    for n_mem, n_non, delta in (
        (166, 30, 3e-4),
        (68, 12, 8e-4),
        (2750, 500, 1e-5),
        (900, 900, 2e-3),
    ):
        m = default_canary_count(n_mem, n_non, delta)
        top = canary_sources(n_mem, n_non).total
        counts = [c for c in (*CANARY_COUNTS, top) if c <= top]
        best = max(canary_epsilon_max(c, delta, 0.95) for c in counts)
        assert canary_epsilon_max(m, delta, 0.95) >= 0.95 * best
        assert all(canary_epsilon_max(c, delta, 0.95) < 0.95 * best for c in counts if c > m)
    # With a large δ the 2mδ term makes 1,000 canaries certify less than fewer would.
    assert default_canary_count(900, 900, 2e-3) < MAX_CANARIES
    assert default_canary_count(2750, 500, 1e-5) == MAX_CANARIES


# ---- synthetic canaries ------------------------------------------------------------------------


def test_synthetic_canaries_sit_beside_training_rows_with_the_other_label() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (30, 5))
    y = (x[:, 0] > 0).astype(np.int64)
    xs, ys = synthetic_canaries(x, y, 45, np.random.default_rng(1))
    assert xs.shape == (45, 5) and ys.shape == (45,)
    assert (xs >= x.min(axis=0)).all() and (xs <= x.max(axis=0)).all()
    assert len({tuple(r) for r in np.round(xs, 12)}) == 45  # every canary its own point
    nearest = np.argmin(((xs[:, None, :] - x[None, :, :]) ** 2).sum(axis=2), axis=1)
    assert (ys == 1 - y[nearest]).mean() > 0.9  # the label opposite its base row's
    first = synthetic_canaries(x, y, 30, np.random.default_rng(2))[0]
    bases = np.argmin(((first[:, None, :] - x[None, :, :]) ** 2).sum(axis=2), axis=1)
    assert len(set(bases.tolist())) >= 28  # distinct base rows while they last


def test_synthetic_canaries_displace_no_training_row() -> None:
    rng = np.random.default_rng(4)
    xm, xn = rng.normal(0, 1, (80, 3)), rng.normal(0, 1, (20, 3))
    ym, yn = (xm[:, 0] > 0).astype(np.int64), (xn[:, 0] > 0).astype(np.int64)
    seen: list[set[tuple[float, ...]]] = []

    def train(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        seen.append({(*r, float(v)) for r, v in zip(x, y, strict=True)})  # a row and its label
        return lambda rows: np.zeros(len(rows))

    def kept(trained: set[tuple[float, ...]]) -> int:
        return sum((*r, float(v)) in trained for r, v in zip(xm, ym, strict=True))

    audit = canary_audit(train, xm, ym, xn, yn, n_canaries=100, delta=1e-4, seed=0)
    assert audit.m == 100 and audit.n_synthetic == 80
    assert kept(seen[0]) == len(xm)  # the released model's rows, every one
    assert len(seen[0]) > len(xm)  # plus the included canaries

    seen.clear()
    earlier = canary_audit(
        train, xm, ym, xn, yn, n_canaries=50, delta=1e-4, seed=0, synthetic=False
    )
    assert earlier.n_synthetic == 0
    assert kept(seen[0]) == len(xm) - 30  # 30 training rows became canaries


def test_synthetic_canaries_give_a_memorising_model_more_to_certify() -> None:
    # A model that memorises exactly what it trained on: nearly every guess is right, so the
    # bound is near the ceiling, and the synthetic canaries raise both.
    rng = np.random.default_rng(5)
    xm, xn = rng.normal(0, 1, (120, 4)), rng.normal(0, 1, (20, 4))
    ym, yn = (xm[:, 0] > 0).astype(np.int64), (xn[:, 0] > 0).astype(np.int64)

    def memorise(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        table = {tuple(r): 2 * int(v) - 1 for r, v in zip(x, y, strict=True)}
        return lambda rows: np.array([10.0 * table.get(tuple(r), 0) for r in rows])

    kwargs: dict[str, Any] = {"delta": SMALL_SITE_DELTA, "seed": 0}
    earlier = canary_audit(
        memorise,
        xm,
        ym,
        xn,
        yn,
        n_canaries=70,
        synthetic=False,
        **kwargs,
    )
    m = default_canary_count(120, 20, SMALL_SITE_DELTA)
    now = canary_audit(memorise, xm, ym, xn, yn, n_canaries=m, **kwargs)
    assert now.m > earlier.m and now.epsilon_lb > earlier.epsilon_lb + 0.3
    assert now.epsilon_lb >= 0.8 * now.epsilon_max


# ---- what leaves the site ----------------------------------------------------------------------


def test_the_minimum_detectable_leak_is_sent_under_a_registered_field_and_named_plainly() -> None:
    rng = np.random.default_rng(6)
    xm, xn = rng.normal(0, 1, (150, 4)), rng.normal(0, 1, (30, 4))
    ym, yn = (xm[:, 0] > 0).astype(np.int64), (xn[:, 0] > 0).astype(np.int64)

    def linear(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        w = np.linalg.lstsq(np.c_[x, np.ones(len(x))], 2.0 * y - 1.0, rcond=None)[0]
        return lambda rows: 4.0 * (np.c_[rows, np.ones(len(rows))] @ w)

    audit = audit_site(
        lambda rows: rows[:, 0],
        linear,
        xm,
        ym,
        xn,
        yn,
        n_reference=0,
        epsilon_claimed=1.0,
        delta=SMALL_SITE_DELTA,
        seed=0,
    )
    assert audit.canary is not None and audit.canary.n_synthetic > 0
    public = audit.public(10)
    assert lookup("mia_canary_epsilon_max") is not None
    assert public["mia_canary_epsilon_max"] == pytest.approx(audit.canary.epsilon_max, abs=1e-6)
    assert public["mia_canary_n"] == audit.canary.m
    text = f"could certify at most ε = {audit.canary.epsilon_max:.2f}"
    assert any(n.startswith("Minimum detectable leak:") and text in n for n in audit.notes)
    record = ConfigRecord({k: v for k, v in public.items() if v is not None})
    EgressGuard(EgressPolicy(min_cell_size=10)).check(RecordDict({"fedward": record}), site="a")
