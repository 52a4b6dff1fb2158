"""Shared by the encrypted-inference tests and benchmark: TLS files, trained models, test splits."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedward.client.app import app
from fedward.client.site import _from_bundled, prepare
from fedward.common.config import RunConfig, run_schema
from fedward.server.app import CoordinatorSettings, coordinate
from tests.server.loopback import LoopbackGrid, server_context


@dataclass(frozen=True)
class TLS:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls(folder: Path) -> TLS:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedward test CA"))
        .issuer_name(_name("fedward test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    tls = TLS(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )
    tls.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _issue(ca_cert, ca_key, "localhost", tls.cert, tls.key, now)
    _issue(ca_cert, ca_key, "clinic-north", tls.client_cert, tls.client_key, now)
    return tls


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    cn: str,
    cert_path: Path,
    key_path: Path,
    now: dt.datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def he_run_config(kind: str, rounds: int = 4) -> RunConfig:
    model = {"kind": "logistic"} if kind == "logistic" else {"kind": "mlp", "hidden": [16]}
    return RunConfig(
        rounds=rounds,
        model={**model, "he_compatible": True},
        evaluation={"bootstrap": 20},
        baselines={"enabled": False},
        audit={"enabled": False},
    )


def train_run(kind: str, folder: Path, rounds: int = 4) -> Path:
    """A finished DP federation of the four heart-disease hospitals, in-process (no Ray)."""
    settings = CoordinatorSettings(
        run=he_run_config(kind, rounds), run_dir=str(folder), engine="simulation"
    )
    return coordinate(LoopbackGrid(app, 4), server_context(), settings).path


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
    from fedward.server.release import release, sign_off

    run = RunConfig(
        rounds=4,
        model={"kind": "logistic", "he_compatible": True},
        evaluation={"bootstrap": 20},
        baselines={"enabled": False},
        audit={"reference_models": 2},
    )
    settings = CoordinatorSettings(run=run, run_dir=str(folder / "run"), engine="simulation")
    path = coordinate(LoopbackGrid(app, 4), server_context(), settings).path
    sign_off(path, by="Dr. Ada Byron", role="privacy officer", note="read the card")
    return release(path, folder / "releases", by="release manager")
