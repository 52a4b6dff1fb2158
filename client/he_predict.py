"""The clinic's side of encrypted inference: preprocess, encrypt, send, decrypt, apply the sigmoid.

The secret key is made here and never leaves: the server gets the public context (parameters and,
for an MLP, relinearisation keys). Patients are packed in the slots, one ciphertext per feature,
so one request carries up to 4,096 (logistic regression) or 8,192 (MLP) patients. The server
returns logits; the sigmoid and the class threshold are applied here, after decryption.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import tenseal as ts

from fedward.common import he_inference_pb2 as pb
from fedward.common import he_inference_pb2_grpc as pb_grpc
from fedward.common.errors import FedwardError
from fedward.common.he_context import new_secret_context, public_context_bytes
from fedward.common.he_params import CKKSParameters
from fedward.common.preprocessing import SharedTransform


class HEServiceError(FedwardError):
    """The service refused a request; ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"encrypted-inference service: {code}: {message}")


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    released: bool
    kind: str
    description: str
    feature_names: tuple[str, ...]
    transform: SharedTransform
    parameters: CKKSParameters
    max_batch: int
    max_request_bytes: int
    logit_noise: float
    budget_remaining: int | None


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def channel(
    server: str,
    *,
    ca_certificate: str | Path | None = None,
    insecure: bool = False,
    client_certificate: tuple[str | Path, str | Path] | None = None,
    max_message_bytes: int = 256 << 20,
) -> grpc.Channel:
    """A TLS channel to ``server`` (HOST:PORT) trusting ``ca_certificate``; plaintext only if
    ``insecure``, for tests and local simulation."""
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if insecure:
        return grpc.insecure_channel(server, options=options)
    root = Path(ca_certificate).read_bytes() if ca_certificate else None
    key_pair = (
        (Path(client_certificate[1]).read_bytes(), Path(client_certificate[0]).read_bytes())
        if client_certificate
        else (None, None)
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key_pair[0], certificate_chain=key_pair[1]
    )
    return grpc.secure_channel(server, credentials, options=options)


