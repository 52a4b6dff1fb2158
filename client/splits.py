"""Per-site stratified train/tune/test/audit splits with a recorded, reproducible seed.

The test split is sealed: only the final evaluation reads it. The audit split holds non-members for
membership-inference audits. Splits are stratified by label and, when the schema names a patient id,
grouped so that one patient's rows never straddle two splits. The seed of a site's split is derived
from the run seed and the site name with SHA-256 (never Python's salted ``hash()``), so the same run
re-splits a site identically in every fresh ClientApp process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedward.client.seeds import SPLIT_DOMAIN, derive_seed
from fedward.common.errors import SiteDataError
from fedward.common.learning_config import SplitConfig

SPLIT_NAMES = ("train", "tune", "test", "audit")
_GROUP_ATTEMPTS = 50


@dataclass(frozen=True)
class SiteSplits:
    """Row indices of each split, plus what is needed to record and reproduce it."""

    train: np.ndarray
    tune: np.ndarray
    test: np.ndarray
    audit: np.ndarray
    seed: int
    derived_seed: int = 0
    # Per split: (negatives, positives). Counted once here so to_record() needs no labels.
    class_counts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def indices(self, name: str) -> np.ndarray:
        if name not in SPLIT_NAMES:
            raise KeyError(f"unknown split '{name}'; one of {', '.join(SPLIT_NAMES)}")
        arr: np.ndarray = getattr(self, name)
        return arr

    def to_record(self) -> dict[str, Any]:
        """Flat sizes and class counts per split (JSON- and ConfigRecord-safe)."""
        rec: dict[str, Any] = {"seed": int(self.seed), "derived_seed": int(self.derived_seed)}
        for name in SPLIT_NAMES:
            neg, pos = self.class_counts.get(name, (0, 0))
            rec[f"{name}_n"] = len(self.indices(name))
            rec[f"{name}_n_negative"] = int(neg)
            rec[f"{name}_n_positive"] = int(pos)
        return rec


def site_seed(seed: int, site: str) -> int:
    """A 63-bit seed from the run seed and the site name, stable across processes."""
    return derive_seed(seed, site, domain=SPLIT_DOMAIN, bits=63)


def split_site(
    labels: np.ndarray,
    *,
    groups: np.ndarray | None,
    tune: float,
    test: float,
    audit: float,
    seed: int,
    min_per_class: int,
    min_rows: int,
    site: str,
    file: str | None = None,
) -> SiteSplits:
    """Split one site's rows; refuse (SiteDataError) when the minimums cannot be met."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError("labels must be one-dimensional")
    fractions = {"tune": tune, "test": test, "audit": audit}
    for name, f in fractions.items():
        if not 0.0 <= f < 1.0:
            raise ValueError(f"split fraction '{name}' must be in [0, 1), got {f}")
    if tune + test + audit >= 1.0:
        raise ValueError("tune + test + audit must leave rows for training")
    if min_per_class < 1:
        raise ValueError("min_per_class must be at least 1")
    if len(y) < min_rows:
        raise SiteDataError(
            site, f"only {len(y)} rows; at least {min_rows} are needed (splits.min_rows)", file=file
        ).publicly("split-impossible", setting="min_rows")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    y = y.astype(np.int64)
    counts = np.bincount(y, minlength=2)
    if (counts == 0).any():
        raise SiteDataError(
            site, f"only one class present ({int(counts.max())} rows); both are needed", file=file
        ).publicly("split-impossible", setting="classes")
    held_out = [n for n in ("tune", "test", "audit") if fractions[n] > 0]
    need = min_per_class * (len(held_out) + 1)
    for cls in (0, 1):
        if counts[cls] < need:
            raise SiteDataError(
                site,
                f"class {_class_name(cls)} has {int(counts[cls])} rows; {len(held_out) + 1} splits "
                f"with at least {min_per_class} each need {need} (negatives {int(counts[0])}, "
                f"positives {int(counts[1])})",
                file=file,
            ).publicly("split-impossible", setting="min_per_class")

    derived = site_seed(seed, site)
    rng = np.random.default_rng(derived)
    if groups is None:
        parts = _stratified(y, fractions, held_out, min_per_class, rng)
    else:
        g = np.asarray(groups)
        if len(g) != len(y):
            raise ValueError("groups and labels differ in length")
        parts = _grouped(y, g, fractions, held_out, min_per_class, rng, site=site, file=file)

    class_counts = {
        name: (int((y[idx] == 0).sum()), int((y[idx] == 1).sum())) for name, idx in parts.items()
    }
    return SiteSplits(
        train=parts["train"],
        tune=parts["tune"],
        test=parts["test"],
        audit=parts["audit"],
        seed=seed,
        derived_seed=derived,
        class_counts=class_counts,
    )


