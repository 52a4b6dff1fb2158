"""The ε stated for a site that stopped answering is a range that says why, never a bare number."""

from __future__ import annotations

from typing import Any

from fedward.common.privacy_config import PrivacyConfig
from fedward.common.run_config import RunConfig
from fedward.server.privacy_figures import epsilon_bound, model_epsilon, trained_rounds_text


def _site(**changes: Any) -> dict[str, Any]:
    site: dict[str, Any] = {
        "site": "hungary",
        "status": "ok",
        "reason": None,
        "epsilon": 0.4,
        "epsilon_model": 0.6,
        "trained_rounds": [1, 2, 3],
        "dropouts": [],
    }
    site.update(changes)
    return site


def test_rounds_are_written_as_spans() -> None:
    assert trained_rounds_text([1]) == "round 1"
    assert trained_rounds_text([1, 2, 3, 4, 5, 6]) == "rounds 1–6"
    assert trained_rounds_text([5, 1, 2, 3]) == "rounds 1–3, 5"


def test_a_site_that_answered_to_the_end_has_no_range() -> None:
    assert epsilon_bound(RunConfig(), _site()) is None


def test_a_dropped_site_gets_its_last_figure_as_a_lower_bound_and_the_target_as_upper() -> None:
    dropped = _site(
        status="dropped",
        trained_rounds=[1, 2, 3, 4, 5, 6],
        dropouts=[{"round": 7, "phase": "train"}],
    )
    bound = epsilon_bound(RunConfig(privacy=PrivacyConfig(target_epsilon=2.0)), dropped)
    assert bound is not None
    assert (bound["at_least"], bound["at_most"]) == (0.6, 2.0)
    assert "trained rounds 1–6, then stopped answering in round 7 (train)" in bound["reason"]


def test_a_failed_site_is_a_range_too_and_a_site_without_any_figure_starts_at_zero() -> None:
    failed = _site(status="failed", reason="train, round 2: node lost", epsilon=None)
    failed.pop("epsilon_model")
    bound = epsilon_bound(RunConfig(), failed)
    assert bound is not None and bound["at_least"] == 0.0
    assert "ended in failed (train, round 2: node lost)" in bound["reason"]


def test_no_range_without_dp_or_for_a_refusal() -> None:
    assert (
        epsilon_bound(RunConfig(privacy=PrivacyConfig(dp=False)), _site(status="dropped")) is None
    )
    assert epsilon_bound(RunConfig(), _site(status="refused")) is None


def test_the_model_figure_falls_back_to_the_runs_for_an_older_site() -> None:
    older = _site()
    older.pop("epsilon_model")
    assert model_epsilon(older) == 0.4
