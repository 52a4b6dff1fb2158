"""`fedward --help` and the site commands import none of the heavy libraries (torch, Flower, Ray,
scikit-learn, SciPy, pandas, matplotlib): that is what keeps them under a second. The time itself
is a benchmark (tests/benchmarks/bench_cli_startup.py), not a timed test."""

from __future__ import annotations

import pytest

from tests.benchmarks.bench_cli_startup import COMMANDS, heavy_imports


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_help_and_site_commands_import_no_heavy_library(args: tuple[str, ...]) -> None:
    assert heavy_imports(args) == []
