"""The encrypted-inference service over real gRPC with TLS on loopback: what it answers, what it
refuses, and that it keeps serving everyone else after every refusal."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tenseal as ts

from fedward.client.he_predict import EncryptedPredictor, HEServiceError, channel
from fedward.common import he_inference_pb2 as pb
from fedward.common import he_inference_pb2_grpc as pb_grpc
from fedward.common.errors import ConfigError
from fedward.common.he_context import new_secret_context, public_context_bytes
from fedward.common.he_params import CKKSParameters, parameters_for_depth
from fedward.server.he_access import Access, LimitReached, add_client, load_clients
from fedward.server.he_model import HEModel, load_run_model
from fedward.server.he_service import (
    EncryptedInferenceService,
    ServiceSettings,
    TLSFiles,
    start_server,
)
from tests.tls import TLS

MiB = 1 << 20


@dataclass
class Served:
    address: str
    tls: TLS
    tokens: dict[str, str]
    service: EncryptedInferenceService
    model: HEModel
    state: Path
    server: grpc.Server

    def predictor(self, client: str = "clinic-a") -> EncryptedPredictor:
        return EncryptedPredictor(self.channel(), token=self.tokens[client])

    def channel(self) -> grpc.Channel:
        return channel(self.address, ca_certificate=self.tls.ca)

    def stub(self) -> pb_grpc.EncryptedInferenceStub:
        return pb_grpc.EncryptedInferenceStub(self.channel())

    def meta(self, client: str = "clinic-a") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[client]}"),)


def _serve(
    model: HEModel, tls: TLS, folder: Path, settings: ServiceSettings, budgets: dict[str, int]
) -> Served:
    clients_file = folder / "clients.toml"
    tokens = {
        name: add_client(clients_file, name, query_budget=budget, requests_per_minute=10_000)
        for name, budget in budgets.items()
    }
    tokens["slow-clinic"] = add_client(
        clients_file, "slow-clinic", query_budget=None, requests_per_minute=2
    )
    access = Access.open(load_clients(clients_file), folder / "state")
    service = EncryptedInferenceService(model, access, settings)
    server, port = start_server(service, "127.0.0.1:0", tls=TLSFiles(tls.cert, tls.key))
    return Served(f"127.0.0.1:{port}", tls, tokens, service, model, folder / "state", server)


@pytest.fixture(scope="module")
def lr_model(he_runs: dict[str, Path]) -> HEModel:
    return load_run_model(he_runs["logistic"])


@pytest.fixture(scope="module")
def served(
    lr_model: HEModel, tls_files: TLS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    settings = ServiceSettings(max_batch=1000, max_request_bytes=16 * MiB)
    s = _serve(
        lr_model,
        tls_files,
        tmp_path_factory.mktemp("he-service"),
        settings,
        {"clinic-a": 10**7, "clinic-b": 10**7, "thrifty": 30},
    )
    yield s
    s.server.stop(None).wait()


def _x(model: HEModel, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, model.n_features))


def _still_serving(served: Served) -> None:
    x = _x(served.model, 5, seed=99)
    with served.predictor() as p:
        np.testing.assert_allclose(p.logits(x), served.model.plaintext_logits(x), atol=1e-4)


# ---- what it answers ---------------------------------------------------------------------------


def test_predictions_over_tls_match_the_plaintext_model(served: Served) -> None:
    x = _x(served.model, 2500)  # three requests of at most 1,000
    with served.predictor() as p:
        assert p.info.feature_names == served.model.feature_names
        assert p.info.parameters == served.model.parameters
        assert not p.info.released
        logits = p.logits(x)
    np.testing.assert_allclose(logits, served.model.plaintext_logits(x), atol=1e-4)


def test_the_context_can_travel_with_a_single_request(served: Served) -> None:
    x = _x(served.model, 3)
    p = served.predictor()
    np.testing.assert_allclose(
        p.logits(x, with_context=True), served.model.plaintext_logits(x), atol=1e-4
    )


def test_a_client_without_the_ca_cannot_connect(served: Served) -> None:
    plain = grpc.insecure_channel(served.address)
    with pytest.raises(grpc.RpcError) as err:
        pb_grpc.EncryptedInferenceStub(plain).GetModelInfo(
            pb.ModelInfoRequest(), metadata=served.meta(), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


# ---- bad input: each a clear status, and the server goes on -------------------------------------


def _predict_request(served: Served, n: int = 4) -> tuple[pb.PredictRequest, ts.Context]:
    ctx = new_secret_context(served.model.parameters)
    x = _x(served.model, n)
    features = [ts.ckks_vector(ctx, x[:, j].tolist()).serialize() for j in range(x.shape[1])]
    request = pb.PredictRequest(
        n_patients=n,
        features=features,
        public_context=public_context_bytes(ctx, served.model.parameters),
    )
    return request, ctx


def _status(
    served: Served, request: pb.PredictRequest, client: str = "clinic-a"
) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as err:
        served.stub().Predict(request, metadata=served.meta(client), timeout=30)
    return err.value.code().name, err.value.details() or ""


def _refused(served: Served, request: pb.PredictRequest, code: str, match: str) -> None:
    got, details = _status(served, request)
    assert got == code, details
    assert match in details, details
    _still_serving(served)


def test_a_malformed_ciphertext_is_refused_naming_the_feature(served: Served) -> None:
    request, _ = _predict_request(served)
    request.features[3] = b"\x00garbage" * 50
    _refused(served, request, "INVALID_ARGUMENT", f"feature 3 ('{served.model.feature_names[3]}')")


def test_a_truncated_ciphertext_is_refused(served: Served) -> None:
    request, _ = _predict_request(served)
    request.features[0] = request.features[0][: len(request.features[0]) // 2]
    _refused(served, request, "INVALID_ARGUMENT", "feature 0")


def test_a_ciphertext_under_other_parameters_is_refused(served: Served) -> None:
    request, _ = _predict_request(served)
    other = new_secret_context(parameters_for_depth(3))
    request.features[1] = ts.ckks_vector(other, [0.0] * 4).serialize()
    _refused(served, request, "INVALID_ARGUMENT", "feature 1")


def test_a_context_with_the_wrong_parameters_is_refused(served: Served) -> None:
    request, _ = _predict_request(served)
    params = CKKSParameters(8192, (60, 40, 40, 60))
    request.public_context = public_context_bytes(new_secret_context(params), params)
    _refused(served, request, "INVALID_ARGUMENT", "wrong CKKS parameters")


def test_a_context_with_a_secret_key_is_refused_and_the_key_called_burnt(served: Served) -> None:
    request, ctx = _predict_request(served)
    request.public_context = ctx.serialize(save_secret_key=True)
    _refused(served, request, "INVALID_ARGUMENT", "includes a secret key")


def test_a_context_that_is_not_one_is_refused(served: Served) -> None:
    request, _ = _predict_request(served)
    request.public_context = b"not a context at all"
    _refused(served, request, "INVALID_ARGUMENT", "not a TenSEAL context")


def test_a_wrong_feature_count_is_refused(served: Served) -> None:
    request, _ = _predict_request(served)
    del request.features[-1]
    _refused(
        served,
        request,
        "INVALID_ARGUMENT",
        f"takes {served.model.n_features} features (one ciphertext each), the request has "
        f"{served.model.n_features - 1}",
    )


def test_a_patient_count_that_does_not_match_the_ciphertexts_is_refused(served: Served) -> None:
    request, _ = _predict_request(served, n=4)
    request.n_patients = 3
    _refused(served, request, "INVALID_ARGUMENT", "holds 4 values, n_patients is 3")


def test_an_oversized_batch_is_refused(served: Served) -> None:
    request, _ = _predict_request(served, n=4)
    request.n_patients = 1001
    _refused(served, request, "RESOURCE_EXHAUSTED", "over this server's maximum of 1000")


def test_an_oversized_message_is_refused_by_size(served: Served) -> None:
    request, _ = _predict_request(served, n=4)
    request.features.append(b"x" * (17 * MiB))
    _refused(served, request, "RESOURCE_EXHAUSTED", "")


def test_no_token_or_a_wrong_one_is_unauthenticated(served: Served) -> None:
    stub = served.stub()
    for meta in ((), (("authorization", "Bearer not-a-token"),)):
        with pytest.raises(grpc.RpcError) as err:
            stub.GetModelInfo(pb.ModelInfoRequest(), metadata=meta, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    _still_serving(served)


def test_a_session_belongs_to_the_client_that_opened_it(served: Served) -> None:
    with served.predictor("clinic-a") as a:
        session = a.open_session()
        request, _ = _predict_request(served)
        request.public_context = b""
        request.session_id = session
        code, details = _status(served, request, client="clinic-b")
        assert code == "NOT_FOUND", details
    _still_serving(served)


def test_the_rate_limit_refuses_a_client_that_asks_too_often(served: Served) -> None:
    stub = served.stub()
    codes = []
    for _ in range(4):
        try:
            stub.GetModelInfo(pb.ModelInfoRequest(), metadata=served.meta("slow-clinic"), timeout=5)
            codes.append("OK")
        except grpc.RpcError as exc:
            codes.append(exc.code().name)
            assert "rate limit of 2 requests per minute" in (exc.details() or "")
    assert codes[:2] == ["OK", "OK"] and codes[2:] == ["RESOURCE_EXHAUSTED"] * 2
    _still_serving(served)


def test_the_query_budget_is_charged_per_declared_patient_and_enforced(served: Served) -> None:
    p = served.predictor("thrifty")
    assert p.info.budget_remaining == 30
    p.logits(_x(served.model, 20))
    assert p.info.budget_remaining == 10
    with pytest.raises(HEServiceError, match=r"RESOURCE_EXHAUSTED.*budget exhausted \(20 of 30"):
        p.logits(_x(served.model, 11))
    p.logits(_x(served.model, 10))
    assert p.info.budget_remaining == 0
    _still_serving(served)


def test_the_request_log_records_every_request_without_content(served: Served) -> None:
    _still_serving(served)
    lines = [json.loads(x) for x in (served.state / "he_requests.jsonl").read_text().splitlines()]
    predicts = [x for x in lines if x["method"] == "Predict"]
    assert predicts and all(
        {"at", "client", "code", "seconds", "request_id"} <= x.keys() for x in predicts
    )
    assert {"OK", "INVALID_ARGUMENT"} <= {x["code"] for x in predicts}
    assert all(
        set(x)
        <= {
            "at",
            "request_id",
            "method",
            "client",
            "code",
            "seconds",
            "error",
            "n_patients",
            "n_features",
            "request_bytes",
            "reply_bytes",
        }
        for x in lines
    )
    assert max(len(json.dumps(x)) for x in lines) < 2000  # no ciphertext ever lands in the log


# ---- metrics, noise, persistence ---------------------------------------------------------------


def test_metrics_count_requests_errors_and_latency(served: Served) -> None:
    from prometheus_client import start_http_server

    server, thread = start_http_server(
        0, addr="127.0.0.1", registry=served.service.metrics.registry
    )
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"

        def scrape() -> dict[str, float]:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            out = {}
            for line in text.splitlines():
                if line.startswith("fedward_he_") and " " in line:
                    key, value = line.rsplit(" ", 1)
                    out[key] = float(value)
            return out

        before = scrape()
        _still_serving(served)
        request, _ = _predict_request(served)
        request.features[0] = b"junk"
        _status(served, request)
        after = scrape()
        ok = 'fedward_he_requests_total{code="OK",method="Predict"}'
        bad = 'fedward_he_errors_total{code="INVALID_ARGUMENT",method="Predict"}'
        assert after[ok] > before.get(ok, 0.0)
        assert after[bad] > before.get(bad, 0.0)
        assert after["fedward_he_predictions_total"] >= before["fedward_he_predictions_total"] + 5
        assert after['fedward_he_request_seconds_count{method="Predict"}'] > before.get(
            'fedward_he_request_seconds_count{method="Predict"}', 0.0
        )
    finally:
        server.shutdown()
        thread.join(5)


def test_logit_noise_is_added_under_encryption(
    lr_model: HEModel, tls_files: TLS, tmp_path: Path
) -> None:
    s = _serve(lr_model, tls_files, tmp_path, ServiceSettings(logit_noise=0.5), {"clinic-a": 10**6})
    try:
        x = _x(lr_model, 2000)
        with s.predictor() as p:
            assert p.info.logit_noise == 0.5
            diff = p.logits(x) - lr_model.plaintext_logits(x)
        assert 0.45 < float(np.std(diff)) < 0.55
    finally:
        s.server.stop(None).wait()


def test_a_restart_remembers_what_each_client_spent(
    lr_model: HEModel, tls_files: TLS, tmp_path: Path
) -> None:
    s = _serve(lr_model, tls_files, tmp_path, ServiceSettings(), {"clinic-a": 50})
    s.predictor().logits(_x(lr_model, 40))
    s.server.stop(None).wait()
    access = Access.open(load_clients(tmp_path / "clients.toml"), tmp_path / "state")
    service = EncryptedInferenceService(lr_model, access)
    server, port = start_server(service, "127.0.0.1:0", tls=TLSFiles(tls_files.cert, tls_files.key))
    try:
        p = EncryptedPredictor(
            channel(f"127.0.0.1:{port}", ca_certificate=tls_files.ca), token=s.tokens["clinic-a"]
        )
        assert p.info.budget_remaining == 10
        with pytest.raises(HEServiceError, match="budget exhausted"):
            p.logits(_x(lr_model, 11))
    finally:
        server.stop(None).wait()


def test_the_usage_ledger_is_append_only(served: Served) -> None:
    import sqlite3

    db = sqlite3.connect(served.state / "he_usage.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM usage")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE usage SET n_patients = 0")
    db.close()


def test_a_bad_clients_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "clients.toml"
    bad.write_text('[[client]]\nname = "a"\ntoken_sha256 = "abc"\n')
    with pytest.raises(ConfigError, match=r"client\.0\.token_sha256"):
        load_clients(bad)
    bad.write_text('[[client]]\nname = "a"\ntoken_sha256 = "' + "0" * 64 + '"\nbudget = 3\n')
    with pytest.raises(ConfigError, match=r"client\.0\.budget"):
        load_clients(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_clients(tmp_path / "missing.toml")


def test_mutual_tls_refuses_a_client_without_a_certificate(
    lr_model: HEModel, tls_files: TLS, tmp_path: Path
) -> None:
    access = Access.open({}, tmp_path / "state")
    service = EncryptedInferenceService(lr_model, access, ServiceSettings(require_token=False))
    server, port = start_server(
        service,
        "127.0.0.1:0",
        tls=TLSFiles(tls_files.cert, tls_files.key, client_ca=tls_files.ca),
    )
    try:
        address = f"127.0.0.1:{port}"
        with pytest.raises(HEServiceError, match="UNAVAILABLE"):
            EncryptedPredictor(channel(address, ca_certificate=tls_files.ca), timeout_s=10)
        with_cert = channel(
            address,
            ca_certificate=tls_files.ca,
            client_certificate=(tls_files.client_cert, tls_files.client_key),
        )
        x = _x(lr_model, 7)
        with EncryptedPredictor(with_cert) as p:
            np.testing.assert_allclose(p.logits(x), lr_model.plaintext_logits(x), atol=1e-4)
    finally:
        server.stop(None).wait()


def test_a_csv_is_streamed_in_batches_with_ids_rounding_and_threshold(
    served: Served, he_runs: dict[str, Path], tmp_path: Path
) -> None:
    import csv

    import pandas as pd

    from fedward.common.run_config import RunConfig
    from tests.server.he_support import heart_disease_test_rows

    run = RunConfig.model_validate_json((he_runs["logistic"] / "run_config.json").read_text())
    table = pd.concat(heart_disease_test_rows(run).values(), ignore_index=True)
    table.insert(0, "mrn", [f"p{i}" for i in range(len(table))])
    data = tmp_path / "patients.csv"
    table.to_csv(data, index=False)
    seen: list[int] = []
    with served.predictor() as p:
        n = p.predict_csv(
            data,
            tmp_path / "out.csv",
            id_column="mrn",
            round_digits=2,
            chunk_rows=50,
            threshold=0.3,
            progress=seen.append,
        )
        exact = p.predict_proba(table)
    assert n == len(table) and sum(seen) == n and max(seen) == 50
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert [r["mrn"] for r in rows] == table["mrn"].tolist()
    probs = np.array([float(r["probability"]) for r in rows])
    np.testing.assert_allclose(probs, np.round(exact, 2), atol=1e-9)
    assert all(int(r["predicted_class"]) == int(float(r["probability"]) >= 0.3) for r in rows)


def test_a_budget_can_be_unlimited_or_zero_and_survives_the_clients_file(tmp_path: Path) -> None:
    file = tmp_path / "clients.toml"
    open_token = add_client(file, "open", query_budget=None, requests_per_minute=60)
    frozen_token = add_client(file, "frozen", query_budget=0, requests_per_minute=60)
    clients = {c.name: c for c in load_clients(file).values()}
    assert clients["open"].budget is None and clients["frozen"].budget == 0
    assert open_token not in file.read_text() and frozen_token not in file.read_text()
    with pytest.raises(ConfigError, match="already exists"):
        add_client(file, "open", query_budget=1, requests_per_minute=1)
    access = Access.open(load_clients(file), tmp_path / "state")
    with pytest.raises(LimitReached, match="0 of 0"):
        access.usage.charge(clients["frozen"], 1, "r1")
    assert access.usage.charge(clients["open"], 10**6, "r2") is None