class EncryptedPredictor:
    """Predictions from an encrypted-inference server, with a secret key that stays here."""

    def __init__(self, chan: grpc.Channel, *, token: str | None = None, timeout_s: float = 120.0):
        self._stub = pb_grpc.EncryptedInferenceStub(chan)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout_s
        self.info = self._model_info()
        self._ctx = new_secret_context(self.info.parameters)
        self.public_context = public_context_bytes(self._ctx, self.info.parameters)
        self._session: str | None = None
        self.bytes_sent = 0
        self.bytes_received = 0

    # ---- calls -------------------------------------------------------------------------------

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() else "UNKNOWN"
            raise HEServiceError(code, exc.details() or "") from None

    def _model_info(self) -> ModelInfo:
        reply = self._call(self._stub.GetModelInfo, pb.ModelInfoRequest())
        p = reply.parameters
        params = CKKSParameters(
            int(p.poly_modulus_degree),
            tuple(int(b) for b in p.coeff_mod_bit_sizes),
            int(p.scale_bits),
            bool(p.needs_relin_keys),
        )
        return ModelInfo(
            model_id=reply.model_id,
            released=reply.released,
            kind=reply.kind,
            description=reply.description,
            feature_names=tuple(reply.feature_names),
            transform=SharedTransform.from_json(reply.transform_json),
            parameters=params,
            max_batch=int(reply.max_batch),
            max_request_bytes=int(reply.max_request_bytes),
            logit_noise=float(reply.logit_noise),
            budget_remaining=None if reply.budget_remaining < 0 else int(reply.budget_remaining),
        )

    def open_session(self) -> str:
        """Register the public context once; later requests carry only ciphertexts."""
        reply = self._call(
            self._stub.OpenSession, pb.OpenSessionRequest(public_context=self.public_context)
        )
        self.bytes_sent += len(self.public_context)
        self._session = str(reply.session_id)
        return self._session

    def close(self) -> None:
        if self._session:
            self._call(self._stub.CloseSession, pb.CloseSessionRequest(session_id=self._session))
            self._session = None

    def __enter__(self) -> EncryptedPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(HEServiceError):
            self.close()

    # ---- prediction --------------------------------------------------------------------------

    def encrypt(self, x: np.ndarray) -> list[bytes]:
        """One serialised ciphertext per feature column of ``x`` (patients in the slots)."""
        cols = np.asarray(x, dtype=np.float64)
        return [ts.ckks_vector(self._ctx, cols[:, j]).serialize() for j in range(cols.shape[1])]

    def logits(self, x: np.ndarray, *, with_context: bool = False) -> np.ndarray:
        """Decrypted logits of the preprocessed rows ``x``, in requests of at most max_batch."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.info.feature_names):
            raise FedwardError(
                f"expected rows of {len(self.info.feature_names)} preprocessed features, "
                f"got shape {x.shape}"
            )
        if self._session is None and not with_context:
            self.open_session()
        out = np.empty(len(x))
        step = self.info.max_batch
        for start in range(0, len(x), step):
            out[start : start + step] = self._predict_batch(x[start : start + step], with_context)
        return out

    def _predict_batch(self, rows: np.ndarray, with_context: bool) -> np.ndarray:
        request = pb.PredictRequest(n_patients=len(rows), features=self.encrypt(rows))
        if with_context:
            request.public_context = self.public_context
        else:
            request.session_id = self._session or ""
        self.bytes_sent += request.ByteSize()
        try:
            reply = self._call(self._stub.Predict, request)
        except HEServiceError as exc:
            if exc.code != "NOT_FOUND" or with_context:
                raise
            self.open_session()  # the session expired: register again and retry once
            request.session_id = self._session or ""
            reply = self._call(self._stub.Predict, request)
        self.bytes_received += len(reply.logits)
        vector = ts.ckks_vector_from(self._ctx, reply.logits)
        values = np.asarray(vector.decrypt(), dtype=np.float64)
        if len(values) != len(rows):
            raise HEServiceError("DATA_LOSS", f"{len(values)} logits for {len(rows)} patients")
        if reply.budget_remaining >= 0:
            self.info = _replace_budget(self.info, int(reply.budget_remaining))
        return values

    def predict_proba(self, frame: pd.DataFrame, *, source: str = "<frame>") -> np.ndarray:
        """Probabilities for raw patient rows: frozen preprocessing, encryption, sigmoid."""
        return _sigmoid(self.logits(preprocess(self.info.transform, frame, source=source)))

    def predict_csv(
        self,
        data: str | Path,
        out: str | Path,
        *,
        id_column: str | None = None,
        threshold: float = 0.5,
        round_digits: int | None = None,
        chunk_rows: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream ``data`` in chunks of at most one request each and write predictions to ``out``.

        Returns the number of patients written. ``progress`` is called with each chunk's size.
        """
        data, out = Path(data), Path(out)
        rows = chunk_rows or self.info.max_batch
        written = 0
        tmp = out.with_name(f".{out.name}.partial")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow([id_column or "row", "probability", "predicted_class"])
            for first_row, chunk in _chunks(data, rows):
                p = self.predict_proba(chunk, source=f"{data}, rows {first_row}+")
                if round_digits is not None:
                    p = np.round(p, round_digits)
                ids = (
                    chunk[id_column].astype(str).tolist()
                    if id_column
                    else [str(first_row + i) for i in range(len(chunk))]
                )
                for pid, prob in zip(ids, p, strict=True):
                    writer.writerow([pid, repr(float(prob)), int(prob >= threshold)])
                written += len(chunk)
                if progress:
                    progress(len(chunk))
        tmp.replace(out)
        return written


def _replace_budget(info: ModelInfo, remaining: int) -> ModelInfo:
    from dataclasses import replace

    return replace(info, budget_remaining=remaining)


def _chunks(path: Path, rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    if not path.exists():
        raise FedwardError(f"{path}: file not found")
    first = 1  # data rows are numbered from 1, as a spreadsheet shows them after the header
    try:
        reader = pd.read_csv(path, chunksize=rows, dtype=object, keep_default_na=True)
        for chunk in reader:
            yield first, chunk
            first += len(chunk)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise FedwardError(f"{path}: not a readable CSV table ({exc})") from None


def preprocess(transform: SharedTransform, frame: pd.DataFrame, *, source: str) -> np.ndarray:
    """The frozen preprocessing, with errors that name the file and the column."""
    needed = [c.name for c in transform.columns]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise FedwardError(f"{source}: missing column(s) {', '.join(missing)}")
    numeric = {c.name for c in transform.columns if not hasattr(c, "categories")}
    frame = frame.copy()
    for name in numeric:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna() & frame[name].notna() & (frame[name].astype(str).str.strip() != "")
        if bad.any():
            example = frame[name][bad].iloc[0]
            raise FedwardError(f"{source}: column '{name}' has a non-numeric value '{example}'")
        infinite = np.isinf(values.astype(float))
        if infinite.any():
            raise FedwardError(
                f"{source}: column '{name}' has an infinite value '{frame[name][infinite].iloc[0]}'"
            )
        frame[name] = values
    try:
        x = transform.transform(frame)
    except ValueError as exc:
        raise FedwardError(f"{source}: {exc}") from None
    if not np.isfinite(x).all():
        raise FedwardError(f"{source}: preprocessing produced non-finite values")
    return x
