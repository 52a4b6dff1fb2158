"""CKKS parameters for encrypted inference, chosen from the model's multiplicative depth.

Both ends derive the same parameters from the model: the server to check a clinic's context, the
clinic to build it. Every set stays within the HomomorphicEncryption.org standard's bound on the
total coefficient modulus for 128-bit classical security with a ternary secret (Albrecht et al.
2018, table 1), which SEAL itself enforces: 109 bits at N=4096, 218 at 8192, 438 at 16384, 881 at
32768. A level is one rescale after a multiplication; the first and last primes are 60 bits (the
first carries the decrypted value's integer part, the last is the key-switching special prime).

The scale decides precision: 2^40 keeps CKKS's error near 1e-7 per operation, well under the 1e-3
parity this service promises on probabilities, at 40 bits per level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedward.common.errors import FedwardError

# Largest total coefficient modulus (bits) at 128-bit security, by polynomial degree.
SECURITY_128_MAX_BITS: dict[int, int] = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
SCALE_BITS = 40
EDGE_PRIME_BITS = 60
MAX_DEPTH = 19  # what N=32768 holds at 40-bit levels


class HEParameterError(FedwardError):
    """Parameters that cannot be built, or a context that does not match the model's."""


@dataclass(frozen=True)
class CKKSParameters:
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int = SCALE_BITS
    needs_relin_keys: bool = False

    @property
    def slots(self) -> int:
        """Patients per ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        """Rescales available: every prime but the first and the special one."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def security_bits(self) -> int:
        """128 when the modulus is within the standard's bound for N (checked at construction)."""
        return 128

    def __post_init__(self) -> None:
        bound = SECURITY_128_MAX_BITS.get(self.poly_modulus_degree)
        if bound is None:
            raise HEParameterError(
                f"poly_modulus_degree {self.poly_modulus_degree}: choose one of "
                f"{', '.join(str(n) for n in SECURITY_128_MAX_BITS)}"
            )
        if self.total_bits > bound:
            raise HEParameterError(
                f"coefficient modulus of {self.total_bits} bits at N={self.poly_modulus_degree} "
                f"is below 128-bit security (at most {bound} bits)"
            )
        if len(self.coeff_mod_bit_sizes) < 3:
            raise HEParameterError("CKKS needs at least three primes: data, one level, special")

    def to_dict(self) -> dict[str, Any]:
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
            "needs_relin_keys": self.needs_relin_keys,
            "slots": self.slots,
            "depth": self.depth,
            "total_bits": self.total_bits,
            "security_bits": self.security_bits,
        }


def parameters_for_depth(depth: int, *, needs_relin_keys: bool = False) -> CKKSParameters:
    """The smallest ring that holds ``depth`` levels at 40-bit scale and 128-bit security.

    Logistic regression (depth 1) gets N=8192, 4,096 patients per ciphertext; an MLP with one
    square-activated hidden layer (depth 3) needs N=16384: N=8192 can hold only two 40-bit levels.
    """
    if depth < 1 or depth > MAX_DEPTH:
        raise HEParameterError(
            f"a model of multiplicative depth {depth} cannot be evaluated on ciphertexts here "
            f"(1 to {MAX_DEPTH})"
        )
    bits = (EDGE_PRIME_BITS, *([SCALE_BITS] * depth), EDGE_PRIME_BITS)
    for degree, bound in SECURITY_128_MAX_BITS.items():
        if degree >= 8192 and sum(bits) <= bound:
            return CKKSParameters(degree, bits, SCALE_BITS, needs_relin_keys)
    raise HEParameterError(f"depth {depth} needs more than N=32768")  # pragma: no cover
