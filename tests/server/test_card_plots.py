"""The card's figures, read as matplotlib objects: sites at one ε stay apart, audit axes fit the data."""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
import pytest

from fedward.common.score_histograms import score_histogram
from fedward.server.card_plots import (
    audit_roc_figure,
    dodge,
    measurable_rates,
    privacy_utility_figure,
)

matplotlib.use("Agg")


def _card(eps: dict[str, float]) -> dict[str, Any]:
    metrics = [
        {
            "type": "auroc",
            "slice": f"site={site}",
            "value": 0.7 + 0.01 * i,
            "confidence_interval": {"lower_bound": 0.6, "upper_bound": 0.8},
        }
        for i, site in enumerate(sorted(eps))
    ]
    return {
        "privacy": {"sites": [{"site": s, "epsilon_model": e} for s, e in eps.items()]},
        "quantitative_analysis": {"performance_metrics": metrics},
        "baselines": {"done": False},
    }


def _points(fig: Any) -> dict[str, tuple[float, float]]:
    """Each site's drawn point, from the errorbar containers' data lines."""
    ax = fig.axes[0]
    out = {}
    for container in ax.containers:
        line = container.lines[0]
        out[container.get_label()] = (float(line.get_xdata()[0]), float(line.get_ydata()[0]))
    return out


def test_sites_at_the_same_epsilon_are_drawn_apart_and_labelled() -> None:
    eps = {"cleveland": 0.8, "hungary": 0.8, "switzerland": 0.8, "va-long-beach": 0.5}
    fig = privacy_utility_figure(_card(eps))
    points = _points(fig)
    xs = [points[s][0] for s in ("cleveland", "hungary", "switzerland")]
    assert len(set(xs)) == 3
    assert min(np.diff(sorted(xs))) > 0.01
    assert np.mean(xs) == pytest.approx(0.8)
    assert points["va-long-beach"][0] == pytest.approx(0.5)
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert {"cleveland", "hungary", "switzerland"} <= labels
    lo, hi = fig.axes[0].get_xlim()
    assert all(lo < x < hi for x in xs)


def test_dodge_is_deterministic_and_leaves_lone_points_alone() -> None:
    values = {"b": 1.0, "a": 1.0, "c": 2.0}
    assert dodge(values, 0.2) == dodge(dict(reversed(values.items())), 0.2)
    assert dodge(values, 0.2) == {"a": pytest.approx(0.9), "b": pytest.approx(1.1), "c": 2.0}


def _audit_entry(n_members: int, n_non: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    member = np.array([1] * n_members + [0] * n_non)
    ranks = np.clip(rng.random(member.size) * 0.8 + 0.15 * member, 0, 1)
    hist = score_histogram(member, ranks, 20).coarsen(10).to_record()
    return {"epsilon_accountant": 1.0, "attacks": {"loss": {"hist": hist}}}


@pytest.mark.parametrize(("members", "non_members"), [(60, 40), (400, 300)])
def test_audit_roc_axes_span_what_the_audit_can_measure(members: int, non_members: int) -> None:
    entry = _audit_entry(members, non_members)
    fpr_min, tpr_min = measurable_rates(entry) or (0.0, 0.0)
    assert fpr_min == pytest.approx(1 / non_members)
    assert tpr_min == pytest.approx(1 / members)
    fig = audit_roc_figure("site", entry, 1e-5)
    ax = fig.axes[0]
    x_lo, x_hi = ax.get_xlim()
    y_lo, y_hi = ax.get_ylim()
    # Not far below the smallest measurable FPR (the old axes went to 1e-3 for 40 non-members).
    assert fpr_min / 2 < x_lo <= fpr_min
    assert tpr_min / 2 < y_lo <= tpr_min
    assert 1.0 <= x_hi < 1.2 and 1.0 <= y_hi < 1.2
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), dtype=float)
        y = np.asarray(line.get_ydata(), dtype=float)
        shown = (x > 0) & (y > 0)
        assert (x[shown] >= x_lo * (1 - 1e-9)).all() and (x[shown] <= x_hi).all()
        assert (y[shown] >= y_lo * (1 - 1e-9)).all() and (y[shown] <= y_hi).all()
