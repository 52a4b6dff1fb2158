"""The site's privacy arithmetic: ε of a DP history, and the noise a new round needs.

A history is a list of ``(noise_multiplier, sample_rate, steps)`` — exactly Opacus's accountant
state — so ε can be recomputed from a ledger by any accountant, by an auditor, years later.

Accountants (both Opacus's): "rdp" — Rényi DP of the subsampled Gaussian mechanism (Mironov 2017;
Mironov, Talwar, Zhang 2019) converted to (ε, δ) with the bound of Balle et al. 2020; "prv" —
numerical composition of privacy loss random variables (Gopi, Lee, Wutschitz 2021), tighter but
slower. ``plan_noise_multiplier`` searches σ like Opacus's ``get_noise_multiplier`` but
composes a prior history. For RDP the per-step RDP curve is Opacus's ``compute_rdp`` evaluated with
numpy (tested equal to it): Opacus's pure-Python series takes ~0.2 s per curve and a site recomputes
its ledger in a fresh process every round; a plan then costs well under a second.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from scipy import special

from fedward.common.errors import FedwardError

AccountantName = Literal["rdp", "prv"]
HistoryEntry = tuple[float, float, int]
History = Sequence[HistoryEntry]

EPSILON_TOLERANCE = 0.01
MAX_NOISE_MULTIPLIER = 1e4
_ORDERS: tuple[float, ...] = tuple(float(a) for a in RDPAccountant.DEFAULT_ALPHAS)


def _normalise(history: Iterable[Sequence[float]]) -> tuple[HistoryEntry, ...]:
    """Validate and freeze a history (hashable, so epsilon results can be cached)."""
    out: list[HistoryEntry] = []
    for i, entry in enumerate(history):
        if len(entry) != 3:
            raise FedwardError(
                f"privacy history entry {i} must be (noise_multiplier, sample_rate, steps), "
                f"got {entry!r}"
            )
        sigma, q, steps = float(entry[0]), float(entry[1]), int(entry[2])
        if not (sigma > 0 and math.isfinite(sigma)):
            raise FedwardError(
                f"privacy history entry {i}: noise_multiplier must be > 0 for a DP guarantee, "
                f"got {entry[0]}"
            )
        if not 0 < q <= 1:
            raise FedwardError(f"privacy history entry {i}: sample_rate must be in (0, 1], got {q}")
        if steps < 0:
            raise FedwardError(f"privacy history entry {i}: steps must be >= 0, got {steps}")
        if steps > 0:
            out.append((sigma, q, steps))
    return tuple(out)


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise FedwardError(f"delta must be in (0, 1), got {delta}")


_ALPHAS = np.asarray(_ORDERS, dtype=np.float64)
_INT_MASK = np.asarray([float(a).is_integer() for a in _ORDERS])
_SERIES_CHUNK = 512
_SERIES_MAX_TERMS = 2_000_000


def _signed_logsumexp(log_terms: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Row-wise log(sum(sign * exp(term))); -inf entries are absent terms."""
    peak = np.max(log_terms, axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    total = np.sum(signs * np.exp(log_terms - peak), axis=1)
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(total, 0.0)) + peak[:, 0]


def _log_a_int(q: float, sigma: float, alphas: np.ndarray) -> np.ndarray:
    """log A_alpha for integer orders: Mironov, Talwar, Zhang 2019, Sec. 3.3 (finite sum)."""
    a = alphas[:, None]
    i = np.arange(int(alphas.max()) + 1, dtype=np.float64)[None, :]
    valid = i <= a
    with np.errstate(invalid="ignore"):
        log_binom = special.gammaln(a + 1) - special.gammaln(i + 1) - special.gammaln(a - i + 1)
        terms = (
            log_binom + i * math.log(q) + (a - i) * math.log1p(-q) + (i * i - i) / (2 * sigma**2)
        )
    terms = np.where(valid, terms, -np.inf)
    return _signed_logsumexp(terms, np.ones_like(terms))


