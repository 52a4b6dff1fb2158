"""The comparison app for the foundation benchmark: plain Flower + Opacus, no fedward.

The shape of Flower's own Opacus example (``examples/opacus`` in the Flower repository), moved onto
Flower's Message API and the four heart-disease hospitals:

* each ClientApp call loads its hospital's rows, splits them 80/20 into train/test (stratified, as
  the example's ``train_test_split(test_size=0.2, seed=...)``), one-hot encodes the categories with
  ``pandas.get_dummies`` aligned to a fixed column list, imputes missing numbers with its own
  training median and standardises with a ``StandardScaler`` fitted on its OWN training split
  (every site standardises alone; that is what the benchmark compares against fedward's one
  shared transform);
* every round it builds a torch ``DataLoader``, wraps model, optimizer and loader with
  ``PrivacyEngine.make_private_with_epsilon(target_epsilon=1, epochs=1, ...)`` as the example does
  (so ε = 1 is spent per round, not per run) and trains one local epoch;
* the server runs ``flwr.serverapp.strategy.FedAvg`` for 20 rounds, evaluating every site's test
  split after each round, in ``flwr.simulation.run_simulation`` with 4 supernodes and the same Ray
  backend config as ``fedward simulate``.

Model and optimiser match fedward's defaults (logistic regression, SGD lr 0.5, batch 64, clipping
norm 1.0), so the pipeline is the only difference. The only thing taken from fedward is the
bundled data file.

Run: ``python -m tests.benchmarks.plain_flower_opacus --seed 0``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from collections.abc import Iterable
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HOSPITALS = ("Cleveland", "Hungary", "Switzerland", "VA Long Beach")
NUMERIC = ("age", "trestbps", "chol", "thalch", "oldpeak")
CATEGORICAL = ("sex", "cp", "fbs", "restecg", "exang", "slope")
# get_dummies output is aligned to this fixed list, so every site has the same input layout.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "sex": ("Male", "Female"),
    "cp": ("typical angina", "atypical angina", "non-anginal", "asymptomatic"),
    "fbs": ("FALSE", "TRUE"),
    "restecg": ("normal", "st-t abnormality", "lv hypertrophy"),
    "exang": ("FALSE", "TRUE"),
    "slope": ("upsloping", "flat", "downsloping"),
}
COLUMNS: tuple[str, ...] = (
    *NUMERIC,
    *(f"{c}_{v}" for c in CATEGORICAL for v in CATEGORIES[c]),
)

ROUNDS = 20
BATCH_SIZE = 64
LEARNING_RATE = 0.5
MAX_GRAD_NORM = 1.0
TARGET_EPSILON_PER_ROUND = 1.0
TARGET_DELTA = 1e-5
TEST_SIZE = 0.2

_RESULTS: dict[str, Any] = {}
_LAST_EVAL: dict[int, dict[str, float]] = {}
_HISTORY: dict[int, list[tuple[float, float, int]]] = {}


# ---- the site's data: its own split, its own standardisation ----


def _hospital_rows(partition_id: int) -> pd.DataFrame:
    with resources.files("fedward.common.datasets").joinpath("heart_disease_uci.csv").open() as fh:
        table = pd.read_csv(fh, dtype=str)
    return table[table["dataset"] == HOSPITALS[partition_id]].reset_index(drop=True)


def _encode(frame: pd.DataFrame) -> pd.DataFrame:
    numeric = frame[list(NUMERIC)].apply(pd.to_numeric, errors="coerce")
    dummies = pd.get_dummies(frame[list(CATEGORICAL)], columns=list(CATEGORICAL), dtype=float)
    return pd.concat([numeric, dummies], axis=1).reindex(columns=list(COLUMNS), fill_value=0.0)


def load_site(
    partition_id: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test features and 0/1 labels of one hospital, preprocessed with its own statistics."""
    rows = _hospital_rows(partition_id)
    y = (pd.to_numeric(rows["num"]) > 0).to_numpy(dtype=np.float32)
    x = _encode(rows)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=seed
    )
    medians = x_train[list(NUMERIC)].median().fillna(0.0)
    x_train = x_train.fillna(medians)
    x_test = x_test.fillna(medians)
    scaler = StandardScaler().fit(x_train[list(NUMERIC)])
    x_train[list(NUMERIC)] = scaler.transform(x_train[list(NUMERIC)])
    x_test[list(NUMERIC)] = scaler.transform(x_test[list(NUMERIC)])
    return (
        x_train.to_numpy(dtype=np.float32),
        y_train,
        x_test.to_numpy(dtype=np.float32),
        y_test,
    )


def build_net() -> nn.Module:
    return nn.Sequential(nn.Linear(len(COLUMNS), 1))


# ---- ClientApp ----


