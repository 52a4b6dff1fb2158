"""The one seed derivation: pinned to the values the site's four derivations gave before they
became one function, so every recorded run's seeds come out unchanged."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedward.client.seeds import (
    SPLIT_DOMAIN,
    derive_seed,
    noise_generator_seed,
    shadow_round_seeds,
)
from fedward.client.splits import site_seed

# Values computed with the site's former `_seed_for` (client/app.py) before the refactoring.
SITE_SEEDS = [
    ((42, "cleveland", "label-shuffle"), 3969977020),
    ((42, "cleveland", 3, "noise"), 3425334627),
    ((42, "hungary", 1, "train"), 1641490977),
    ((7, "va", "preprocessing"), 1868159889),
    ((42, "cleveland", "tune", "bootstrap"), 2408037270),
    ((42, "switzerland", "lr", "paired"), 4090263127),
]
# Values computed with client/splits.py's former `site_seed`.
SPLIT_SEEDS = [
    ((42, "cleveland"), 621921898443998198),
    ((0, "hungary"), 4738078504876238668),
    ((2024, "va"), 5475741795474805313),
]
# Values of the baselines' and the membership audit's own derivations (their domains).
DOMAIN_SEEDS = [
    ("fedward-baselines", (42, "cleveland", "label-shuffle"), 538259541),
    ("fedward-baselines", (42, "hungary", 1, "train"), 47658473),
    ("fedward-mia", (42, "cleveland", "label-shuffle"), 4230969499),
    ("fedward-mia", (7, "va", "preprocessing"), 1764941475),
]


@pytest.mark.parametrize(("parts", "expected"), SITE_SEEDS)
def test_site_seeds_keep_their_values(
    parts: tuple[int, *tuple[object, ...]], expected: int
) -> None:
    assert derive_seed(*parts) == expected


@pytest.mark.parametrize(("parts", "expected"), SPLIT_SEEDS)
def test_split_seeds_keep_their_values(parts: tuple[int, str], expected: int) -> None:
    assert derive_seed(*parts, domain=SPLIT_DOMAIN, bits=63) == expected
    assert site_seed(*parts) == expected


@pytest.mark.parametrize(("domain", "parts", "expected"), DOMAIN_SEEDS)
def test_domain_seeds_keep_their_values(
    domain: str, parts: tuple[int, *tuple[object, ...]], expected: int
) -> None:
    assert derive_seed(*parts, domain=domain) == expected


def test_a_domain_separates_seeds() -> None:
    assert derive_seed(42, "x") != derive_seed(42, "x", domain="fedward-mia")


def test_seeds_fit_their_width() -> None:
    assert 0 <= derive_seed(42, "x") < 2**32
    assert 0 <= derive_seed(42, "x", bits=63) < 2**63


def test_seeds_are_the_same_in_another_process() -> None:
    code = "from fedward.client.seeds import derive_seed; print(derive_seed(42, 'a', 1))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == derive_seed(42, "a", 1)


def test_the_sub_streams_keep_the_values_recorded_runs_used() -> None:
    # A seeded DP-SGD run's noise generator, apart from its sampler; a shadow model's round seeds.
    assert noise_generator_seed(7) == 7 ^ 0x5DEECE66D
    assert noise_generator_seed(7) != 7
    assert shadow_round_seeds(1000, 2) == (1002, 1009002)
