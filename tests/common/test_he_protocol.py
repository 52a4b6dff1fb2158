"""The committed gRPC modules are what the .proto generates, and the CKKS parameter choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedward.common.he_params import (
    SECURITY_128_MAX_BITS,
    CKKSParameters,
    HEParameterError,
    parameters_for_depth,
)

COMMON = Path(__file__).resolve().parents[2] / "common"
GENERATED = ("he_inference_pb2.py", "he_inference_pb2.pyi", "he_inference_pb2_grpc.py")


def test_the_generated_modules_match_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-Ifedward/common={COMMON}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            "fedward/common/he_inference.proto",
        ],
        check=True,
        cwd=tmp_path,
    )
    for name in GENERATED:
        fresh = (tmp_path / "fedward" / "common" / name).read_text()
        committed = (COMMON / name).read_text()
        # Only the generator's version stamp may differ.
        strip = lambda text: [  # noqa: E731
            line
            for line in text.splitlines()
            if "Version" not in line and "GENERATED_VERSION" not in line
        ]
        assert strip(fresh) == strip(committed), f"{name} is stale: regenerate it (see the .proto)"


@pytest.mark.parametrize(
    ("depth", "degree", "bits"),
    [
        (1, 8192, (60, 40, 60)),
        (2, 8192, (60, 40, 40, 60)),
        (3, 16384, (60, 40, 40, 40, 60)),
        (7, 16384, (60, *([40] * 7), 60)),
        (8, 32768, (60, *([40] * 8), 60)),
    ],
)
def test_parameters_are_the_smallest_ring_that_holds_the_depth(
    depth: int, degree: int, bits: tuple[int, ...]
) -> None:
    params = parameters_for_depth(depth)
    assert (params.poly_modulus_degree, params.coeff_mod_bit_sizes) == (degree, bits)
    assert params.depth == depth
    assert params.total_bits <= SECURITY_128_MAX_BITS[degree]


def test_parameters_below_128_bit_security_are_refused() -> None:
    with pytest.raises(HEParameterError, match="below 128-bit security"):
        CKKSParameters(8192, (60, 40, 40, 40, 60))
    with pytest.raises(HEParameterError, match="choose one of"):
        CKKSParameters(1024, (30, 30, 30))
    with pytest.raises(HEParameterError, match="depth 0"):
        parameters_for_depth(0)
