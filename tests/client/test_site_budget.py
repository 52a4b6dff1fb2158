"""The site owns its budget: the coordinator can only ask for less, and nothing spends past it.

Every test talks to the real ClientApp with real Flower messages and a real ledger on disk.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flwr.app import RecordDict

from fedward.client.accounting import epsilon_of, plan_noise_multiplier
from fedward.client.app import app
from fedward.client.ledger import Ledger
from fedward.common.code_identity import code_hash
from fedward.common.datasets.bundled import write_site_files
from fedward.common.protocol import KEY_ATTEMPT, KEY_LEDGER_HEADS, REPLY
from fedward.common.run_config import RunConfig
from fedward.common.site_config import load_site_config
from tests.conftest import initial_arrays, make_context, make_message, wire_config

REPO = Path(__file__).resolve().parents[2]


def _site(tmp_path: Path, policy: str = "") -> Path:
    cfg = write_site_files("heart-disease", tmp_path, seed=0)[0]  # cleveland
    cfg.write_text(cfg.read_text() + policy)
    return cfg


def _train(
    cfg_path: Path, run: RunConfig, *, run_id: str, rnd: int, **extra: Any
) -> dict[str, Any]:
    content = RecordDict(
        {
            "arrays": initial_arrays(run),
            "config": wire_config(run, server_round=rnd, run_id=run_id, **extra),
        }
    )
    reply = app(make_message(content, "train"), make_context({"site-config": str(cfg_path)}))
    return dict(reply.content[REPLY])


def _ledger(cfg_path: Path) -> Ledger:
    return Ledger(load_site_config(cfg_path).state_path)


def _run_through(cfg_path: Path, run: RunConfig, run_id: str) -> list[dict[str, Any]]:
    return [_train(cfg_path, run, run_id=run_id, rnd=r) for r in range(1, run.rounds + 1)]


@pytest.mark.parametrize("max_sigma", [5.0, 7.0])
def test_three_runs_never_exceed_the_lifetime_budget(tmp_path: Path, max_sigma: float) -> None:
    cfg = _site(tmp_path, f"total_epsilon = 1.4\nmax_noise_multiplier = {max_sigma}\n")
    run = RunConfig(rounds=3)
    for run_id in ("run-a", "run-b"):
        assert all(r["status"] == "ok" for r in _run_through(cfg, run, run_id))
    ledger = _ledger(cfg)
    spent = ledger.history("cleveland")
    delta = float(ledger.entries()[-1].delta)
    plan = ledger.entries("cleveland")[0]
    # What the accountant says the third run needs, given everything already spent:
    needed = plan_noise_multiplier(1.4, delta, plan.sample_rate, plan.steps, prior=spent)
    third = _run_through(cfg, run, "run-c")
    if needed > max_sigma:
        assert third[0]["status"] == "refused" and third[0]["error_kind"] == "BudgetRefusal"
        assert "max_noise_multiplier" in third[0]["reason"]
        assert third[0]["epsilon_remaining"] == pytest.approx(
            1.4 - epsilon_of(spent, delta), abs=1e-6
        )
    else:
        assert all(r["status"] == "ok" for r in third)
        assert third[-1]["noise_multiplier"] == pytest.approx(needed)
    lifetime = epsilon_of(_ledger(cfg).history("cleveland"), delta)
    assert lifetime <= 1.4 + 1e-9
    assert needed > 5.0 > 4.0  # the parametrisation covers both outcomes


def test_coordinator_can_only_ask_for_less(tmp_path: Path) -> None:
    cfg = _site(tmp_path, "max_epsilon_per_run = 0.5\n")
    run = RunConfig.model_validate({"rounds": 2, "privacy": {"target_epsilon": 5.0}})
    replies = _run_through(cfg, run, "greedy")
    assert all(r["status"] == "ok" for r in replies)
    assert replies[-1]["epsilon"] <= 0.5


def test_killed_site_process_keeps_its_spend(tmp_path: Path) -> None:
    cfg = _site(tmp_path)
    run = RunConfig.model_validate({"rounds": 3, "training": {"local_epochs": 20, "batch_size": 2}})
    script = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from fedward.common.config import RunConfig
from tests.client.test_site_budget import _train
from pathlib import Path
run = RunConfig.model_validate_json({run.model_dump_json()!r})
_train(Path({str(cfg)!r}), run, run_id="crash", rnd=1)
time.sleep(60)  # the reply is never sent: the process dies first
"""
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    ledger = _ledger(cfg)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(e.kind == "dp-sgd" for e in ledger.entries()):
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert ledger.verify().ok
    reply = _train(cfg, run, run_id="crash", rnd=2)
    assert reply["status"] == "ok"
    history = ledger.history("cleveland")
    assert len(history) == 2  # the killed round counts
    assert reply["epsilon"] == pytest.approx(epsilon_of(history, reply["delta"]), abs=1e-9)


def test_edited_ledger_row_stops_the_site_before_it_trains(tmp_path: Path) -> None:
    cfg = _site(tmp_path)
    run = RunConfig(rounds=2)
    _train(cfg, run, run_id="r", rnd=1)
    path = _ledger(cfg).path
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER entries_no_update")
    con.execute("UPDATE entries SET steps = 0 WHERE kind = 'dp-sgd'")
    con.commit()
    con.close()
    before = path.stat().st_size
    reply = _train(cfg, run, run_id="r", rnd=2)
    assert reply["status"] == "refused" and reply["error_kind"] == "LedgerError"
    # The detail ("entry 2 was edited") stays in the site's log; the reply says what it means.
    assert "integrity check" in reply["reason"] and "edited" not in reply["reason"]
    assert path.stat().st_size == before