def _number(record: MetricRecord | ConfigRecord, key: str) -> float:
    value = record[key]
    if not isinstance(value, int | float):
        raise TypeError(f"record entry '{key}' is not a number: {value!r}")
    return float(value)


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    partition_id = int(context.node_config["partition-id"])
    config = msg.content.config_records["config"]
    seed = int(_number(config, "seed"))
    x_train, y_train, _, _ = load_site(partition_id, seed)
    torch.manual_seed(seed * 1000 + int(_number(config, "server-round")) * 10 + partition_id)

    model = build_net()
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        batch_size=BATCH_SIZE,
        shuffle=True,
    )
    engine = PrivacyEngine(secure_mode=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        private_model, optimizer, loader = engine.make_private_with_epsilon(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            target_epsilon=TARGET_EPSILON_PER_ROUND,
            target_delta=TARGET_DELTA,
            epochs=1,
            max_grad_norm=MAX_GRAD_NORM,
        )
        criterion = nn.BCEWithLogitsLoss()
        private_model.train()
        losses: list[float] = []
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = criterion(private_model(xb).reshape(-1), yb)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    (sigma, q, steps) = engine.accountant.history[-1]
    metrics = MetricRecord(
        {
            "train_loss": float(np.mean(losses)) if losses else 0.0,
            "num-examples": len(y_train),
            "partition-id": partition_id,
            "noise_multiplier": float(sigma),
            "sample_rate": float(q),
            "steps": int(steps),
            "epsilon_round": float(engine.get_epsilon(TARGET_DELTA)),
        }
    )
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    partition_id = int(context.node_config["partition-id"])
    seed = int(_number(msg.content.config_records["config"], "seed"))
    _, _, x_test, y_test = load_site(partition_id, seed)
    model = build_net()
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x_test)).reshape(-1)
        loss = float(
            nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y_test))
        )
    scores = torch.sigmoid(logits).numpy()
    accuracy = float(((scores >= 0.5) == (y_test == 1)).mean())
    metrics = MetricRecord(
        {
            "eval_loss": loss,
            "eval_acc": accuracy,
            "eval_auroc": float(roc_auc_score(y_test, scores)),
            "num-examples": len(y_test),
            "partition-id": partition_id,
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


# ---- ServerApp ----


def _keep_per_site(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """FedAvg's weighted mean, remembering each site's values (the last call is the final round)."""
    _LAST_EVAL.clear()
    for r in records:
        m = r.metric_records["metrics"]
        _LAST_EVAL[int(_number(m, "partition-id"))] = {
            "accuracy": _number(m, "eval_acc"),
            "auroc": _number(m, "eval_auroc"),
            "n": _number(m, "num-examples"),
        }
    return aggregate_metricrecords(records, weighting_key)


def _keep_dp(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """FedAvg's weighted mean, recording each site's DP steps for its whole-run ε."""
    for r in records:
        m = r.metric_records["metrics"]
        _HISTORY.setdefault(int(_number(m, "partition-id")), []).append(
            (_number(m, "noise_multiplier"), _number(m, "sample_rate"), int(_number(m, "steps")))
        )
    return aggregate_metricrecords(records, weighting_key)


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    seed = int(_RESULTS["seed"])
    torch.manual_seed(seed)
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=len(HOSPITALS),
        min_evaluate_nodes=len(HOSPITALS),
        min_available_nodes=len(HOSPITALS),
        train_metrics_aggr_fn=_keep_dp,
        evaluate_metrics_aggr_fn=_keep_per_site,
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(build_net().state_dict()),
        num_rounds=int(_RESULTS.get("rounds", ROUNDS)),
        train_config=ConfigRecord({"seed": seed}),
        evaluate_config=ConfigRecord({"seed": seed}),
    )
    _RESULTS["federation_s"] = time.perf_counter() - started


def _whole_run_epsilon(history: Iterable[tuple[float, float, int]]) -> float:
    """ε of all rounds together (RDP, as Opacus's PrivacyEngine accounts one round)."""
    acc = RDPAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(TARGET_DELTA))


def main(seed: int, rounds: int = ROUNDS) -> dict[str, Any]:
    """Run the 4-hospital federation once; print and return a JSON-safe summary."""
    from flwr.simulation import run_simulation

    started = time.perf_counter()
    for key, value in {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }.items():
        os.environ.setdefault(key, value)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    _RESULTS.clear()
    _LAST_EVAL.clear()
    _HISTORY.clear()
    _RESULTS["seed"] = seed
    _RESULTS["rounds"] = rounds
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=len(HOSPITALS),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": max(1, os.cpu_count() or 1),
                "include_dashboard": False,
                "logging_level": "error",
            },
        },
    )
    wall = time.perf_counter() - started
    if len(_LAST_EVAL) != len(HOSPITALS):
        raise RuntimeError(f"only {len(_LAST_EVAL)} of {len(HOSPITALS)} sites evaluated")
    sites = {HOSPITALS[pid]: v for pid, v in sorted(_LAST_EVAL.items())}
    summary: dict[str, Any] = {
        "seed": seed,
        "wall_s": round(wall, 3),
        "federation_s": round(float(_RESULTS.get("federation_s", float("nan"))), 3),
        "rounds": rounds,
        "mean_accuracy": float(np.mean([s["accuracy"] for s in sites.values()])),
        "mean_auroc": float(np.mean([s["auroc"] for s in sites.values()])),
        "sites": sites,
        "epsilon_per_round": TARGET_EPSILON_PER_ROUND,
        "delta": TARGET_DELTA,
        "epsilon_whole_run": {
            HOSPITALS[pid]: _whole_run_epsilon(h) for pid, h in sorted(_HISTORY.items())
        },
    }
    print(json.dumps(summary))
    return summary


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    main(args.seed, args.rounds)


if __name__ == "__main__":
    _cli()
