"""One seed derivation for a site: a run seed and names -> a seed, stable anywhere.

Every seeded draw a site makes (splits, label shuffles, simulated DP noise, bootstraps, baseline
searches, audits) takes its seed from here, so two draws never share a
stream by accident and the same run seed gives the same numbers in every process. The seed is the
SHA-256 of the parts joined by ``:`` (Python's ``hash`` is salted per process, so it is never
used). ``domain`` keeps one component's seeds apart from another's; ``bits`` is 32 for numpy and
torch generators, 63 for the split seed that each site records in its split summary (that one was
always read big-endian; the 32-bit seeds little-endian; both stay as they were, so the seeds every
recorded run used come out unchanged).
"""

from __future__ import annotations

import hashlib
from typing import Literal

SPLIT_DOMAIN = "fedward-split"


def derive_seed(
    seed: int, *parts: object, domain: str | None = None, bits: Literal[32, 63] = 32
) -> int:
    """The seed for the draw named by ``parts`` under the run ``seed`` (and ``domain``, if any)."""
    names = (seed, *parts) if domain is None else (domain, seed, *parts)
    digest = hashlib.sha256(":".join(str(p) for p in names).encode()).digest()
    if bits == 63:
        return int.from_bytes(digest[:8], "big") >> 1
    return int.from_bytes(digest[:4], "little")


# Streams within one seeded draw. A component that already holds a derived seed numbers its
# sub-streams here instead of deriving afresh; the arithmetic is the one every recorded run used.

NOISE_STREAM_MASK = 0x5DEECE66D
"""XOR-ed into a DP step's noise seed for its noise generator, apart from its Poisson sampler."""


def noise_generator_seed(noise_seed: int) -> int:
    """The seed of the Gaussian-noise generator of a seeded DP-SGD run (its sampler has ``noise_seed``)."""
    return int(noise_seed) ^ NOISE_STREAM_MASK


def shadow_round_seeds(seed: int, round_index: int) -> tuple[int, int]:
    """A shadow model's training seed and DP-noise seed for one round of the audit's re-training."""
    return seed + round_index, seed * 1009 + round_index
