"""A site lost mid-round, with real processes on loopback: a SuperLink and four SuperNodes on the
bundled heart-disease hospitals, a four-round DP logistic run launched with `fedward run`, and two
sites' SuperNodes SIGKILLed while one of them trains round 2 (its spend for the round already in its
ledger). That one is started again once round 3 has begun; the other never comes back.

What must hold: the run finishes every round without hanging; rounds 2 and 3 close with the two
sites that answered; the run record names the lost site, the round and the phase; the site rejoins
round 4 under a new node id and is matched to its record by name; the spend of the round it never
answered stays in its ledger and in the ε the run reports for it. The site that never returns is
reported with what it did (the rounds it trained) and an ε range that holds its ledger's figure.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedward.client.accounting import epsilon_of
from fedward.client.ledger import Ledger
from fedward.common.datasets.bundled import write_site_files
from fedward.server.privacy_figures import trained_rounds_text
from tests.e2e.followed_run import (
    SITES,
    dp_rows,
    logistic_run_toml,
    progress_events,
    start_fedward_run,
    wait_for,
)
from tests.e2e.processes import (
    ProcessGroup,
    connection_home,
    free_port,
    start_insecure_federation,
    start_supernode,
)

pytestmark = pytest.mark.slow
LOST = "hungary"
GONE = "switzerland"
ROUNDS, LOST_IN, BACK_FOR = 4, 2, 4
# The round closes at the latest after this; Flower also answers for a node whose heartbeats
# stopped, whichever comes first.
ROUND_TIMEOUT_S = 45
RUN_TOML = logistic_run_toml(
    "dropout-proof",
    ROUNDS,
    f"""
