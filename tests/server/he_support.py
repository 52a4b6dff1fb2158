"""Shared by the encrypted-inference tests and benchmark: TLS files, trained models, test splits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedward.client.app import app
from fedward.client.site import _from_bundled, prepare
from fedward.common.evaluation_config import AuditConfig, BaselinesConfig, EvaluationConfig
from fedward.common.learning_config import ModelConfig
from fedward.common.run_config import RunConfig, run_schema
from fedward.server.app import coordinate
from fedward.server.coordinator_settings import CoordinatorSettings
from tests.server.loopback import LoopbackGrid, as_grid, server_context


def he_run_config(kind: str, rounds: int = 4) -> RunConfig:
    model = (
        ModelConfig(kind="logistic", he_compatible=True)
        if kind == "logistic"
        else ModelConfig(kind="mlp", hidden=[16], he_compatible=True)
    )
    return RunConfig(
        rounds=rounds,
        model=model,
        evaluation=EvaluationConfig(bootstrap=20),
        baselines=BaselinesConfig(enabled=False),
        audit=AuditConfig(enabled=False),
    )


def train_run(kind: str, folder: Path, rounds: int = 4) -> Path:
    """A finished DP federation of the four heart-disease hospitals, in-process (no Ray)."""
    settings = CoordinatorSettings(
        run=he_run_config(kind, rounds), run_dir=str(folder), engine="simulation"
    )
    return coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings).path


def heart_disease_test_rows(run: RunConfig) -> dict[str, pd.DataFrame]:
    """Each hospital's sealed test split, raw, as the run split it."""
    schema = run_schema(run)
    rows = {}
    for index in range(4):
        site = _from_bundled(run, index, 4)
        prepared = prepare(site, run, schema)
        frame, _ = prepared.rows("test")
        rows[site.name] = frame.reset_index(drop=True)
    return rows


def released_logistic(folder: Path) -> Path:
    """Train with the audit on, then sign off and export: the path a real model takes."""
    from fedward.server.release import release
    from fedward.server.release_signoff import sign_off

    run = RunConfig(
        rounds=4,
        model=ModelConfig(kind="logistic", he_compatible=True),
        evaluation=EvaluationConfig(bootstrap=20),
        baselines=BaselinesConfig(enabled=False),
        audit=AuditConfig(reference_models=2),
    )
    settings = CoordinatorSettings(run=run, run_dir=str(folder / "run"), engine="simulation")
    path = coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings).path
    sign_off(path, by="Dr. Ada Byron", role="privacy officer", note="read the card")
    return release(path, folder / "releases", by="release manager")
