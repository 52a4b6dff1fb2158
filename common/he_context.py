"""TenSEAL contexts for encrypted inference: the clinic's secret one and the public one it sends.

The clinic encrypts with a symmetric (secret-key) context: the server, which only multiplies by
plaintexts, adds and squares, needs no public key at all, so none is made or sent. (TenSEAL 0.3.18
serialises symmetric ciphertexts at full size, so this saves no upload.) What
the server receives is the parameters plus, for an MLP, the relinearisation keys; never a secret
key, which ``load_public_context`` refuses outright.
"""

from __future__ import annotations

import tenseal as ts

from fedward.common.errors import FedwardError
from fedward.common.he_params import CKKSParameters


class HEInputError(FedwardError):
    """A context or ciphertext the server cannot use; the message says which and why."""


def new_secret_context(params: CKKSParameters) -> ts.Context:
    """A fresh context with a new secret key: stays with the clinic."""
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
    )
    ctx.global_scale = float(2**params.scale_bits)
    if params.needs_relin_keys:
        ctx.generate_relin_keys()
    return ctx


def public_context_bytes(ctx: ts.Context, params: CKKSParameters) -> bytes:
    """The parameters, plus relinearisation keys only when the model squares: never the secret
    key, never a public key (the server encrypts nothing) and never Galois keys (no rotations)."""
    return bytes(
        ctx.serialize(
            save_public_key=False,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=params.needs_relin_keys,
        )
    )


def parms_id(ctx: ts.Context) -> list[int]:
    """SEAL's hash of the full parameter set (degree and every prime): equal iff parameters are."""
    return list(ctx.seal_context().data.key_parms_id())


def load_public_context(data: bytes, params: CKKSParameters, *, expected: list[int]) -> ts.Context:
    """Parse a clinic's context and check it is public and built with the model's parameters.

    ``expected`` is ``parms_id`` of a context the server built itself from ``params``: SEAL picks
    the primes deterministically, so equal ids mean the very same ring and moduli.
    """
    if not data:
        raise HEInputError("public_context is empty")
    try:
        ctx = ts.context_from(data)
    except Exception as exc:
        raise HEInputError(f"public_context is not a TenSEAL context ({exc})") from None
    if ctx.has_secret_key():
        raise HEInputError(
            "public_context includes a secret key: send the context serialised without it; "
            "that key has now been seen by the server and must not be used again"
        )
    try:
        ok = parms_id(ctx) == expected
    except Exception as exc:  # a context of another scheme has no CKKS parameters to compare
        raise HEInputError(f"public_context has no usable CKKS parameters ({exc})") from None
    if not ok:
        raise HEInputError(
            "public_context has the wrong CKKS parameters: the model needs "
            f"N={params.poly_modulus_degree}, coeff_mod_bit_sizes="
            f"{list(params.coeff_mod_bit_sizes)} (see GetModelInfo)"
        )
    if abs(ctx.global_scale - 2.0**params.scale_bits) > 1e-6 * 2.0**params.scale_bits:
        raise HEInputError(
            f"public_context has scale 2^{_log2(ctx.global_scale)}, the model needs "
            f"2^{params.scale_bits}"
        )
    if params.needs_relin_keys and not ctx.has_relin_keys():
        raise HEInputError(
            "public_context has no relinearisation keys; this model squares ciphertexts "
            "and needs them (generate_relin_keys before serialising)"
        )
    if ctx.has_galois_keys():
        raise HEInputError(
            "public_context carries Galois keys this model never uses; leave them out"
        )
    return ctx


def _log2(x: float) -> str:
    import math

    return f"{math.log2(x):.1f}" if x > 0 else "?"
