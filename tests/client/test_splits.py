"""split_site: stratified, grouped, reproducible splits that keep the per-class minimums."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedward.client.splits import SPLIT_NAMES, SiteSplits, site_seed, split_site
from fedward.common.errors import SiteDataError

DEFAULTS = {"tune": 0.15, "test": 0.2, "audit": 0.0, "min_per_class": 2, "min_rows": 20}


def _split(labels: np.ndarray, groups: np.ndarray | None = None, **kw: object) -> SiteSplits:
    args: dict = {**DEFAULTS, "seed": 7, "site": "st-anne", **kw}
    return split_site(labels, groups=groups, **args)


def _labels(n_neg: int, n_pos: int) -> np.ndarray:
    return np.array([0] * n_neg + [1] * n_pos, dtype=np.int64)


def _all(s: SiteSplits) -> list[np.ndarray]:
    return [s.indices(n) for n in SPLIT_NAMES]


def test_same_inputs_give_the_same_split() -> None:
    y = _labels(60, 40)
    a, b = _split(y), _split(y)
    for x, z in zip(_all(a), _all(b), strict=True):
        assert np.array_equal(x, z)


def test_site_name_changes_the_split() -> None:
    y = _labels(60, 40)
    assert not np.array_equal(_split(y, site="a").test, _split(y, site="b").test)


def test_site_seed_is_stable_across_processes() -> None:
    # A fixed value: Python's salted hash() would differ between runs.
    assert site_seed(42, "cleveland") == site_seed(42, "cleveland")
    assert site_seed(42, "cleveland") != site_seed(43, "cleveland")
    assert (
        site_seed(0, "x")
        == int.from_bytes(__import__("hashlib").sha256(b"fedward-split:0:x").digest()[:8], "big")
        >> 1
    )


def test_split_sizes_follow_the_fractions() -> None:
    s = _split(_labels(500, 500))
    assert len(s.test) == 200 and len(s.tune) == 150 and len(s.train) == 650
    assert len(s.audit) == 0


def test_splits_are_stratified() -> None:
    y = _labels(700, 300)
    s = _split(y)
    for name in ("train", "tune", "test"):
        assert abs(y[s.indices(name)].mean() - 0.3) < 0.01


def test_switzerland_shape_keeps_two_negatives_per_split() -> None:
    # Switzerland: 123 rows, only 8 negatives.
    s = _split(_labels(8, 115), audit=0.1)
    for name in SPLIT_NAMES:
        neg, pos = s.class_counts[name]
        assert neg >= 2 and pos >= 2


def test_too_few_of_a_class_is_refused_naming_class_and_counts() -> None:
    with pytest.raises(SiteDataError, match=r"class 0 \(negative\) has 5 rows.*need 6") as err:
        _split(_labels(5, 118), audit=0.0, min_per_class=2, tune=0.15, test=0.2, site="x")
    assert err.value.site == "x"
    with pytest.raises(SiteDataError, match="need 8"):
        _split(_labels(7, 118), audit=0.1)


def test_too_few_rows_is_refused() -> None:
    with pytest.raises(SiteDataError, match="only 10 rows"):
        _split(_labels(5, 5))


def test_single_class_is_refused() -> None:
    with pytest.raises(SiteDataError, match="one class"):
        _split(_labels(0, 50))


def test_to_record_has_sizes_and_class_counts() -> None:
    s = _split(_labels(60, 40))
    rec = s.to_record()
    assert rec["seed"] == 7
    assert rec["test_n"] == rec["test_n_negative"] + rec["test_n_positive"] == len(s.test)
    assert rec["audit_n"] == 0
    assert all(isinstance(v, int) for v in rec.values())


def test_groups_never_straddle_splits() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), 3)
    y = np.repeat(rng.integers(0, 2, 100), 3)
    s = _split(y, groups)
    seen = [set(groups[s.indices(n)]) for n in SPLIT_NAMES]
    for i in range(len(seen)):
        for j in range(i + 1, len(seen)):
            assert not seen[i] & seen[j]


def test_groups_too_large_to_stratify_are_refused() -> None:
    # Two patients hold every negative row: three splits cannot each get two negatives.
    y = _labels(10, 40)
    groups = np.array(["a"] * 5 + ["b"] * 5 + [f"p{i}" for i in range(40)])
    with pytest.raises(SiteDataError, match="groups"):
        _split(y, groups)


@st.composite
def _site(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray | None, float]:
    n_neg = draw(st.integers(8, 80))
    n_pos = draw(st.integers(8, 80))
    y = _labels(n_neg, n_pos)
    perm = np.random.default_rng(draw(st.integers(0, 10**6))).permutation(len(y))
    y = y[perm]
    grouped = draw(st.booleans())
    groups = None
    if grouped:
        size = draw(st.integers(1, 3))
        groups = np.arange(len(y)) // size
    audit = draw(st.sampled_from([0.0, 0.1]))
    return y, groups, audit


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_site(), st.integers(0, 2**32 - 1))
def test_splits_are_disjoint_cover_all_rows_and_keep_minimums(
    site: tuple[np.ndarray, np.ndarray | None, float], seed: int
) -> None:
    y, groups, audit = site
    try:
        s = _split(y, groups, audit=audit, seed=seed, min_rows=4)
    except SiteDataError:
        # Only grouped data may be impossible to stratify; ungrouped sizes here always fit.
        assert groups is not None
        return
    parts = _all(s)
    joined = np.concatenate(parts)
    assert len(joined) == len(y) and set(joined.tolist()) == set(range(len(y)))
    for name in SPLIT_NAMES:
        idx = s.indices(name)
        if name == "audit" and audit == 0:
            assert len(idx) == 0
            continue
        assert (y[idx] == 0).sum() >= 2 and (y[idx] == 1).sum() >= 2
    if groups is not None:
        owner: dict[int, str] = {}
        for name in SPLIT_NAMES:
            for g in set(groups[s.indices(name)].tolist()):
                assert owner.setdefault(g, name) == name
