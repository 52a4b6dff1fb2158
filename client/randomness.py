"""Where DP-SGD's randomness comes from: the operating system's CSPRNG at real sites.

DP-SGD is private only if the adversary cannot predict the Poisson sampling or the noise. A
Mersenne Twister (torch's CPU generator) is not cryptographically secure: 624 consecutive outputs
reveal its state, and a seed of 62 bits bounds the search for it. Opacus's answer is its secure
mode (``PrivacyEngine(secure_mode=True)``): a ``torchcsprng`` generator over ``/dev/urandom`` for
the noise and the sampler, and in ``opacus.optimizers.optimizer._generate_noise`` four Gaussian
draws summed and halved per coordinate (Holohan et al. 2021, arXiv:2107.10138, section 5.1, n=2),
against attacks on the floating-point representation of a single Gaussian sample (Jin et al.
2021, arXiv:2112.05307). ``torchcsprng`` was last released in 2021 for torch 1.8 and does not
build against the torch fedward pins, so fedward does the equivalent itself:

* every uniform comes from ``os.urandom`` (Linux ``getrandom``: the kernel's ChaCha20 CSPRNG), 53
  bits per float64, with no user-space state that could be recovered or replayed;
* Poisson sampling keeps row i when its uniform is below q, as Opacus's sampler does;
* each noise coordinate is Opacus's secure construction, the sum of four N(0, σ²) draws divided by
  two, each draw by Box–Muller in float64 from two such uniforms, then cast to the gradient's
  dtype.

``SEEDED`` names the other source: torch generators seeded from ``DPSettings.noise_seed``, for
simulations and tests that must be reproducible. Each ledger entry records which one it used.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from opacus.optimizers.optimizer import (
    DPOptimizer,
    _check_processed_flag,
    _mark_as_processed,
)

SYSTEM = "os-urandom"
"""Ledger label: sampling and noise drawn from the operating system's CSPRNG (real sites)."""
SEEDED = "seeded-mt19937"
"""Ledger label: sampling and noise from torch generators seeded by ``noise_seed`` (simulation)."""

_MANTISSA = 53
_SCALE = 1.0 / (1 << _MANTISSA)


class SystemRandom:
    """Uniforms and Gaussians drawn from ``os.urandom``; holds no state of its own."""

    name = SYSTEM

    @staticmethod
    def uniform(n: int) -> torch.Tensor:
        """``n`` float64 uniforms in [0, 1), 53 random bits each."""
        if n <= 0:
            return torch.zeros(0, dtype=torch.float64)
        words = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(64 - _MANTISSA)
        return torch.from_numpy(words.astype(np.float64) * _SCALE)

    @classmethod
    def standard_normal(cls, n: int) -> torch.Tensor:
        """``n`` float64 N(0, 1) draws by Box–Muller; ``1 - u`` keeps the logarithm finite."""
        pairs = (n + 1) // 2
        u = cls.uniform(2 * pairs)
        radius = torch.sqrt(-2.0 * torch.log1p(-u[:pairs]))
        angle = (2.0 * math.pi) * u[pairs:]
        return torch.cat((radius * torch.cos(angle), radius * torch.sin(angle)))[:n]

    @classmethod
    def noise(cls, std: float, reference: torch.Tensor) -> torch.Tensor:
        """Gaussian noise shaped like ``reference``: Opacus's secure sum of four draws, halved."""
        if std == 0:
            return torch.zeros_like(reference)
        n = reference.numel()
        draws = cls.standard_normal(4 * n).reshape(4, n).sum(dim=0) / 2.0
        return (draws * std).reshape(reference.shape).to(reference.device, reference.dtype)


def with_system_noise(cls: type[DPOptimizer]) -> type[DPOptimizer]:
    """``cls`` whose ``add_noise`` draws from :class:`SystemRandom` (Opacus's loop otherwise)."""

    class SystemNoise(cls):
        randomness = SYSTEM

        def add_noise(self) -> None:
            multiplier: Any = getattr(self, "_adjusted_noise_multiplier", self.noise_multiplier)
            for p in self.params:
                _check_processed_flag(p.summed_grad)
                noise = SystemRandom.noise(multiplier * self.max_grad_norm, p.summed_grad)
                p.grad = (p.summed_grad + noise).view_as(p)
                _mark_as_processed(p.summed_grad)

    SystemNoise.__name__ = SystemNoise.__qualname__ = f"SystemNoise{cls.__name__}"
    return SystemNoise


class SystemNormal:
    """The one call of ``numpy.random.Generator`` the DP preprocessing release makes
    (``normal(loc, scale, size)``), drawn as :meth:`SystemRandom.noise` draws: a real site's
    Gaussian release must not come from PCG64, whose outputs reveal its state."""

    name = SYSTEM

    @staticmethod
    def normal(loc: float = 0.0, scale: float = 1.0, size: Any = None) -> Any:
        shape = () if size is None else tuple(np.atleast_1d(np.asarray(size, dtype=np.int64)))
        n = int(np.prod(shape)) if shape else 1
        draws = SystemRandom.standard_normal(4 * n).reshape(4, n).sum(dim=0) / 2.0
        out = loc + scale * draws.numpy()
        return out.reshape(shape) if shape else float(out[0])
