"""The site's side of the baselines, controls and tuning: real Flower messages to the ClientApp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flwr.app import RecordDict

from fedward.client.app import app
from fedward.client.budget import SiteBudget
from fedward.client.egress_guard import EgressGuard, EgressPolicy
from fedward.client.ledger import Ledger
from fedward.client.privacy_transaction import plan_run
from fedward.common.evaluation_config import BASELINE_FAMILIES
from fedward.common.protocol import (
    ARRAYS_FEDERATED_LOGISTIC,
    KEY_BASELINES,
    KEY_PURPOSE,
    MSG_BASELINES,
    PURPOSE_RUN,
    PURPOSE_TUNING,
    REPLY,
)
from fedward.common.run_config import RunConfig
from fedward.common.site_config import PolicyConfig
from tests.conftest import initial_arrays, make_context, make_message, wire_config

NODE = {"partition-id": 0, "num-partitions": 4}  # Cleveland, 303 patients


def _extra(key: str, value: Any) -> dict[str, Any]:
    """One more config field for ``wire_config``, typed as its ``**extra``."""
    return {key: value}


def _baselines(
    run: RunConfig, ctx, state: Path, *, families=("logistic_regression",), budget=2, **extra
):
    content = RecordDict(
        {
            "arrays": initial_arrays(run),
            "config": wire_config(
                run,
                state_dir=str(state),
                **_extra(
                    KEY_BASELINES,
                    json.dumps({"families": list(families), "budget": budget, "search": "random"}),
                ),
            ),
            **extra,
        }
    )
    return app(make_message(content, MSG_BASELINES), ctx)


def _train(run: RunConfig, ctx, state: Path, *, run_id: str, purpose: str = PURPOSE_RUN):
    content = RecordDict(
        {
            "arrays": initial_arrays(run),
            "config": wire_config(
                run, state_dir=str(state), run_id=run_id, **_extra(KEY_PURPOSE, purpose)
            ),
        }
    )
    return app(make_message(content, "train"), ctx)


def test_baseline_reply_carries_only_metrics_and_passes_the_egress_guard(tmp_path: Path) -> None:
    run = RunConfig.model_validate({"rounds": 2, "evaluation": {"bootstrap": 50}})
    lr = initial_arrays(run)
    reply = _baselines(
        run,
        make_context(NODE),
        tmp_path,
        families=("logistic_regression", "knn", "naive_bayes"),
        **{ARRAYS_FEDERATED_LOGISTIC: lr},
    )
    info = dict(reply.content[REPLY])
    assert info["status"] == "ok", info
    assert not reply.content.array_records  # no fitted model, no weights, leaves the site
    EgressGuard(EgressPolicy(min_cell_size=10)).check(reply.content, site="cleveland")
    for family in ("logistic_regression", "knn", "naive_bayes"):
        key = f"baseline_{family}_"
        assert info[key + "status"] == "ok"
        assert 0.5 < info[key + "auroc"] <= 1.0
        assert info[key + "auroc_lo"] <= info[key + "auroc"] <= info[key + "auroc_hi"]
        assert info[key + "n_configurations"] == 2
        assert (
            info[key + "diff_auroc_lo"] <= info[key + "diff_auroc"] <= info[key + "diff_auroc_hi"]
        )
        json.loads(info[key + "params"])
    assert info["baseline_knn_memorises_rows"] is True
    assert info["baseline_logistic_regression_memorises_rows"] is False
    # The same untrained model on both sides: the paired difference is exactly 0.
    assert info["baseline_federated_logistic_diff_auroc"] == pytest.approx(0.0)
    # No row-level value of any kind: every value is a scalar, a short list of bins or JSON text.
    for key, value in info.items():
        if isinstance(value, list):
            assert len(value) <= 64, key


def test_sealed_test_split_is_read_once_by_the_baselines(tmp_path: Path) -> None:
    run = RunConfig.model_validate({"rounds": 2, "evaluation": {"bootstrap": 20}})
    ctx = make_context(NODE)
    assert _baselines(run, ctx, tmp_path).content[REPLY]["status"] == "ok"
    again = dict(_baselines(run, ctx, tmp_path).content[REPLY])
    assert again["status"] == "refused"
    assert "already read once" in again["reason"]


def test_unknown_family_is_refused_by_name(tmp_path: Path) -> None:
    run = RunConfig.model_validate({"rounds": 2, "evaluation": {"bootstrap": 20}})
    reply = _baselines(run, make_context(NODE), tmp_path, families=("deep_forest",))
    info = dict(reply.content[REPLY])
    assert info["status"] == "refused" and "unknown baseline family" in info["reason"]


def test_label_shuffle_trains_on_permuted_labels(tmp_path: Path) -> None:
    plain = RunConfig.model_validate({"rounds": 2, "evaluation": {"bootstrap": 20}})
    shuffled = RunConfig.model_validate(
        {**plain.model_dump(mode="json"), "training": {"shuffle_labels": True}}
    )
    assert plain.config_hash() != shuffled.config_hash()
    a = _train(plain, make_context(NODE), tmp_path / "a", run_id="r")
    b = _train(shuffled, make_context(NODE), tmp_path / "b", run_id="r")
    wa = a.content["arrays"].to_torch_state_dict()
    wb = b.content["arrays"].to_torch_state_dict()
    assert any(not (wa[k] == wb[k]).all() for k in wa)


def _budget(state: Path, *, simulated: bool) -> SiteBudget:
    return SiteBudget(
        Ledger(state / "cleveland"),
        PolicyConfig(total_epsilon=10.0),
        site="cleveland",
        dataset="heart-disease/cleveland",
        n_rows=303,
        simulated=simulated,
    )


def test_simulated_tuning_trials_are_recorded_but_not_held_against_the_budget(
    tmp_path: Path,
) -> None:
    # Tuning trials at ε=6 each until together they are over the lifetime budget of 10.
    run = RunConfig.model_validate(
        {"rounds": 1, "privacy": {"target_epsilon": 6.0}, "evaluation": {"bootstrap": 20}}
    )
    ctx = make_context(NODE)
    budget = _budget(tmp_path, simulated=True)
    for k in range(1, 7):
        info = dict(
            _train(run, ctx, tmp_path, run_id=f"t{k}", purpose=PURPOSE_TUNING).content[REPLY]
        )
        assert info["status"] == "ok", info
        assert info["purpose"] == PURPOSE_TUNING
        if budget.tuning_epsilon() > 10.0:
            break
    assert budget.tuning_epsilon() > 10.0
    assert budget.lifetime_epsilon() == pytest.approx(budget.tuning_epsilon())
    assert budget.enforced_lifetime_epsilon() == 0.0
    # The run itself is still held to the budget, and its reply states the tuning spend.
    info = dict(_train(run, ctx, tmp_path, run_id="final").content[REPLY])
    assert info["status"] == "ok", info
    assert info["epsilon_tuning"] == pytest.approx(budget.tuning_epsilon())
    assert info["epsilon"] <= 6.0 + 1e-6


def test_a_real_site_enforces_tuning_trials_like_any_run(tmp_path: Path) -> None:
    run = RunConfig.model_validate({"rounds": 1, "privacy": {"target_epsilon": 6.0}})
    budget = _budget(tmp_path, simulated=False)
    plan = plan_run(budget, run, run_id="t1", n_train=180, config_hash="h", purpose=PURPOSE_TUNING)
    spend = (plan.noise_multiplier, plan.sample_rate, plan.planned_steps)
    budget.ledger.append(
        dataset=budget.dataset,
        run_id="t1",
        round=1,
        attempt="a",
        kind="dp-sgd",
        noise_multiplier=spend[0],
        sample_rate=spend[1],
        steps=spend[2],
        delta=plan.run_delta,
    )
    assert budget.enforced_lifetime_epsilon() == pytest.approx(budget.lifetime_epsilon())
    assert budget.enforced_lifetime_epsilon() > 0


def test_every_family_has_wire_keys_on_the_allow_list() -> None:
    from fedward.client.reply_fields import REGISTRY

    for family in BASELINE_FAMILIES:
        for suffix in ("auroc", "hist_pos_counts", "diff_auroc_lo", "params", "status"):
            assert f"baseline_{family}_{suffix}" in REGISTRY
    assert "baseline_knn_test_scores" not in REGISTRY
    assert "baseline_knn_support_vectors" not in REGISTRY


def test_arrays_record_is_not_needed_for_the_suite_weights(tmp_path: Path) -> None:
    run = RunConfig.model_validate({"rounds": 2, "evaluation": {"bootstrap": 20}})
    content = RecordDict(
        {
            "config": wire_config(
                run,
                state_dir=str(tmp_path),
                **_extra(KEY_BASELINES, json.dumps({"families": ["naive_bayes"], "budget": 1})),
            )
        }
    )
    reply = app(make_message(content, MSG_BASELINES), make_context(NODE))
    info: dict[str, Any] = dict(reply.content[REPLY])
    assert info["status"] == "refused" and "no weights sent" in info["reason"]


def test_a_baselines_request_beyond_the_run_config_is_refused(tmp_path: Path) -> None:
    off = RunConfig.model_validate({"rounds": 2, "baselines": {"enabled": False}})
    info = dict(_baselines(off, make_context(NODE), tmp_path / "a").content[REPLY])
    assert info["status"] == "refused" and "switched off" in info["reason"]
    small = RunConfig.model_validate(
        {"rounds": 2, "tuning": {"budget": 1}, "evaluation": {"bootstrap": 20}}
    )
    info = dict(_baselines(small, make_context(NODE), tmp_path / "b", budget=5).content[REPLY])
    assert info["status"] == "refused" and "exceeds the run config" in info["reason"]
    only_lr = RunConfig.model_validate(
        {"rounds": 2, "baselines": {"families": ["logistic_regression"]}}
    )
    info = dict(
        _baselines(only_lr, make_context(NODE), tmp_path / "c", families=("knn",)).content[REPLY]
    )
    assert info["status"] == "refused" and "exceeds the run config" in info["reason"]
