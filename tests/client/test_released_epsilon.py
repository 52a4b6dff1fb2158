"""ε of the released model: the tuning trials that chose its settings count, and the target bounds
the composition, whatever order or number of trials a coordinator asks for.

Every test talks to the real ClientApp with real Flower messages and a real ledger on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedward.client.accounting import EPSILON_TOLERANCE, epsilon_of
from fedward.common.protocol import KEY_PARENT_RUN, KEY_PURPOSE, PURPOSE_TUNING
from fedward.common.run_config import RunConfig
from fedward.common.run_plan import search_epsilon, tuned_run, tuning_trials
from tests.client.test_site_budget import _ledger, _site, _train

PARENT = RunConfig.model_validate(
    {"rounds": 2, "tuning": {"deep": True, "budget": 3, "deep_rounds": 2}}
)


def _search(cfg: Path, parent: RunConfig, runs: list[str]) -> list[dict[str, Any]]:
    """Each trial of ``parent``'s search through all its rounds, under the given run ids."""
    wire = {KEY_PARENT_RUN: parent.to_json(), KEY_PURPOSE: PURPOSE_TUNING}
    last = []
    for run_id, (_, _, trial) in zip(runs, tuning_trials(parent), strict=True):
        for r in range(1, trial.rounds + 1):
            reply = _train(cfg, trial, run_id=run_id, rnd=r, **wire)
            assert reply["status"] == "ok", reply
        last.append(reply)
    return last


def _history(cfg: Path, runs: set[str]) -> list[tuple[float, float, int]]:
    ledger = _ledger(cfg)
    (dataset,) = {e.dataset for e in ledger.entries()}
    return [e.history_item() for e in ledger.entries(dataset) if e.spends and e.run_id in runs]


def test_the_released_models_epsilon_composes_its_trials_and_stays_within_the_target(
    tmp_path: Path,
) -> None:
    cfg = _site(tmp_path)
    trials = _search(cfg, PARENT, ["t1", "t2", "t3"])
    share = search_epsilon(PARENT)
    # The trials together stay within their share; the last one was sized for what was left.
    assert trials[-1]["epsilon_model"] <= share + EPSILON_TOLERANCE
    assert trials[-1]["epsilon_model"] > 0.5 * share
    final = tuned_run(PARENT, tuning_trials(PARENT)[1][1])
    # No parent on the wire: the final run finds its search's trials from its own config.
    replies = [_train(cfg, final, run_id="final", rnd=r) for r in (1, 2)]
    last = replies[-1]
    assert last["status"] == "ok", last
    target = PARENT.privacy.target_epsilon
    assert last["epsilon"] < last["epsilon_model"] <= target + EPSILON_TOLERANCE
    # The figure is the ledger's own composition of the trials and the run, at the run's δ.
    composed = epsilon_of(_history(cfg, {"t1", "t2", "t3", "final"}), last["delta"], "rdp")
    assert last["epsilon_model"] == pytest.approx(composed, rel=1e-9)
    # Without the trials the final run alone would have been planned for the whole target.
    assert last["epsilon"] < target - 0.1


def test_a_coordinator_repeating_trials_cannot_spend_past_the_searchs_share(
    tmp_path: Path,
) -> None:
    cfg = _site(tmp_path)
    _search(cfg, PARENT, ["t1", "t2", "t3"])
    # The same trial again and again under new run ids: the site counts every repeat with its
    # search, sizes each for what the search has left, and refuses once nothing useful is left.
    _, _, trial = tuning_trials(PARENT)[0]
    wire = {KEY_PARENT_RUN: PARENT.to_json(), KEY_PURPOSE: PURPOSE_TUNING}
    runs = {"t1", "t2", "t3"}
    statuses = []
    for k in range(6):
        reply = _train(cfg, trial, run_id=f"again-{k}", rnd=1, **wire)
        statuses.append(reply["status"])
        if reply["status"] == "ok":
            runs.add(f"again-{k}")
            assert reply["epsilon_model"] <= search_epsilon(PARENT) + EPSILON_TOLERANCE
        else:
            assert reply["status"] == "refused" and "epsilon_remaining" in reply, reply
    assert "refused" in statuses
    delta = _ledger(cfg).entries()[-1].delta
    spent = epsilon_of(_history(cfg, runs), delta, "rdp")
    assert spent <= search_epsilon(PARENT) + EPSILON_TOLERANCE
