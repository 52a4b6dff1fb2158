"""deploy/make-certs.sh: a CA, server certificates that verify against it for the names the containers
use, ECDSA node keys that Flower's node authentication accepts, private keys readable by their owner
only, and no silent overwrite."""

from __future__ import annotations

import hashlib
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_ssh_private_key,
    load_ssh_public_key,
)

from tests.deploy.conftest import MAKE_CERTS, SITES


def make_certs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(MAKE_CERTS), *args], capture_output=True, text=True, timeout=60, check=False
    )


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(path: Path) -> tuple[set[str], set[str]]:
    ext = cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return set(ext.get_values_for_type(x509.DNSName)), ips


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_server_certificates_verify_against_the_ca(certs: Path) -> None:
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(certs / "ca.pem"), "superlink.pem", "he.pem"],
        cwd=certs,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["superlink.pem:", "OK", "he.pem:", "OK"]


def _verifies(certs: Path, ca: str, cert: str) -> bool:
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", ca, cert],
        cwd=certs,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return done.returncode == 0


def test_the_control_api_certificate_comes_from_a_ca_the_sites_never_hold(certs: Path) -> None:
    """A site trusts ca.pem only: with it, the Control listener's certificate does not verify, and
    the control-plane CA vouches for nothing on the sites' side either."""
    assert _verifies(certs, "control-ca.pem", "control.pem")
    assert not _verifies(certs, "ca.pem", "control.pem")
    assert not _verifies(certs, "control-ca.pem", "superlink.pem")
    assert (certs / "control-ca.pem").read_bytes() != (certs / "ca.pem").read_bytes()


def test_ca_can_sign_and_servers_cannot(certs: Path) -> None:
    ca = cert(certs / "ca.pem").extensions.get_extension_for_class(x509.BasicConstraints).value
    assert ca.ca
    for name in ("superlink.pem", "he.pem"):
        c = cert(certs / name)
        assert not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_superlink_certificate_names_the_compose_host_localhost_and_extra_names(
    certs: Path,
) -> None:
    dns, ips = sans(certs / "superlink.pem")
    assert {"superlink", "localhost", "coordinator.example.org"} <= dns
    assert "127.0.0.1" in ips


def test_he_certificate_names_the_compose_host_and_localhost(certs: Path) -> None:
    dns, ips = sans(certs / "he.pem")
    assert {"he", "localhost"} <= dns
    assert "127.0.0.1" in ips


def test_a_tls_client_trusting_the_ca_connects_to_127_0_0_1(certs: Path) -> None:
    """What a SuperNode does: verify the SuperLink's certificate for the address it dials."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs / "superlink.pem", certs / "superlink.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.recv(2) == b"ok"
    thread.join(timeout=10)
    listener.close()


@pytest.mark.parametrize("site", SITES)
def test_each_site_gets_an_ecdsa_p384_key_pair_flower_accepts(certs: Path, site: str) -> None:
    from flwr.cli.supernode.register import try_load_public_key

    private = load_ssh_private_key((certs / "keys" / site).read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp384r1"
    public = load_ssh_public_key((certs / "keys" / f"{site}.pub").read_bytes())
    as_pem = (Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert public.public_bytes(*as_pem) == private.public_key().public_bytes(*as_pem)
    # What `flwr supernode register KEY.pub` checks before sending the key.
    assert try_load_public_key(certs / "keys" / f"{site}.pub")


def test_private_keys_are_readable_by_their_owner_only(certs: Path) -> None:
    private = [certs / "ca.key", certs / "superlink.key", certs / "he.key"]
    private += [certs / "control-ca.key", certs / "control.key"]
    private += [certs / "keys" / site for site in SITES]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    for path in [certs / "ca.pem", certs / "superlink.pem", *certs.glob("keys/*.pub")]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path.name  # readable


def test_a_second_run_refuses_to_overwrite_and_changes_nothing(certs: Path) -> None:
    before = digest(certs)
    done = make_certs(str(certs))
    assert done.returncode != 0
    assert "refusing to overwrite" in done.stderr and "--force" in done.stderr
    assert digest(certs) == before


def test_force_replaces_every_key_in_place(tmp_path: Path) -> None:
    """Rewritten, not replaced: a container that bind-mounts the file sees the new key."""
    out = tmp_path / "certs"
    assert make_certs(str(out), "--sites", "cleveland").returncode == 0
    before = digest(out)
    inodes = {name: (out / name).stat().st_ino for name in before}
    done = make_certs(str(out), "--sites", "cleveland", "--force")
    assert done.returncode == 0, done.stderr
    after = digest(out)
    assert set(after) == set(before)
    for name in ("ca.key", "superlink.key", "he.key", "keys/cleveland", "keys/cleveland.pub"):
        assert after[name] != before[name], name
    assert {name: (out / name).stat().st_ino for name in after} == inodes
    assert stat.S_IMODE((out / "keys" / "cleveland").stat().st_mode) == 0o600


def test_a_folder_where_a_key_belongs_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    (out / "keys" / "cleveland").mkdir(parents=True)  # what Docker leaves for a missing mount
    done = make_certs(str(out), "--sites", "cleveland", "--force")
    assert done.returncode != 0 and "is a folder" in done.stderr


def test_keys_only_adds_a_site_without_touching_the_ca(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert make_certs(str(out), "--sites", "cleveland").returncode == 0
    before = digest(out)
    done = make_certs(str(out), "--keys-only", "--sites", "st-mary")
    assert done.returncode == 0, done.stderr
    after = digest(out)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"keys/st-mary", "keys/st-mary.pub"}
    # Rotating an existing site's key needs --force too.
    assert make_certs(str(out), "--keys-only", "--sites", "cleveland").returncode != 0


@pytest.mark.parametrize("site", ["../evil", "a/b", "-x", ""])
def test_a_site_name_that_is_not_a_plain_name_is_refused(tmp_path: Path, site: str) -> None:
    done = make_certs(str(tmp_path / "certs"), "--sites", site)
    assert done.returncode != 0
    assert not (tmp_path / "certs").exists()
