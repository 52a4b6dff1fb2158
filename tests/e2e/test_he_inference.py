"""End to end: `fedward he serve` as a real process with TLS and API tokens, serving a model that
passed the release gate, and `fedward he predict` against it from a CSV of patients."""

from __future__ import annotations

import csv
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedward.client.he_predict import preprocess
from fedward.common.preprocessing import SharedTransform
from fedward.common.run_config import RunConfig
from tests.e2e.processes import BIN, ProcessGroup, flower_env, free_port, wait_for_port
from tests.server.he_support import heart_disease_test_rows
from tests.tls import TLS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated"),
]
FEDWARD = str(BIN / "fedward")


def _fedward(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FEDWARD, *args], env=env, capture_output=True, text=True, timeout=300, check=check
    )


def test_a_clinic_gets_encrypted_predictions_from_a_released_model(
    he_release: Path, tls_files: TLS, tmp_path: Path
) -> None:
    env = flower_env(tmp_path / "flwr")
    clients = tmp_path / "clients.toml"
    added = _fedward(
        "he",
        "add-client",
        "clinic-north",
        "--clients",
        str(clients),
        "--query-budget",
        "1000",
        env=env,
    )
    token = added.stdout.strip().splitlines()[-1]
    assert len(token) > 30 and token not in clients.read_text()  # stored only as a hash
    (tmp_path / "token.txt").write_text(token)

    # The clinic's patients: every hospital's sealed test split, raw, with an id column.
    run = RunConfig.model_validate_json(
        (he_release.parent.parent / "run" / "run_config.json").read_text()
    )
    frames = heart_disease_test_rows(run)
    patients = []
    for site, frame in frames.items():
        frame = frame.copy()
        frame.insert(0, "patient_id", [f"{site}-{i}" for i in range(len(frame))])
        patients.append(frame)
    table = pd.concat(patients, ignore_index=True)
    data = tmp_path / "patients.csv"
    table.to_csv(data, index=False)

    port, metrics = free_port(), free_port()
    group = ProcessGroup()
    try:
        server = group.start(
            [
                FEDWARD,
                "he",
                "serve",
                "--model",
                str(he_release),
                "--listen",
                f"127.0.0.1:{port}",
                "--tls-cert",
                str(tls_files.cert),
                "--tls-key",
                str(tls_files.key),
                "--clients",
                str(clients),
                "--state",
                str(tmp_path / "he-state"),
                "--max-batch",
                "100",
                "--metrics-port",
                str(metrics),
            ],
            env=env,
            log=tmp_path / "serve.log",
        )
        wait_for_port(port, timeout=120)
        out = tmp_path / "predictions.csv"
        asked: list[subprocess.Popen[str]] = []

        def predict(data: Path, out: Path, token: Path, *extra: str) -> subprocess.Popen[str]:
            """`fedward he predict` against the running server, started now."""
            proc = subprocess.Popen(
                [
                    *(FEDWARD, "he", "predict", "--server", f"127.0.0.1:{port}"),
                    *("--data", str(data), "--out", str(out), "--ca-cert", str(tls_files.ca)),
                    *("--token-file", str(token), *extra),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            asked.append(proc)
            return proc

        def finished(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
            stdout, stderr = proc.communicate(timeout=300)
            return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

        # Three clinic commands at once (each spends seconds starting): the real request, a CSV
        # without a model column and a wrong token.
        broken = tmp_path / "broken.csv"
        table.drop(columns=["age"]).to_csv(broken, index=False)
        (tmp_path / "bad.txt").write_text("not-the-token")
        started = (
            predict(data, out, tmp_path / "token.txt", "--id-column", "patient_id"),
            predict(broken, tmp_path / "never-broken.csv", tmp_path / "token.txt"),
            predict(data, tmp_path / "never-denied.csv", tmp_path / "bad.txt"),
        )
        result, refused, denied = (finished(proc) for proc in started)

        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{len(table)} predictions written" in result.stderr
        with out.open() as fh:
            rows = list(csv.DictReader(fh))
        assert [r["patient_id"] for r in rows] == table["patient_id"].tolist()

        # The same model in plaintext, from the release's own TorchScript file.
        transform = SharedTransform.from_json((he_release / "transform.json").read_text())
        x = preprocess(transform, table, source="patients")
        module = torch.jit.load(str(he_release / "model.ts"))
        with torch.no_grad():
            reference = torch.sigmoid(module(torch.from_numpy(x))).double().numpy()[:, 0]
        encrypted = np.array([float(r["probability"]) for r in rows])
        assert np.abs(encrypted - reference).max() <= 1e-3
        clear = np.abs(reference - 0.5) > 1e-3
        predicted = np.array([int(r["predicted_class"]) for r in rows])
        assert (predicted == (reference >= 0.5))[clear].all()

        # A CSV without a model column is refused naming it; the server serves on.
        assert refused.returncode != 0
        assert "missing column(s) age" in " ".join(refused.stderr.split())  # rich wraps lines
        assert not (tmp_path / "never-broken.csv").exists()

        # A wrong token is refused by the running server with its gRPC status.
        assert denied.returncode != 0 and "UNAUTHENTICATED" in denied.stderr
        assert not (tmp_path / "never-denied.csv").exists()

        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read()
        text = scraped.decode()
        assert f"fedward_he_predictions_total {float(len(table))}" in text
        assert 'fedward_he_errors_total{code="UNAUTHENTICATED",method="GetModelInfo"} 1.0' in text
        assert server.poll() is None
    finally:
        for proc in asked:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        group.stop()
    log = (tmp_path / "serve.log").read_text()
    assert "with TLS" in log and "model.ts" not in log
    lines = (tmp_path / "he-state" / "he_requests.jsonl").read_text().splitlines()
    assert any(
        '"method": "Predict"' in line and '"client": "clinic-north"' in line for line in lines
    )


def test_serving_refuses_an_unreleased_folder_passed_as_a_release(
    he_runs: dict[str, Path], tmp_path: Path
) -> None:
    env = flower_env(tmp_path / "flwr")
    result = _fedward(
        "he",
        "serve",
        "--model",
        str(he_runs["logistic"]),
        "--insecure",
        "--no-auth",
        env=env,
        check=False,
    )
    assert result.returncode != 0
    assert "not a release" in result.stderr and "--unreleased-run" in result.stderr