[strategy]
min_sites = 2
round_timeout = {ROUND_TIMEOUT_S}
""",
)


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dropout")
    link_port = free_port()
    _, env = connection_home(tmp, "fedward-test", link_port)
    run_toml = tmp / "run.toml"
    run_toml.write_text(RUN_TOML)
    site_configs = write_site_files("heart-disease", tmp / "sites", seed=3)
    assert tuple(Path(c).parent.name for c in site_configs) == SITES
    lost_config = site_configs[SITES.index(LOST)]
    lost_state = lost_config.parent / "state"
    gone_state = site_configs[SITES.index(GONE)].parent / "state"
    out = tmp / "runs"
    group = ProcessGroup()
    try:
        start_insecure_federation(group, tmp, env, link_port, site_configs)
        lost_node = group.procs[1 + SITES.index(LOST)]
        gone_node = group.procs[1 + SITES.index(GONE)]
        runner = start_fedward_run(group, env, run_toml, out, tmp / "fedward-run.log")
        run_dir = wait_for(
            "no run folder", lambda: next(iter(out.glob("*-dropout-proof-*")), None), 420
        )

        def training_round_2() -> bool:
            events = progress_events(run_dir)
            started = [e for e in events if e["event"] == "round-started" and e["round"] == LOST_IN]
            if not started:
                return False
            run_id = next(e["run_id"] for e in events if e["event"] == "run-started")
            return any(e.attempt == started[0]["attempt"] for e in dp_rows(lost_state, run_id))

        # The site has committed round 2's spend and is training (or replying): lose it now.
        wait_for(f"{LOST} never started round {LOST_IN}", training_round_2, 420, poll=0.05)
        for node in (lost_node, gone_node):
            os.killpg(node.pid, signal.SIGKILL)
        lost_node.wait(timeout=30)
        gone_node.wait(timeout=30)
        killed_at = time.monotonic()

        def round_started(n: int) -> bool:
            return any(
                e["event"] == "round-started" and e["round"] == n for e in progress_events(run_dir)
            )

        wait_for(f"round {LOST_IN + 1} never started", lambda: round_started(LOST_IN + 1), 300)
        start_supernode(group, env, link_port, lost_config, log=tmp / "supernode-back.log")
        runner.wait(timeout=600)
        # A model, trained without one site at the end: exit code 4, not success.
        assert runner.returncode == 4, (tmp / "fedward-run.log").read_text()[-4000:]
        yield {
            "run_dir": run_dir,
            "lost_state": lost_state,
            "gone_state": gone_state,
            "finished_s": time.monotonic() - killed_at,
        }
    finally:
        group.stop()
        for proc in group.procs:
            assert proc.poll() is not None, f"process {proc.pid} still running"


def test_every_round_finishes_and_the_lost_rounds_close_with_three(
    dropout_run: dict[str, Any],
) -> None:
    metrics = json.loads((dropout_run["run_dir"] / "metrics.json").read_text())
    train = {e["round"]: e for e in metrics["train"]}
    assert sorted(train) == list(range(1, ROUNDS + 1))
    assert all(e["aggregated"] for e in train.values())
    others = sorted(s for s in SITES if s not in (LOST, GONE))
    # GONE was killed with LOST; it may have answered round 2 just before.
    assert sorted(train[LOST_IN]["sites"]) in (others, sorted([*others, GONE]))
    assert sorted(train[LOST_IN + 1]["sites"]) == others
    assert sorted(train[1]["sites"]) == list(SITES)
    assert sorted(train[BACK_FOR]["sites"]) == sorted(s for s in SITES if s != GONE)
    assert [e["round"] for e in metrics["tune"]] == list(range(1, ROUNDS + 1))
    # Bounded waiting: the lost round waited at most one round timeout per phase it was asked in.
    assert dropout_run["finished_s"] < 4 * ROUND_TIMEOUT_S + 120


def test_the_run_record_names_the_site_the_round_and_the_phase(
    dropout_run: dict[str, Any],
) -> None:
    record = json.loads((dropout_run["run_dir"] / "run_record.json").read_text())
    sites = {s["site"]: s for s in record["sites"]}
    assert sorted(sites) == list(SITES)  # one record for the site, under its old and new node ids
    lost = sites[LOST]
    assert [d["round"] for d in lost["dropouts"]][:1] == [LOST_IN]
    assert lost["dropouts"][0]["phase"] == "train"
    assert all(d["round"] < BACK_FOR for d in lost["dropouts"])
    assert lost["status"] == "ok"  # back, and trained the last round
    assert all(not sites[s]["dropouts"] for s in SITES if s not in (LOST, GONE))
    events = progress_events(dropout_run["run_dir"])
    dropped = [e for e in events if e["event"] == "site-dropped" and e["site"] == LOST]
    assert dropped[0]["round"] == LOST_IN


def test_the_spend_of_the_unanswered_round_is_still_counted(dropout_run: dict[str, Any]) -> None:
    summary = json.loads((dropout_run["run_dir"] / "privacy_summary.json").read_text())
    ledger = Ledger(dropout_run["lost_state"])
    assert ledger.verify().ok
    rows = dp_rows(dropout_run["lost_state"], summary["run_id"])
    # Round 2 was committed before the kill; round 3 was never asked; round 4 after the return.
    assert sorted(e.round for e in rows) == [1, LOST_IN, BACK_FOR]
    (reported,) = [s for s in summary["sites"] if s["site"] == LOST]
    eps = epsilon_of([e.history_item() for e in rows], rows[0].delta)
    assert reported["epsilon"] == pytest.approx(eps, rel=1e-6)


def test_a_site_that_never_returns_gets_an_epsilon_range_that_holds_its_ledger(
    dropout_run: dict[str, Any],
) -> None:
    run_dir = dropout_run["run_dir"]
    summary = json.loads((run_dir / "privacy_summary.json").read_text())
    (gone,) = [s for s in summary["sites"] if s["site"] == GONE]
    assert gone["status"] == "dropped"
    # Killed with LOST while LOST trained round 2: GONE may have answered round 2 just before.
    trained = gone["trained_rounds"]
    assert trained in ([1], [1, LOST_IN])
    bound = gone["epsilon_bound"]
    assert bound["at_least"] == gone["epsilon_model"] > 0
    assert bound["at_most"] == summary["target_epsilon"] == 1.0
    record = json.loads((run_dir / "run_record.json").read_text())
    (gone_record,) = [s for s in record["sites"] if s["site"] == GONE]
    assert f"stopped answering in round {gone_record['dropouts'][-1]['round']}" in bound["reason"]
    # Its ledger holds the truth, which the coordinator cannot see: the range must contain it,
    # whether or not the site committed round 2's spend before it was killed.
    rows = dp_rows(dropout_run["gone_state"], summary["run_id"])
    assert {e.round for e in rows} <= {1, LOST_IN, LOST_IN + 1}
    truth = epsilon_of([e.history_item() for e in rows], rows[0].delta)
    assert bound["at_least"] <= truth + 1e-9 <= bound["at_most"]
    # The sites that answered to the end get no range: their figure is their ledger's.
    assert all(s["epsilon_bound"] is None for s in summary["sites"] if s["site"] != GONE)
    card = (run_dir / "model_card.md").read_text()
    assert f"Site {GONE} trained {trained_rounds_text(trained)}, then dropped" in card
    assert "neither trained nor validated" not in card.split(f"Site {GONE}")[1][:300]
    assert f"≥ {bound['at_least']:.2f}, ≤ 1" in card