class _SignedLogSum:
    """Running row-wise log(sum(sign * exp(term))), rescaled as terms arrive in blocks."""

    def __init__(self, rows: int) -> None:
        self.peak = np.full(rows, -np.inf)
        self.total = np.zeros(rows)

    def add(self, rows: np.ndarray, terms: np.ndarray, signs: np.ndarray) -> None:
        peak = np.maximum(self.peak[rows], np.max(terms, axis=1))
        safe = np.where(np.isfinite(peak), peak, 0.0)
        with np.errstate(invalid="ignore"):
            old = np.where(np.isfinite(self.peak[rows]), np.exp(self.peak[rows] - safe), 0.0)
        self.total[rows] = self.total[rows] * old + np.sum(
            signs * np.exp(terms - safe[:, None]), axis=1
        )
        self.peak[rows] = peak

    def result(self) -> np.ndarray:
        safe = np.where(np.isfinite(self.peak), self.peak, 0.0)
        with np.errstate(divide="ignore"):
            return np.log(np.maximum(self.total, 0.0)) + safe


def _log_a_frac(q: float, sigma: float, alphas: np.ndarray) -> np.ndarray:
    """log A_alpha for fractional orders: the same series as Opacus, evaluated in blocks.

    Like Opacus, each order's series stops after the first term where both parts are < e^-30;
    orders whose series has stopped drop out of later blocks, and blocks grow geometrically
    (small orders need ~10^4 terms: the terms only decay polynomially).
    """
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    log_q, log_1q, two_var = math.log(q), math.log1p(-q), 2 * sigma**2
    sum0, sum1 = _SignedLogSum(len(alphas)), _SignedLogSum(len(alphas))
    active = np.arange(len(alphas))
    start, size = 0, _SERIES_CHUNK
    while active.size:
        if start > _SERIES_MAX_TERMS:
            raise FedwardError(
                f"RDP series did not converge for sigma={sigma:g}, sample rate={q:g}"
            )
        a = alphas[active][:, None]
        i = np.arange(start, start + size, dtype=np.float64)[None, :]
        coef = special.binom(a, i)
        with np.errstate(divide="ignore"):
            log_coef = np.log(np.abs(coef))
        j = a - i
        # log(0.5 * erfc(x / sqrt2)) = log_ndtr(-x), Opacus's _log_erfc written out.
        s0 = log_coef + i * log_q + j * log_1q + (i * i - i) / two_var
        s0 += special.log_ndtr(-(i - z0) / sigma)
        s1 = log_coef + j * log_q + i * log_1q + (j * j - j) / two_var
        s1 += special.log_ndtr(-(z0 - j) / sigma)
        stop = np.maximum(s0, s1) < -30
        # Keep terms up to and including each row's first stopping term.
        keep = (np.cumsum(stop, axis=1) - stop) == 0
        signs = np.where(coef > 0, 1.0, -1.0)
        sum0.add(active, np.where(keep, s0, -np.inf), signs)
        sum1.add(active, np.where(keep, s1, -np.inf), signs)
        active = active[~stop.any(axis=1)]
        start += size
        size *= 2
    return np.logaddexp(sum0.result(), sum1.result())


@lru_cache(maxsize=4096)
def _rdp_per_step(sigma: float, q: float) -> np.ndarray:
    """RDP of one subsampled-Gaussian step at every order (Opacus's ``compute_rdp``, vectorised).

    Opacus evaluates the fractional-order series term by term in Python (~0.2 s per call); a site
    recomputes its whole ledger in a fresh process every round, so this numpy version keeps that
    to milliseconds. Tests check it against ``opacus.accountants.analysis.rdp.compute_rdp``.
    """
    if q == 1.0:
        return _ALPHAS / (2 * sigma**2)
    log_a = np.empty_like(_ALPHAS)
    log_a[_INT_MASK] = _log_a_int(q, sigma, _ALPHAS[_INT_MASK])
    log_a[~_INT_MASK] = _log_a_frac(q, sigma, _ALPHAS[~_INT_MASK])
    out = log_a / (_ALPHAS - 1)
    out.setflags(write=False)
    return out


