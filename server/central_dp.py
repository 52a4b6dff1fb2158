"""Site-level (central) DP arithmetic: the ε that Flower's server-side DP wrappers give a whole site.

Flower's ``DifferentialPrivacyServerSide*Clipping`` wrappers clip each site's model update to norm C
and add Gaussian noise of std z·C/m to the mean of the m sampled sites' updates (DP-FedAvg, McMahan,
Ramage, Talwar, Zhang 2018, "Learning Differentially Private Recurrent Language Models"). One round
is then a Gaussian mechanism with noise multiplier z on one site's contribution; sampling m of N sites
is accounted as subsampling with rate q = m/N, and R rounds compose. The RDP of the subsampled
Gaussian (Mironov, Talwar, Zhang 2019) and its conversion to (ε, δ) are Opacus's ``RDPAccountant``.

Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private Learning with
Adaptive Clipping") splits the noise between the update (z_Δ) and the clipped-update count (σ_b);
the pair is as private as one Gaussian mechanism with z = (z_Δ⁻² + (2σ_b)⁻²)^(-1/2) (their Theorem 1),
which is how Flower derives z_Δ from the z it is given.

Both the coordinator (which reports this ε) and anyone auditing a run folder can recompute it from
the (noise_multiplier, sample_rate, rounds) history alone, as for a site's sample-level ledger.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from opacus.accountants import RDPAccountant

from fedward.common.errors import FedwardError

CentralHistory = Sequence[tuple[float, float, int]]


def default_delta(num_sites: int) -> float:
    """δ = 1/(10·N): below one over the number of "users", who here are whole sites."""
    if num_sites < 1:
        raise FedwardError(f"the number of sites must be at least 1, got {num_sites}")
    return 1.0 / (10 * num_sites)


def adaptive_noise_multiplier(model_noise_multiplier: float, count_stddev: float) -> float:
    """The one noise multiplier as private as update noise z_Δ plus count noise σ_b together."""
    if model_noise_multiplier <= 0 or count_stddev <= 0:
        raise FedwardError(
            "adaptive clipping needs positive update and count noise, got "
            f"z_Δ={model_noise_multiplier}, σ_b={count_stddev}"
        )
    return float((model_noise_multiplier**-2 + (2 * count_stddev) ** -2) ** -0.5)


def _checked(history: Iterable[Sequence[float]]) -> list[tuple[float, float, int]]:
    out: list[tuple[float, float, int]] = []
    for i, entry in enumerate(history):
        z, q, steps = float(entry[0]), float(entry[1]), int(entry[2])
        if not (z > 0 and math.isfinite(z)):
            raise FedwardError(f"central-DP release {i}: noise multiplier must be > 0, got {z}")
        if not 0 < q <= 1:
            raise FedwardError(f"central-DP release {i}: sample rate must be in (0, 1], got {q}")
        if steps < 0:
            raise FedwardError(f"central-DP release {i}: rounds must be >= 0, got {steps}")
        if steps:
            out.append((z, q, steps))
    return out


def site_level_epsilon(history: Iterable[Sequence[float]], delta: float) -> float:
    """ε at ``delta`` of a history of (noise_multiplier, sample_rate, rounds), Opacus's RDP accountant."""
    if not 0 < delta < 1:
        raise FedwardError(f"delta must be in (0, 1), got {delta}")
    entries = _checked(history)
    if not entries:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = list(entries)
    return float(accountant.get_epsilon(delta=delta))
