"""The privacy transaction: the budget check and the ledger append are one SQLite transaction, so
two requests racing for the last of a budget get exactly one release."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from fedward.client.budget import BudgetRefusal, SiteBudget
from fedward.client.ledger import Ledger, LedgerEntry
from fedward.client.privacy_transaction import Release, commit_release, plan_run
from fedward.common.run_config import RunConfig
from fedward.common.site_config import PolicyConfig

DELTA = 1e-5
SIGMA = 2.0  # one release at sample rate 1: ε 2.17 at δ 1e-5; two: ε 3.19


class SlowCheckBudget(SiteBudget):
    """A budget whose check takes a while: the window in which another writer could spend."""

    def check_spend(
        self, run_id: str, run_delta: float, run_cap: float, spend: tuple[float, float, int]
    ) -> None:
        super().check_spend(run_id, run_delta, run_cap, spend)
        time.sleep(0.3)


def _budget(state: Path, cls: type[SiteBudget] = SlowCheckBudget) -> SiteBudget:
    # Room for one release (ε 2.17) and not two (ε 3.19).
    return cls(
        Ledger(state),
        PolicyConfig(total_epsilon=3.0, total_delta=DELTA),
        site="cleveland",
        dataset="ds",
        n_rows=300,
    )


def _release(run_id: str) -> Release:
    return Release(
        dataset="ds",
        run_id=run_id,
        round=0,
        attempt="preprocessing",
        kind="gaussian-release",
        noise_multiplier=SIGMA,
        sample_rate=1.0,
        steps=1,
        delta=DELTA,
        config_hash="h",
        note="{}",
    )


def _race(state: Path, spend: object) -> tuple[list[object], list[BaseException]]:
    """Two threads, each with its own ledger connection, spend at the same moment."""
    won: list[object] = []
    refused: list[BaseException] = []
    start = threading.Barrier(2)

    def one(run_id: str) -> None:
        budget = _budget(state)
        start.wait()
        try:
            won.append(spend(budget, _release(run_id)))  # type: ignore[operator]
        except BudgetRefusal as exc:
            refused.append(exc)

    threads = [threading.Thread(target=one, args=(f"r{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return won, refused


def test_two_writers_racing_for_the_last_of_a_budget_get_one_release(tmp_path: Path) -> None:
    won, refused = _race(tmp_path, lambda b, r: commit_release(b, r, run_cap=10.0))
    assert len(won) == 1 and len(refused) == 1
    assert isinstance(won[0], LedgerEntry)
    assert len(Ledger(tmp_path).entries()) == 1
    assert _budget(tmp_path).lifetime_epsilon() <= 3.0


def test_a_check_and_a_separate_append_would_both_spend(tmp_path: Path) -> None:
    """The race the transaction closes is real: checked and appended apart, both releases pass."""

    def apart(budget: SiteBudget, release: Release) -> LedgerEntry:
        budget.check_spend(release.run_id, release.delta, 10.0, release.spend)
        return budget.ledger.append(**asdict(release))

    won, refused = _race(tmp_path, apart)
    assert len(won) == 2 and not refused
    assert _budget(tmp_path).lifetime_epsilon() > 3.0


def test_a_refused_release_appends_nothing(tmp_path: Path) -> None:
    budget = _budget(tmp_path, SiteBudget)
    commit_release(budget, _release("r1"), run_cap=10.0)
    with pytest.raises(BudgetRefusal):
        commit_release(budget, _release("r2"), run_cap=10.0)
    assert [e.run_id for e in budget.ledger.entries()] == ["r1"]
    assert budget.ledger.verify().ok


def test_a_transaction_that_fails_leaves_no_entry(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    with pytest.raises(RuntimeError), ledger.transaction():
        ledger.append(
            dataset="ds",
            run_id="r",
            round=1,
            attempt="a",
            kind="dp-sgd",
            noise_multiplier=1.0,
            sample_rate=0.1,
            steps=1,
            delta=DELTA,
        )
        raise RuntimeError("the process fails before the commit")
    assert ledger.entries() == []
    assert ledger.verify().ok


def test_entries_appended_in_one_transaction_chain_and_anchor(tmp_path: Path) -> None:
    budget = _budget(tmp_path, SiteBudget)
    run = RunConfig.model_validate({"rounds": 2, "privacy": {"target_epsilon": 2.0}})
    with budget.ledger.transaction():
        plan = plan_run(budget, run, run_id="r", n_train=200, config_hash="h")
        # Inside the transaction the plan it just wrote is read back.
        assert budget.existing_plan("r") == plan
    assert [e.kind for e in budget.ledger.entries()] == ["plan"]
    assert budget.ledger.verify().ok
    assert plan_run(budget, run, run_id="r", n_train=200, config_hash="h") == plan
    assert len(budget.ledger.entries()) == 1


def test_a_transaction_does_not_nest(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    with (
        ledger.transaction(),
        pytest.raises(RuntimeError, match="already open"),
        ledger.transaction(),
    ):
        pass