def _rdp_curve(sigma: float, q: float, steps: int) -> np.ndarray:
    return _rdp_per_step(sigma, q) * steps


def _rdp_epsilon(rdp: np.ndarray, delta: float) -> float:
    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": only at huge σ, where ε is tiny anyway.
        warnings.filterwarnings("ignore", message="Optimal order is")
        eps, _ = rdp_analysis.get_privacy_spent(orders=list(_ORDERS), rdp=rdp, delta=delta)
    return float(eps)


@lru_cache(maxsize=1024)
def _epsilon_cached(history: tuple[HistoryEntry, ...], delta: float, accountant: str) -> float:
    if not history:
        return 0.0
    if accountant == "rdp":
        return _rdp_epsilon(sum(_rdp_curve(*h) for h in history), delta)  # type: ignore[arg-type]
    if accountant == "prv":
        acc = PRVAccountant()
        acc.history = list(history)
        return float(acc.get_epsilon(delta=delta))
    raise FedwardError(f"privacy.accountant: unknown accountant '{accountant}' (rdp, prv)")


def epsilon_of(
    history: Iterable[Sequence[float]], delta: float, accountant: AccountantName = "rdp"
) -> float:
    """ε spent by the whole ``history`` at ``delta`` (0 for an empty history)."""
    _check_delta(delta)
    return _epsilon_cached(_normalise(history), float(delta), accountant)


def plan_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    *,
    prior: Iterable[Sequence[float]] = (),
    accountant: AccountantName = "rdp",
) -> float:
    """Smallest σ (within 0.01 in ε) such that ``prior + [(σ, q, steps)]`` stays within target ε.

    Raises FedwardError when the prior history alone already spends the target, or when no
    σ up to ``MAX_NOISE_MULTIPLIER`` fits under it.
    """
    _check_delta(delta)
    if not target_epsilon > 0:
        raise FedwardError(f"target epsilon must be > 0, got {target_epsilon}")
    if not 0 < sample_rate <= 1:
        raise FedwardError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise FedwardError(f"steps must be >= 1, got {steps}")
    past = _normalise(prior)
    spent = epsilon_of(past, delta, accountant)
    if spent >= target_epsilon:
        raise FedwardError(
            f"the privacy budget is spent: the recorded history already uses ε = {spent:.3f} "
            f"of the target ε = {target_epsilon:g} (δ = {delta:g}); no further DP round fits"
        )
    if accountant == "rdp":
        prior_rdp = sum(_rdp_curve(*h) for h in past)

        def eps_at(sigma: float) -> float:
            return _rdp_epsilon(prior_rdp + _rdp_curve(sigma, sample_rate, steps), delta)

        return _search_sigma(
            eps_at, target_epsilon, 0.0, 1.0, what=(delta, spent, _round_desc(sample_rate, steps))
        )
    if accountant != "prv":
        raise FedwardError(f"privacy.accountant: unknown accountant '{accountant}' (rdp, prv)")

    def prv_eps_at(sigma: float) -> float:
        return epsilon_of([*past, (sigma, sample_rate, steps)], delta, "prv")

    # PRV evaluations cost ~0.1-1 s each: start from the RDP plan, which PRV (tighter) can only
    # lower, so the search needs a handful of PRV evaluations instead of a dozen.
    rdp_sigma = plan_noise_multiplier(
        target_epsilon, delta, sample_rate, steps, prior=past, accountant="rdp"
    )
    return _search_sigma(
        prv_eps_at,
        target_epsilon,
        rdp_sigma / 2,
        rdp_sigma,
        what=(delta, spent, _round_desc(sample_rate, steps)),
    )


def _round_desc(sample_rate: float, steps: int) -> str:
    return f"{steps} steps at sample rate {sample_rate:g}"


