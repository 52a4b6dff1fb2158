"""The encrypted-inference gRPC service: CKKS ciphertexts in, encrypted logits out.

Every request is checked before any arithmetic: the token, the rate limit, the sizes, the context
(public, the model's parameters), every ciphertext (parses under that context, holds exactly the
declared number of patients, fresh scale); only then is the budget charged and the model
evaluated. A bad request gets a gRPC status that says what was wrong and the server goes on
serving everyone else: nothing a client sends can reach a code path that takes the server down.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import tenseal as ts
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fedward.common import he_inference_pb2 as pb
from fedward.common import he_inference_pb2_grpc as pb_grpc
from fedward.common.he_context import (
    HEInputError,
    load_public_context,
    new_secret_context,
    parms_id,
)
from fedward.server.he_access import (
    Access,
    AccessDenied,
    HEClient,
    LimitReached,
)
from fedward.server.he_model import HEModel

log = logging.getLogger("fedward.he")

MiB = 1 << 20
DEFAULT_MAX_REQUEST_BYTES = 64 * MiB
ANONYMOUS = HEClient(
    name="anonymous", token_sha256="0" * 64, query_budget="unlimited", requests_per_minute=1_000_000
)
_METHODS = ("GetModelInfo", "OpenSession", "Predict", "CloseSession")
_Reply = TypeVar("_Reply")


@dataclass(frozen=True)
class ServiceSettings:
    max_batch: int | None = None  # patients per request; default: the ciphertext's slots
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    session_ttl_s: float = 3600.0
    max_sessions_per_client: int = 4
    logit_noise: float = 0.0  # Gaussian σ added to every returned logit, under encryption
    workers: int = 4
    require_token: bool = True


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Session:
    client: str
    context: ts.Context
    expires: float


@dataclass
class _Metrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "fedward_he_requests",
            "Requests by method and gRPC status.",
            ["method", "code"],
            registry=r,
        )
        self.errors = Counter(
            "fedward_he_errors",
            "Refused or failed requests by method and gRPC status.",
            ["method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "fedward_he_request_seconds",
            "Time to answer a request.",
            ["method"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.predictions = Counter(
            "fedward_he_predictions", "Encrypted predictions returned (patients).", registry=r
        )
        self.sessions = Gauge("fedward_he_sessions", "Open sessions.", registry=r)
        self.request_bytes = Counter(
            "fedward_he_request_bytes", "Bytes received in Predict and OpenSession.", registry=r
        )


class EncryptedInferenceService(pb_grpc.EncryptedInferenceServicer):
    def __init__(
        self,
        model: HEModel,
        access: Access,
        settings: ServiceSettings | None = None,
    ) -> None:
        self.model = model
        self.access = access
        self.settings = settings or ServiceSettings()
        self.params = model.parameters
        self.max_batch = min(self.settings.max_batch or self.params.slots, self.params.slots)
        reference = new_secret_context(self.params)
        self._expected_parms = parms_id(reference)
        self._fresh_parms = list(reference.seal_context().data.first_parms_id())
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self.metrics = _Metrics()
        for method in _METHODS:
            self.metrics.latency.labels(method)
            self.metrics.requests.labels(method, "OK")

    # ---- plumbing ------------------------------------------------------------------------------

    def _client(self, context: grpc.ServicerContext) -> HEClient:
        if not self.settings.require_token:
            return ANONYMOUS
        token = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else str(value)
                token = text[7:].strip() if text.lower().startswith("bearer ") else text.strip()
        try:
            return _authenticate(self.access, token)
        except AccessDenied as exc:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None

    def _handle(
        self,
        method: str,
        context: grpc.ServicerContext,
        work: Callable[[HEClient, dict[str, Any]], _Reply],
    ) -> _Reply:
        start = time.perf_counter()
        note: dict[str, Any] = {"request_id": uuid.uuid4().hex, "method": method}
        code = grpc.StatusCode.OK
        message = ""
        try:
            client = self._client(context)
            note["client"] = client.name
            self.access.limiter.take(client)
            return work(client, note)
        except _Refused as exc:
            code, message = exc.code, exc.message
        except LimitReached as exc:
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
        except HEInputError as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except Exception:  # never let one request take the service down
            log.exception("encrypted inference: %s failed", method)
            code, message = grpc.StatusCode.INTERNAL, "internal error; the request was logged"
        finally:
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(method, code.name).inc()
            self.metrics.latency.labels(method).observe(seconds)
            if code is not grpc.StatusCode.OK:
                self.metrics.errors.labels(method, code.name).inc()
            self.access.log.write(
                {**note, "code": code.name, "seconds": round(seconds, 6)}
                | ({"error": message} if message else {})
            )
        context.abort(code, message)
        raise AssertionError("unreachable")  # pragma: no cover - abort raises

    def _sweep(self, now: float) -> None:
        for sid in [s for s, v in self._sessions.items() if v.expires < now]:
            del self._sessions[sid]
        self.metrics.sessions.set(len(self._sessions))

    def _context(self, client: HEClient, request: pb.PredictRequest) -> ts.Context:
        if request.session_id:
            now = time.monotonic()
            with self._lock:
                self._sweep(now)
                session = self._sessions.get(request.session_id)
                if session is None or session.client != client.name:
                    raise _Refused(
                        grpc.StatusCode.NOT_FOUND,
                        "unknown or expired session_id: open a new session",
                    )
                session.expires = now + self.settings.session_ttl_s
                return session.context
        if not request.public_context:
            raise HEInputError("send a session_id from OpenSession or a public_context")
        return load_public_context(
            request.public_context, self.params, expected=self._expected_parms
        )

    # ---- the RPCs ------------------------------------------------------------------------------

    def GetModelInfo(
        self, request: pb.ModelInfoRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        def work(client: HEClient, note: dict[str, Any]) -> pb.ModelInfo:
            remaining = self.access.usage.remaining(client)
            p = self.params
            return pb.ModelInfo(
                model_id=self.model.model_id,
                released=self.model.released,
                kind=self.model.kind,
                description=self.model.description,
                feature_names=list(self.model.feature_names),
                transform_json=self.model.transform_json,
                parameters=pb.CkksParameters(
                    poly_modulus_degree=p.poly_modulus_degree,
                    coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes),
                    scale_bits=p.scale_bits,
                    needs_relin_keys=p.needs_relin_keys,
                ),
                max_batch=self.max_batch,
                max_request_bytes=self.settings.max_request_bytes,
                logit_noise=self.settings.logit_noise,
                budget_remaining=-1 if remaining is None else remaining,
                output="logit",
            )

        return self._handle("GetModelInfo", context, work)

    def OpenSession(
        self, request: pb.OpenSessionRequest, context: grpc.ServicerContext
    ) -> pb.Session:
        def work(client: HEClient, note: dict[str, Any]) -> pb.Session:
            note["request_bytes"] = len(request.public_context)
            self.metrics.request_bytes.inc(len(request.public_context))
            ctx = load_public_context(
                request.public_context, self.params, expected=self._expected_parms
            )
            sid = secrets.token_urlsafe(24)
            now = time.monotonic()
            with self._lock:
                self._sweep(now)
                mine = sorted(
                    (s.expires, k) for k, s in self._sessions.items() if s.client == client.name
                )
                # A client's oldest sessions make way: keys are megabytes each.
                for _, old in mine[: max(len(mine) - self.settings.max_sessions_per_client + 1, 0)]:
                    del self._sessions[old]
                self._sessions[sid] = _Session(client.name, ctx, now + self.settings.session_ttl_s)
                self.metrics.sessions.set(len(self._sessions))
            return pb.Session(session_id=sid, expires_in_s=self.settings.session_ttl_s)

        return self._handle("OpenSession", context, work)

    def CloseSession(
        self, request: pb.CloseSessionRequest, context: grpc.ServicerContext
    ) -> pb.CloseSessionReply:
        def work(client: HEClient, note: dict[str, Any]) -> pb.CloseSessionReply:
            with self._lock:
                session = self._sessions.get(request.session_id)
                if session is not None and session.client == client.name:
                    del self._sessions[request.session_id]
                self.metrics.sessions.set(len(self._sessions))
            return pb.CloseSessionReply()

        return self._handle("CloseSession", context, work)

    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictReply:
        def work(client: HEClient, note: dict[str, Any]) -> pb.PredictReply:
            n = int(request.n_patients)
            size = request.ByteSize()
            note.update(n_patients=n, n_features=len(request.features), request_bytes=size)
            self.metrics.request_bytes.inc(size)
            if n < 1:
                raise HEInputError("n_patients must be at least 1")
            if n > self.max_batch:
                raise _Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"batch of {n} patients is over this server's maximum of {self.max_batch}; "
                    "split it",
                )
            if len(request.features) != self.model.n_features:
                raise HEInputError(
                    f"the model takes {self.model.n_features} features (one ciphertext each), "
                    f"the request has {len(request.features)}"
                )
            ctx = self._context(client, request)
            vectors = [self._ciphertext(ctx, data, j, n) for j, data in enumerate(request.features)]
            remaining = self.access.usage.charge(client, n, note["request_id"])
            out = self.model.evaluate(vectors, n)
            if self.settings.logit_noise > 0:
                rng = np.random.default_rng(secrets.randbits(128))
                out.add_(rng.normal(0.0, self.settings.logit_noise, n).tolist())
            logits = out.serialize()
            self.metrics.predictions.inc(n)
            note["reply_bytes"] = len(logits)
            return pb.PredictReply(
                logits=logits,
                n_patients=n,
                budget_remaining=-1 if remaining is None else remaining,
            )

        return self._handle("Predict", context, work)

    def _ciphertext(self, ctx: ts.Context, data: bytes, index: int, n: int) -> ts.CKKSVector:
        name = self.model.feature_names[index]
        try:
            vector = ts.ckks_vector_from(ctx, data)
        except Exception as exc:
            raise HEInputError(
                f"feature {index} ('{name}'): not a CKKS vector under this context "
                f"({str(exc) or type(exc).__name__})"
            ) from None
        if vector.size() != n:
            raise HEInputError(
                f"feature {index} ('{name}'): holds {vector.size()} values, n_patients is {n}"
            )
        parts = vector.data.ciphertext()
        fresh = (
            len(parts) == 1
            and list(parts[0].parms_id()) == self._fresh_parms
            and parts[0].size() == 2
            and abs(parts[0].scale - 2.0**self.params.scale_bits)
            <= 1e-6 * 2.0**self.params.scale_bits
        )
        if not fresh:
            raise HEInputError(
                f"feature {index} ('{name}'): not a fresh ciphertext at the context's first level "
                f"and scale 2^{self.params.scale_bits}; encrypt each feature anew"
            )
        return vector


def _authenticate(access: Access, token: str | None) -> HEClient:
    from fedward.server.he_access import authenticate

    return authenticate(access.clients, token)


# ---- the server ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    certificate: Path
    private_key: Path
    client_ca: Path | None = None  # set for mutual TLS: clients then need a certificate too


def grpc_options(max_request_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", int(max_request_bytes)),
        ("grpc.max_send_message_length", int(max_request_bytes)),
    ]


def start_server(
    service: EncryptedInferenceService,
    address: str,
    *,
    tls: TLSFiles | None,
) -> tuple[grpc.Server, int]:
    """Start serving; returns the server and the port bound (``address`` may end in ':0')."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=service.settings.workers),
        options=grpc_options(service.settings.max_request_bytes),
    )
    pb_grpc.add_EncryptedInferenceServicer_to_server(service, server)
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.private_key.read_bytes(), tls.certificate.read_bytes())],
            root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
            require_client_auth=tls.client_ca is not None,
        )
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"could not bind the encrypted-inference service to {address}")
    server.start()
    return server, port
