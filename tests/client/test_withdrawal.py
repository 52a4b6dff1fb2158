"""Withdrawing a site from a run: recorded append-only at the site, honoured by the ClientApp on every
message of that run (a policy refusal the coordinator already understands), other runs still served,
the privacy ledger untouched."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import typer
from flwr.app import RecordDict
from typer.testing import CliRunner, Result

from fedward.client.app import app
from fedward.client.cli import register
from fedward.client.ledger import Ledger
from fedward.client.request import build_request
from fedward.client.withdrawal import (
    WITHDRAWALS_FILE,
    WithdrawalsError,
    read_withdrawals,
    record_withdrawal,
)
from fedward.common.datasets.bundled import write_site_files
from fedward.common.errors import PolicyError
from fedward.common.protocol import KEY_PARENT_RUN, KEY_SPLIT, REPLY
from fedward.common.run_config import RunConfig
from fedward.common.site_config import load_site_config
from tests.conftest import initial_arrays, make_context, make_message, wire_config

RUN = RunConfig.model_validate({"rounds": 2, "evaluation": {"bootstrap": 20}})


def fedward_site(*args: str | Path) -> Result:
    app_ = typer.Typer()
    register(app_)
    return CliRunner().invoke(app_, ["site", *map(str, args)])


@pytest.fixture
def site_toml(tmp_path: Path) -> Path:
    """Cleveland of the heart-disease hospitals, as a real site folder (demo policy: auto-approve,
    so a withdrawal is shown to win over any approval)."""
    return write_site_files("heart-disease", tmp_path, seed=0)[0]


def _message(run: RunConfig, run_id: str, **extra: Any) -> RecordDict:
    return RecordDict(
        {"arrays": initial_arrays(run), "config": wire_config(run, run_id=run_id, **extra)}
    )


def _send(site_toml: Path, run_id: str, kind: str = "train", **extra: Any) -> dict[str, object]:
    ctx = make_context({"site-config": str(site_toml)})
    reply = app(make_message(_message(RUN, run_id, **extra), kind), ctx)
    info: dict[str, Any] = dict(reply.content[REPLY])
    info["has_arrays"] = "arrays" in reply.content
    info["has_metrics"] = "metrics" in reply.content
    return info


def _request(site_toml: Path, run: RunConfig, run_id: str, **extra: Any) -> None:
    build_request(
        wire_config(run, run_id=run_id, **extra),
        None,
        make_context({"site-config": str(site_toml)}),
    )


def test_a_withdrawn_run_is_refused_with_a_reason_naming_the_withdrawal_while_another_is_served(
    site_toml: Path,
) -> None:
    done = fedward_site("withdraw", "run-1", "--site-config", site_toml, "--reason", "DPO hold")
    assert done.exit_code == 0, done.output

    refused = _send(site_toml, "run-1")
    served = _send(site_toml, "run-2")

    assert refused["status"] == "refused" and refused["error_kind"] == "PolicyError"
    assert "withdrew from this run" in str(refused["reason"])
    assert refused["site"] == "cleveland" and "file" not in refused
    assert str(site_toml) not in str(refused)
    assert refused["has_arrays"] is False
    assert served["status"] == "ok" and served["has_arrays"] is True


def test_every_message_of_a_withdrawn_run_is_refused_not_only_training(site_toml: Path) -> None:
    record_withdrawal(load_site_config(site_toml).state_path, run="run-1", site="cleveland", by="A")

    reply = _send(site_toml, "run-1", "evaluate", **{KEY_SPLIT: "tune"})

    assert reply["status"] == "refused" and "withdrew" in str(reply["reason"])
    assert reply["has_metrics"] is False


def test_the_withdrawer_and_the_reason_stay_at_the_site(site_toml: Path) -> None:
    fedward_site(
        "withdraw", "run-1", "--site-config", site_toml, "--by", "Dr Ada", "--reason", "audit 7"
    )

    reply = json.dumps(_send(site_toml, "run-1"))

    assert "withdrew" in reply and "Dr Ada" not in reply and "audit 7" not in reply


def test_a_run_id_withdrawal_covers_the_runs_companion_federations_only(site_toml: Path) -> None:
    record_withdrawal(load_site_config(site_toml).state_path, run="run-1", site="cleveland", by="A")

    for companion in ("run-1-federated_logistic", "run-1-tune_001", "run-1-leave_out_hungary"):
        with pytest.raises(PolicyError, match="withdrew from run run-1"):
            _request(site_toml, RUN, companion)
    _request(site_toml, RUN, "run-10")  # another run whose id merely starts alike


def test_a_config_hash_withdrawal_refuses_every_run_of_that_config_and_its_companions(
    site_toml: Path, tmp_path: Path
) -> None:
    run_toml = tmp_path / "run.toml"
    run_toml.write_text("rounds = 2\n[evaluation]\nbootstrap = 20\n")
    done = fedward_site("withdraw", "--run-config", run_toml, "--site-config", site_toml)
    assert done.exit_code == 0, done.output
    (w,) = read_withdrawals(load_site_config(site_toml).state_path)
    assert (w.run, w.match) == (RUN.config_hash(), "config-hash")

    for run_id in ("run-a", "run-b"):
        with pytest.raises(PolicyError, match="withdrew from run config"):
            _request(site_toml, RUN, run_id)
    companion = RunConfig.model_validate({"rounds": 2, "model": {"kind": "mlp"}})
    with pytest.raises(PolicyError, match="withdrew"):
        _request(site_toml, companion, "run-a-x", **{KEY_PARENT_RUN: RUN.to_json()})
    _request(site_toml, RunConfig(rounds=3), "run-c")  # another config is still served


def test_withdrawing_leaves_the_privacy_ledger_untouched(site_toml: Path) -> None:
    served = _send(site_toml, "run-1")
    assert served["status"] == "ok"
    state = load_site_config(site_toml).state_path
    before = [asdict(e) for e in Ledger(state).entries()]
    assert before  # the run's plan and its first round

    fedward_site("withdraw", "run-1", "--site-config", site_toml)
    refused = _send(site_toml, "run-1", server_round=2)

    assert refused["status"] == "refused"
    ledger = Ledger(state)
    assert [asdict(e) for e in ledger.entries()] == before
    assert ledger.verify().ok


def test_withdrawals_are_appended_never_rewritten_and_listed_with_who_when_why(
    site_toml: Path,
) -> None:
    path = load_site_config(site_toml).state_path / WITHDRAWALS_FILE
    fedward_site("withdraw", "run-1", "--site-config", site_toml, "--by", "Dr Ada", "--reason", "x")
    first = path.read_bytes()
    fedward_site("withdraw", "run-2", "--site-config", site_toml, "--by", "B. Jones")

    assert path.read_bytes().startswith(first)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(w["run"], w["withdrawn_by"], w["reason"]) for w in lines] == [
        ("run-1", "Dr Ada", "x"),
        ("run-2", "B. Jones", ""),
    ]
    assert all(w["site"] == "cleveland" and w["withdrawn_at"] for w in lines)

    listed = fedward_site("withdrawals", "--site-config", site_toml)
    assert listed.exit_code == 0, listed.output
    for text in (
        "run-1",
        "run-2",
        "Dr Ada",
        "B. Jones",
        lines[0]["withdrawn_at"][:19].replace("T", " "),
    ):
        assert text in listed.output


def test_withdrawing_again_records_nothing_new(site_toml: Path) -> None:
    fedward_site("withdraw", "run-1", "--site-config", site_toml, "--by", "Dr Ada")
    again = fedward_site("withdraw", "run-1", "--site-config", site_toml, "--by", "someone")

    assert again.exit_code == 0 and "already withdrew" in again.output
    assert len(read_withdrawals(load_site_config(site_toml).state_path)) == 1


def test_withdrawing_a_run_the_site_never_saw_warns_of_a_typo(site_toml: Path) -> None:
    _send(site_toml, "run-1")

    done = fedward_site("withdraw", "run-9", "--site-config", site_toml)

    assert done.exit_code == 0 and "no ledger entry names run run-9" in done.output


def test_withdraw_needs_exactly_one_of_run_and_run_config(site_toml: Path, tmp_path: Path) -> None:
    neither = fedward_site("withdraw", "--site-config", site_toml)
    both = fedward_site(
        "withdraw", "run-1", "--run-config", tmp_path / "r.toml", "--site-config", site_toml
    )

    for done in (neither, both):
        assert done.exit_code != 0 and "exactly one of RUN or --run-config" in str(done.exception)


def test_a_damaged_withdrawals_file_refuses_every_run_naming_the_file_and_line(
    site_toml: Path,
) -> None:
    state = load_site_config(site_toml).state_path
    record_withdrawal(state, run="run-1", site="cleveland", by="A")
    path = state / WITHDRAWALS_FILE
    path.write_text(path.read_text() + '{"run": "run-2", "matc\n')

    reply = _send(site_toml, "run-3")

    assert reply["status"] == "refused" and reply["error_kind"] == "WithdrawalsError"
    # The file and its line are for the site's operator; the coordinator learns what it means.
    assert "path" not in reply and str(path) not in str(reply["reason"])
    assert "withdrawal record cannot be read" in str(reply["reason"])
    with pytest.raises(WithdrawalsError, match="line 2"):
        record_withdrawal(state, run="run-4", site="cleveland", by="A")