def _class_name(cls: int) -> str:
    return "1 (positive)" if cls == 1 else "0 (negative)"


def _quotas(
    n: int, fractions: dict[str, float], held_out: list[str], minimum: int
) -> dict[str, int]:
    """Rows of one class per held-out split: its share, at least the minimum, train keeps enough."""
    quota = {name: max(minimum, round(fractions[name] * n)) for name in held_out}
    # Shrink the largest quotas first until training keeps at least the minimum.
    while n - sum(quota.values()) < minimum:
        largest = max(held_out, key=lambda k: (quota[k], k))
        if quota[largest] <= minimum:
            break
        quota[largest] -= 1
    return quota


def _stratified(
    y: np.ndarray,
    fractions: dict[str, float],
    held_out: list[str],
    minimum: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    chosen: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for cls in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == cls))
        quota = _quotas(len(rows), fractions, held_out, minimum)
        start = 0
        for name in held_out:
            chosen[name].append(rows[start : start + quota[name]])
            start += quota[name]
        chosen["train"].append(rows[start:])
    return {
        name: np.sort(np.concatenate(parts)) if parts else _empty()
        for name, parts in chosen.items()
    }


def _grouped(
    y: np.ndarray,
    groups: np.ndarray,
    fractions: dict[str, float],
    held_out: list[str],
    minimum: int,
    rng: np.random.Generator,
    *,
    site: str,
    file: str | None,
) -> dict[str, np.ndarray]:
    """Assign whole groups to splits, greedily filling each split's per-class quota.

    Groups are visited in a random order; each goes to the held-out split whose quota for the
    group's majority class is furthest from met, or to training when every quota is met. A few
    orders are tried until every split keeps the per-class minimum.
    """
    _, inverse = np.unique(groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    pos = np.bincount(inverse, weights=y, minlength=n_groups).astype(np.int64)
    size = np.bincount(inverse, minlength=n_groups).astype(np.int64)
    neg = size - pos
    counts = np.bincount(y, minlength=2)
    quotas = {cls: _quotas(int(counts[cls]), fractions, held_out, minimum) for cls in (0, 1)}
    best: tuple[int, np.ndarray] | None = None
    for _ in range(_GROUP_ATTEMPTS):
        order = rng.permutation(n_groups)
        assign = np.full(n_groups, -1, dtype=np.int64)  # -1 train, else index into held_out
        have = np.zeros((len(held_out), 2), dtype=np.int64)
        for gi in order:
            cls = 1 if pos[gi] >= neg[gi] else 0
            deficits = [quotas[cls][name] - have[k, cls] for k, name in enumerate(held_out)]
            k = int(np.argmax(deficits)) if deficits else -1
            if k >= 0 and deficits[k] > 0:
                assign[gi] = k
                have[k, 0] += neg[gi]
                have[k, 1] += pos[gi]
        train_have = np.array([neg[assign == -1].sum(), pos[assign == -1].sum()])
        shortfall = int(
            np.maximum(minimum - have, 0).sum() + np.maximum(minimum - train_have, 0).sum()
        )
        if best is None or shortfall < best[0]:
            best = (shortfall, assign.copy())
        if shortfall == 0:
            break
    assert best is not None
    shortfall, assign = best
    row_assign = assign[inverse]
    parts = {"train": np.flatnonzero(row_assign == -1)}
    for k, name in enumerate(held_out):
        parts[name] = np.flatnonzero(row_assign == k)
    for name in SPLIT_NAMES:
        parts.setdefault(name, _empty())
    if shortfall:
        for name in ["train", *held_out]:
            idx = parts[name]
            for cls in (0, 1):
                have_c = int((y[idx] == cls).sum())
                if have_c < minimum:
                    raise SiteDataError(
                        site,
                        f"split '{name}' would hold {have_c} rows of class {_class_name(cls)} "
                        f"(minimum {minimum}); patients (groups) are too few or too large to keep "
                        f"every split stratified (negatives {int(counts[0])}, positives "
                        f"{int(counts[1])}, groups {n_groups})",
                        file=file,
                    ).publicly("split-impossible", setting="min_per_class")
    return parts


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def split_for_run(
    labels: np.ndarray,
    *,
    groups: np.ndarray | None,
    config: SplitConfig,
    seed: int,
    site: str,
    file: str | None = None,
) -> SiteSplits:
    """``split_site`` with a run config's split settings: the one way sites (and benchmarks) split."""
    return split_site(
        labels,
        groups=groups,
        tune=config.tune,
        test=config.test,
        audit=config.audit,
        seed=seed,
        min_per_class=config.min_per_class,
        min_rows=config.min_rows,
        site=site,
        file=file,
    )
