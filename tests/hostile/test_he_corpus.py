"""Hostile requests to the encrypted-inference service: each a clear gRPC status, service unharmed.

tests/server/test_he_service.py covers the trained model over TLS (malformed, truncated and
foreign ciphertexts, wrong contexts, sizes, tokens); the cases here are the ones it does not, run
against a three-feature logistic model made in memory, so no federation has to be trained first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import tenseal as ts

from fedward.common import he_inference_pb2 as pb
from fedward.common import he_inference_pb2_grpc as pb_grpc
from fedward.common.he_context import new_secret_context, public_context_bytes
from fedward.server.he_access import Access
from fedward.server.he_model import DenseLayer, HEModel
from fedward.server.he_service import EncryptedInferenceService, ServiceSettings, start_server

N = 4


@dataclass
class Served:
    stub: pb_grpc.EncryptedInferenceStub
    channel: grpc.Channel
    model: HEModel
    secret: ts.Context


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    layer = DenseLayer(np.array([[0.5, -1.0, 2.0]]), np.array([0.1]), square_after=False)
    model = HEModel(
        layers=(layer,),
        kind="logistic",
        description="logistic regression",
        model_id="hostile-corpus",
        released=False,
        transform_json="{}",
        feature_names=("age", "chol", "smoker"),
    )
    access = Access.open({}, tmp_path_factory.mktemp("he-state"))
    service = EncryptedInferenceService(
        model, access, ServiceSettings(require_token=False, workers=2)
    )
    server, port = start_server(service, "127.0.0.1:0", tls=None)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield Served(
        pb_grpc.EncryptedInferenceStub(channel),
        channel,
        model,
        new_secret_context(model.parameters),
    )
    channel.close()
    server.stop(None).wait()


def _request(s: Served) -> pb.PredictRequest:
    x = np.random.default_rng(0).normal(size=(N, s.model.n_features))
    return pb.PredictRequest(
        n_patients=N,
        features=[ts.ckks_vector(s.secret, x[:, j].tolist()).serialize() for j in range(3)],
        public_context=public_context_bytes(s.secret, s.model.parameters),
    )


def _still_serving(s: Served) -> None:
    x = np.random.default_rng(1).normal(size=(N, s.model.n_features))
    request = _request(s)
    request.features[:] = [ts.ckks_vector(s.secret, x[:, j].tolist()).serialize() for j in range(3)]
    reply = s.stub.Predict(request, timeout=30)
    logits = np.array(ts.ckks_vector_from(s.secret, reply.logits).decrypt())
    np.testing.assert_allclose(logits, s.model.plaintext_logits(x), atol=1e-3)


def _squared(s: Served) -> bytes:
    v = ts.ckks_vector(s.secret, [1.0] * N)
    return v.mul(v).serialize()  # one level down and at scale 2^80: not fresh


def _context_with_galois_keys(s: Served) -> bytes:
    ctx = new_secret_context(s.model.parameters)
    ctx.generate_galois_keys()
    return bytes(ctx.serialize(save_secret_key=False, save_galois_keys=True))


def _context_at_scale_2_20(s: Served) -> bytes:
    ctx = new_secret_context(s.model.parameters)
    ctx.global_scale = 2.0**20
    return public_context_bytes(ctx, s.model.parameters)


def _bfv_context(s: Served) -> bytes:
    ctx = ts.context(ts.SCHEME_TYPE.BFV, 8192, 1032193)
    return bytes(ctx.serialize(save_secret_key=False))


def _set(**fields: object) -> Callable[[Served, pb.PredictRequest], None]:
    def edit(s: Served, r: pb.PredictRequest) -> None:
        for key, value in fields.items():
            setattr(r, key, value)

    return edit


def _feature(
    index: int, make: Callable[[Served], bytes]
) -> Callable[[Served, pb.PredictRequest], None]:
    def edit(s: Served, r: pb.PredictRequest) -> None:
        r.features[index] = make(s)

    return edit


def _context(make: Callable[[Served], bytes]) -> Callable[[Served, pb.PredictRequest], None]:
    def edit(s: Served, r: pb.PredictRequest) -> None:
        r.public_context = make(s)

    return edit


# (what is done to a valid Predict request, gRPC status, words the details must say)
PREDICT_CASES = [
    pytest.param(
        _set(n_patients=0), "INVALID_ARGUMENT", "n_patients must be at least 1", id="zero-patients"
    ),
    pytest.param(
        _set(public_context=b""),
        "INVALID_ARGUMENT",
        "send a session_id",
        id="no-session-and-no-context",
    ),
    pytest.param(
        _set(public_context=b"", session_id="forged-session"),
        "NOT_FOUND",
        "unknown or expired session_id",
        id="forged-session-id",
    ),
    pytest.param(
        _feature(0, lambda s: b""), "INVALID_ARGUMENT", "feature 0 ('age')", id="empty-ciphertext"
    ),
    pytest.param(
        _feature(1, lambda s: public_context_bytes(s.secret, s.model.parameters)),
        "INVALID_ARGUMENT",
        "feature 1 ('chol')",
        id="a-context-where-a-ciphertext-belongs",
    ),
    pytest.param(
        _feature(2, _squared),
        "INVALID_ARGUMENT",
        "feature 2 ('smoker'): not a fresh ciphertext",
        id="ciphertext-already-multiplied",
    ),
    pytest.param(
        _context(_context_with_galois_keys),
        "INVALID_ARGUMENT",
        "Galois keys",
        id="context-with-galois-keys",
    ),
    pytest.param(
        _context(_context_at_scale_2_20),
        "INVALID_ARGUMENT",
        "scale 2^20.0",
        id="context-at-the-wrong-scale",
    ),
    pytest.param(
        _context(_bfv_context),
        "INVALID_ARGUMENT",
        "public_context",
        id="bfv-context-for-a-ckks-model",
    ),
]


@pytest.mark.parametrize(("edit", "code", "says"), PREDICT_CASES)
def test_hostile_predict_request_gets_a_clear_status_and_the_service_goes_on(
    served: Served, edit: Callable[[Served, pb.PredictRequest], None], code: str, says: str
) -> None:
    request = _request(served)
    edit(served, request)
    with pytest.raises(grpc.RpcError) as err:
        served.stub.Predict(request, timeout=30)
    assert err.value.code().name == code, err.value.details()
    assert says in (err.value.details() or "")
    _still_serving(served)


@pytest.mark.parametrize(
    ("context", "says"),
    [
        pytest.param(b"", "public_context is empty", id="open-session-with-empty-context"),
        pytest.param(b"\x00" * 4096, "not a TenSEAL context", id="open-session-with-zeros"),
    ],
)
def test_hostile_open_session_gets_a_clear_status(
    served: Served, context: bytes, says: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        served.stub.OpenSession(pb.OpenSessionRequest(public_context=context), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (err.value.details() or "")
    _still_serving(served)


def test_bytes_that_are_no_protobuf_message_leave_the_service_serving(served: Served) -> None:
    raw = served.channel.unary_unary("/fedward.he.v1.EncryptedInference/Predict")
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff\xff\x0f garbage", timeout=30)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "deserializ" in (err.value.details() or "").lower()
    _still_serving(served)
