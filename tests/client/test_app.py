"""The site's ClientApp, called with real Flower messages: what it trains, what it sends, what it refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import pytest
import torch
from flwr.app import ArrayRecord, RecordDict

from fedward.client.app import app
from fedward.client.ledger import Ledger
from fedward.common.datasets.bundled import write_site_files
from fedward.common.protocol import KEY_SPLIT, REPLY
from fedward.common.run_config import RunConfig
from tests.conftest import initial_arrays, make_context, make_message, wire_config

BUNDLED_NODE = {"partition-id": 0, "num-partitions": 4}


STATE: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _fresh_site_state(tmp_path: Path) -> None:
    STATE["dir"] = str(tmp_path / "site-state")


def _train(run: RunConfig, ctx, server_round: int = 1, arrays: ArrayRecord | None = None, **cfg):
    cfg.setdefault("state_dir", STATE["dir"])
    content = RecordDict(
        {
            "arrays": arrays or initial_arrays(run),
            "config": wire_config(run, server_round=server_round, **cfg),
        }
    )
    return app(make_message(content, "train"), ctx)


def _evaluate(run: RunConfig, ctx, split: str):
    content = RecordDict(
        {
            "arrays": initial_arrays(run),
            "config": wire_config(run, state_dir=STATE["dir"], **{KEY_SPLIT: split}),  # type: ignore[arg-type]
        }
    )
    return app(make_message(content, "evaluate"), ctx)


def test_train_reply_carries_weights_and_passes_the_egress_guard(heart_run: RunConfig) -> None:
    ctx = make_context(BUNDLED_NODE)
    sent = initial_arrays(heart_run)
    reply = _train(heart_run, ctx, arrays=sent)
    info = dict(reply.content[REPLY])
    assert info["status"] == "ok" and info["site"] == "cleveland"
    assert set(reply.content["arrays"].keys()) == set(sent.keys())
    assert reply.metadata.reply_to_message_id
    # Under DP the training loss would escape ε every round: it is not sent at all.
    assert "train_loss" not in reply.content["metrics"]
    assert "train_loss" not in info["non_dp_outputs"]


def test_epsilon_is_cumulative_and_noise_is_planned_once(heart_run: RunConfig) -> None:
    ctx = make_context(BUNDLED_NODE)
    eps, sigmas = [], []
    arrays = initial_arrays(heart_run)
    for rnd in range(1, heart_run.rounds + 1):
        reply = _train(heart_run, ctx, server_round=rnd, arrays=arrays)
        arrays = reply.content["arrays"]
        info = reply.content[REPLY]
        eps.append(float(info["epsilon"]))
        sigmas.append(float(info["noise_multiplier"]))
    assert eps == sorted(eps) and eps[0] < eps[-1]
    # The whole run stays within the target, with room left for one retried round.
    target = heart_run.privacy.target_epsilon
    assert 0.8 * target <= eps[-1] <= target
    assert len(set(sigmas)) == 1
    ledger = Ledger(Path(STATE["dir"]) / "cleveland")
    assert [e.kind for e in ledger.entries()] == ["plan"] + ["dp-sgd"] * heart_run.rounds


def test_site_policy_refuses_non_dp_training(tmp_path: Path) -> None:
    configs = write_site_files("heart-disease", tmp_path, seed=0)
    run = RunConfig.model_validate({"rounds": 1, "privacy": {"dp": False}})
    reply = _train(run, make_context({"site-config": str(configs[0])}))
    info = dict(reply.content[REPLY])
    assert info["status"] == "refused"
    assert "allow_non_dp" in info["reason"]
    # The site config's path stays at the site.
    assert str(configs[0]) not in json.dumps(info) and "file" not in info
    assert "arrays" not in reply.content


def test_bad_site_data_is_a_templated_refusal_naming_site_and_declared_column(
    tmp_path: Path,
) -> None:
    configs = write_site_files("heart-disease", tmp_path, seed=0)
    data = configs[1].parent / "data.csv"
    text = data.read_text().splitlines()
    text[0] = text[0].replace("chol", "cholesterol")  # a misspelt declared column
    data.write_text("\n".join(text) + "\n")
    reply = _train(RunConfig(rounds=1), make_context({"site-config": str(configs[1])}))
    info = dict(reply.content[REPLY])
    assert info["status"] == "refused"
    assert info["site"] == "hungary" and "feature column chol is missing" in info["reason"]
    assert "data.csv" not in json.dumps(info) and "cholesterol" not in json.dumps(info)
    assert "arrays" not in reply.content and "metrics" not in reply.content


def test_non_numeric_cell_value_never_leaves_the_site(tmp_path: Path) -> None:
    configs = write_site_files("heart-disease", tmp_path, seed=0)
    data = configs[0].parent / "data.csv"
    lines = data.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[5].split(",")
    row[header.index("age")] = "sixty-three"
    lines[5] = ",".join(row)
    data.write_text("\n".join(lines) + "\n")
    reply = _train(RunConfig(rounds=1), make_context({"site-config": str(configs[0])}))
    info = dict(reply.content[REPLY])
    assert info["status"] == "refused" and "column age:" in info["reason"]
    assert "sixty-three" not in json.dumps(info)


def test_unexpected_failure_is_reported_without_its_text(
    heart_run: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(req: object) -> None:
        raise RuntimeError("patient p17 has age 63")  # an unexpected error quoting data

    monkeypatch.setattr("fedward.client.handlers_training.local_update", broken)
    reply = _train(heart_run, make_context(BUNDLED_NODE))
    info = dict(reply.content[REPLY])
    assert info["status"] == "error"
    assert info["error_kind"] == "RuntimeError" and "site's log" in info["reason"]
    assert "p17" not in json.dumps(info) and "63" not in json.dumps(info)


def test_weights_that_do_not_fit_the_model_are_refused(
    heart_run: RunConfig,
) -> None:
    wrong = ArrayRecord({"weight": torch.zeros((3, 3))})
    reply = _train(heart_run, make_context(BUNDLED_NODE), arrays=wrong)
    info = dict(reply.content[REPLY])
    assert info["status"] == "refused" and info["error_kind"] == "MessageError"
    assert "weights do not fit the run's model" in info["reason"]


def test_evaluate_sends_a_panel_and_a_histogram_with_no_small_cells(heart_run: RunConfig) -> None:
    reply = _evaluate(heart_run, make_context(BUNDLED_NODE), "tune")
    metrics = dict(reply.content["metrics"])
    info = dict(reply.content[REPLY])
    # Accuracy is sent only when its error count is not a small cell; otherwise it is undefined.
    assert {"auroc", "auprc", "brier", "ece"} <= set(metrics)
    for key in ("accuracy", "balanced_accuracy"):
        assert key in metrics or key in info["undefined_metrics"]
    counts = list(info["hist_pos_counts"]) + list(info["hist_neg_counts"])
    assert sum(counts) == metrics["num-examples"]
    assert all(c == 0 or c >= 10 for c in counts)


def test_sealed_test_split_is_read_once_per_run(heart_run: RunConfig) -> None:
    ctx = make_context(BUNDLED_NODE)
    first = _evaluate(heart_run, ctx, "test")
    assert first.content[REPLY]["status"] == "ok"
    second = _evaluate(heart_run, ctx, "test")
    assert second.content[REPLY]["status"] == "refused"
    assert "sealed test split" in str(second.content[REPLY]["reason"])


def test_switzerland_prevalence_is_suppressed_under_the_minimum_cell(heart_run: RunConfig) -> None:
    # Switzerland has 8 negative patients in all: any split's negative count is under 10.
    reply = _evaluate(heart_run, make_context({"partition-id": 2, "num-partitions": 4}), "tune")
    assert reply.content[REPLY]["site"] == "switzerland"
    assert "prevalence" not in reply.content["metrics"]
    assert "prevalence" in list(reply.content[REPLY]["undefined_metrics"])


def test_dp_preprocessing_release_is_accounted_with_training() -> None:
    run = RunConfig.model_validate(
        {"rounds": 2, "preprocessing": {"source": "dp-aggregates", "epsilon_share": 0.2}}
    )
    ctx = make_context(BUNDLED_NODE)
    query = app(
        make_message(RecordDict({"config": wire_config(run, state_dir=STATE["dir"])}), "query"), ctx
    )
    info = dict(query.content[REPLY])
    assert info["status"] == "ok"
    aggregates = json.loads(str(info["preprocessing_aggregates"]))
    assert "num:age" in aggregates
    eps_pre = float(cast(float, info["epsilon"]))
    assert 0 < eps_pre <= run.privacy.target_epsilon * 0.2 + 0.01
    eps = 0.0
    for rnd in (1, 2):
        eps = float(_train(run, ctx, server_round=rnd).content[REPLY]["epsilon"])
    assert 0.8 * run.privacy.target_epsilon <= eps <= run.privacy.target_epsilon
    first = Ledger(Path(STATE["dir"]) / "cleveland").entries()[0]
    assert (first.kind, first.sample_rate, first.steps) == ("gaussian-release", 1.0, 1)


@pytest.mark.parametrize("split", ["train", "audit"])
def test_only_tune_and_test_can_be_evaluated(heart_run: RunConfig, split: str) -> None:
    reply = _evaluate(heart_run, make_context(BUNDLED_NODE), split)
    assert reply.content[REPLY]["status"] == "refused"
