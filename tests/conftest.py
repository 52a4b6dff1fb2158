"""Shared test helpers: real Flower messages and contexts, and the run's wire config."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

from fedward.common.evaluation_config import EvaluationConfig
from fedward.common.models import build_model
from fedward.common.preprocessing import SharedTransform
from fedward.common.protocol import (
    KEY_RUN,
    KEY_RUN_ID,
    KEY_SCHEMA,
    KEY_SIM_SITES,
    KEY_SIM_STATE,
    KEY_TRANSFORM,
)
from fedward.common.run_config import RunConfig, run_schema

for _key, _value in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}.items():
    os.environ.setdefault(_key, _value)


def make_message(content: RecordDict, message_type: str, dst_node_id: int = 1) -> Message:
    """An instruction message as the SuperLink would deliver it to a node."""
    meta = Metadata(
        run_id=1,
        message_id=uuid.uuid4().hex,
        src_node_id=0,
        dst_node_id=dst_node_id,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return Message(content=content, metadata=meta)  # type: ignore[call-overload]


def make_context(node_config: dict[str, Any], node_id: int = 1) -> Context:
    return Context(
        run_id=1, node_id=node_id, node_config=node_config, state=RecordDict(), run_config={}
    )


def wire_config(
    run: RunConfig,
    *,
    server_round: int = 1,
    sim_sites: list[str] | None = None,
    state_dir: str | None = None,
    run_id: str = "run-1",
    **extra: Any,
) -> ConfigRecord:
    schema = run_schema(run)
    transform = SharedTransform.from_schema(schema)
    return ConfigRecord(
        {
            KEY_RUN: run.to_json(),
            KEY_SCHEMA: schema.model_dump_json(),
            KEY_SIM_SITES: json.dumps(sim_sites or []),
            KEY_TRANSFORM: json.dumps(transform.to_dict()),
            KEY_RUN_ID: run_id,
            "server-round": server_round,
            **({KEY_SIM_STATE: state_dir} if state_dir else {}),
            **extra,
        }
    )


def append_releases(ledger: Any, n: int, *, dataset: str = "ds", run_id: str = "r1") -> None:
    """``n`` DP-SGD releases appended by the ledger itself (so chained and anchored)."""
    for i in range(n):
        ledger.append(
            dataset=dataset,
            run_id=run_id,
            round=i + 1,
            attempt=f"a{i}",
            kind="dp-sgd",
            noise_multiplier=1.1,
            sample_rate=0.05,
            steps=20,
            delta=1e-5,
            max_grad_norm=1.0,
        )


def initial_arrays(run: RunConfig) -> ArrayRecord:
    schema = run_schema(run)
    transform = SharedTransform.from_schema(schema)
    model = build_model(run.model, transform.n_outputs, schema.image_shape, seed=run.seed)
    return ArrayRecord(model.state_dict())


@pytest.fixture
def heart_run() -> RunConfig:
    return RunConfig(rounds=3, evaluation=EvaluationConfig(bootstrap=50))


# ---- encrypted inference: trained models, made once per session and only when asked for ----


@pytest.fixture(scope="session")
def he_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Finished heart-disease DP federations with HE-compatible models: logistic and MLP 16²."""
    from tests.server.he_support import train_run

    root = tmp_path_factory.mktemp("he-runs")
    return {kind: train_run(kind, root / kind) for kind in ("logistic", "mlp")}


@pytest.fixture(scope="session")
def he_release(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A logistic model that went through the release gate: audit, card, sign-off, export."""
    from tests.server.he_support import released_logistic

    return released_logistic(tmp_path_factory.mktemp("he-release"))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.tls import make_tls

    return make_tls(tmp_path_factory.mktemp("tls"))