def _search_sigma(
    eps_at: Callable[[float], float],
    target_epsilon: float,
    low: float,
    high: float,
    *,
    what: tuple[float, float, str],
) -> float:
    """Opacus's get_noise_multiplier search, with fewer ε evaluations.

    The answer meets Opacus's criterion: the returned σ has target - tolerance < ε(σ) <= target,
    and a σ below the bracket's low end overspends. Each ε evaluation is a new RDP curve (the most
    expensive step of a site's first message), so instead of doubling and halving, the steps are
    guessed from ε's shape: it falls roughly as 1/σ (a line of slope -1 in log-log), so the search
    jumps along that line while it has only one end of the bracket, then narrows the bracket by
    false position in log-log space (Illinois variant) aimed at the middle of the tolerance band.
    """
    delta, spent, round_desc = what
    goal = math.log(target_epsilon - EPSILON_TOLERANCE / 2)

    def f(eps: float) -> float:
        return math.log(eps) - goal if eps > 0 else -math.inf

    eps_high = eps_at(high)
    f_low = math.inf  # ε at low is unknown (or infinite, at σ = 0)
    while eps_high > target_epsilon:
        if high >= MAX_NOISE_MULTIPLIER:
            raise FedwardError(
                f"no noise multiplier up to {MAX_NOISE_MULTIPLIER:g} keeps ε within "
                f"{target_epsilon:g} (δ = {delta:g}) after the recorded ε = {spent:.3f}: the "
                f"remaining budget is too small for {round_desc}"
            )
        low, f_low = high, f(eps_high)
        high = min(MAX_NOISE_MULTIPLIER, high * min(1e3, max(1.5, 1.2 * math.exp(f_low))))
        eps_high = eps_at(high)
    f_high = f(eps_high)
    kept = 0  # the end kept by the last step: +1 low, -1 high (Illinois halves a stuck end)
    while target_epsilon - eps_high > EPSILON_TOLERANCE and high - low > 1e-6:
        if not math.isfinite(f_low) or not math.isfinite(f_high) or low <= 0:
            # One end unknown: follow the slope -1 line from the known end, a little past it.
            guess = high * math.exp(1.2 * f_high) if math.isfinite(f_high) else (low + high) / 2
        else:
            x_low, x_high = math.log(low), math.log(high)
            guess = math.exp(x_high - f_high * (x_high - x_low) / (f_high - f_low))
        mid = guess if low < guess < high else (low + high) / 2
        eps_mid = eps_at(mid)
        if eps_mid <= target_epsilon:
            high, eps_high, f_high = mid, eps_mid, f(eps_mid)
            if kept == 1:
                f_low /= 2
            kept = 1
        else:
            low, f_low = mid, f(eps_mid)
            if kept == -1:
                f_high /= 2
            kept = -1
    return high


def default_delta(n_train: int) -> float:
    """A round δ strictly below 1/(10 n): one significant digit, rounded down (n=200 → 4e-4).

    δ well below 1/n is the usual requirement (δ ≥ 1/n permits releasing a whole row).
    """
    if n_train < 1:
        raise FedwardError(f"default delta needs at least one training row, got {n_train}")
    bound = Fraction(1, 10 * n_train)
    exponent = math.floor(math.log10(float(bound)))
    unit = Fraction(10) ** exponent
    while unit > bound:  # guard against log10 rounding up at exact powers of ten
        unit /= 10
    while unit * 10 <= bound:
        unit *= 10
    digit = math.floor(bound / unit)
    if Fraction(digit) * unit >= bound:
        digit -= 1
    if digit == 0:
        unit /= 10
        digit = 9
    return float(Fraction(digit) * unit)


def gaussian_release_sigma(
    epsilon: float, delta: float, accountant: AccountantName = "rdp"
) -> float:
    """σ (as a multiple of the L2 sensitivity) for ONE Gaussian release within (ε, δ).

    Computed with the same accountant at sample rate 1 and one step, so the release enters the
    site's history as ``(σ, 1.0, 1)`` and composes with training.
    """
    return plan_noise_multiplier(epsilon, delta, 1.0, 1, accountant=accountant)