def test_replayed_attempt_and_old_round_are_refused(tmp_path: Path) -> None:
    cfg = _site(tmp_path)
    run = RunConfig(rounds=3)
    assert _train(cfg, run, run_id="r", rnd=2, **{KEY_ATTEMPT: "a2"})["status"] == "ok"
    replay = _train(cfg, run, run_id="r", rnd=2, **{KEY_ATTEMPT: "a2"})
    assert replay["status"] == "refused" and "replay" in replay["reason"]
    old = _train(cfg, run, run_id="r", rnd=1, **{KEY_ATTEMPT: "a1"})
    assert old["status"] == "refused" and "replay refused" in old["reason"]
    retry = _train(cfg, run, run_id="r", rnd=2, **{KEY_ATTEMPT: "a2-retry"})
    assert retry["status"] == "ok"  # a retried round is a new attempt: it spends again
    assert len(_ledger(cfg).history("cleveland")) == 2


def test_rolled_back_ledger_is_refused(tmp_path: Path) -> None:
    cfg = _site(tmp_path)
    run = RunConfig(rounds=2)
    first = _train(cfg, run, run_id="r", rnd=1)
    heads = json.dumps({"cleveland": [first["ledger_seq"] + 5, "f" * 64]})
    reply = _train(cfg, run, run_id="r", rnd=2, **{KEY_LEDGER_HEADS: heads})
    assert reply["status"] == "refused" and "rolled back" in reply["reason"]
    good = json.dumps({"cleveland": [first["ledger_seq"], first["ledger_head"]]})
    assert _train(cfg, run, run_id="r", rnd=2, **{KEY_LEDGER_HEADS: good})["status"] == "ok"


def test_unapproved_run_is_refused_until_the_operator_approves_it(tmp_path: Path) -> None:
    cfg = _site(tmp_path)
    cfg.write_text(cfg.read_text().replace("auto_approve = true", "auto_approve = false"))
    run = RunConfig(rounds=2)
    refused = _train(cfg, run, run_id="r", rnd=1)
    assert refused["status"] == "refused" and "not approved" in refused["reason"]
    assert _ledger(cfg).history("cleveland") == []  # nothing was spent
    ledger = _ledger(cfg)
    ledger.approve("run-config", run.config_hash(), by="dr-who")
    code_refused = _train(cfg, run, run_id="r", rnd=1)
    assert "code" in code_refused["reason"]
    ledger.approve("code", code_hash(), by="dr-who")
    assert _train(cfg, run, run_id="r", rnd=1)["status"] == "ok"


def test_site_reports_lifetime_and_run_epsilon(tmp_path: Path) -> None:
    cfg = _site(tmp_path)
    run = RunConfig(rounds=2)
    _run_through(cfg, run, "one")
    last = _run_through(cfg, run, "two")[-1]
    assert last["epsilon_lifetime"] > last["epsilon"] > 0
    assert last["epsilon_budget"] == 10.0
    assert last["epsilon_remaining"] == pytest.approx(10.0 - last["epsilon_lifetime"])
    assert last["privacy_unit"] == "record"


def test_approving_a_run_config_covers_exactly_the_federations_it_asks_for(
    tmp_path: Path,
) -> None:
    from fedward.common.protocol import KEY_PARENT_RUN
    from fedward.common.run_plan import companion_runs, tuned_run, tuning_trials

    cfg = _site(tmp_path)
    cfg.write_text(cfg.read_text().replace("auto_approve = true", "auto_approve = false"))
    parent = RunConfig.model_validate(
        {
            "rounds": 1,
            "model": {"kind": "mlp"},
            "tuning": {"deep": True, "budget": 2},
            "controls": {"label_shuffle": True},
        }
    )
    ledger = _ledger(cfg)
    ledger.approve("run-config", parent.config_hash(), by="dr-who")
    ledger.approve("code", code_hash(), by="dr-who")
    wire = {KEY_PARENT_RUN: parent.to_json()}
    (name, setting, trial), _ = tuning_trials(parent)
    final = tuned_run(parent, setting)
    shuffle = dict((n, c) for n, c, _ in companion_runs(final))["label_shuffle"]
    for k, child in enumerate((trial, final, shuffle)):
        assert child.config_hash() != parent.config_hash()
        reply = _train(cfg, child, run_id=f"c{k}", rnd=1, **wire)
        assert reply["status"] == "ok", (name, reply)
    # A config the parent does not ask for is refused, approval or not.
    other = RunConfig.model_validate(
        {"rounds": 1, "model": {"kind": "mlp"}, "training": {"learning_rate": 0.123}}
    )
    refused = _train(cfg, other, run_id="x", rnd=1, **wire)
    assert refused["status"] == "refused" and "not one of the federations" in refused["reason"]
    # Without the parent's approval, its companions are not approved either.
    unapproved = parent.model_copy(update={"seed": 7})
    (_, _, trial7), *_ = tuning_trials(unapproved)
    reply = _train(cfg, trial7, run_id="y", rnd=1, **{KEY_PARENT_RUN: unapproved.to_json()})
    assert reply["status"] == "refused" and "not approved" in reply["reason"]
