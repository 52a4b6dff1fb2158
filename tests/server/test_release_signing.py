"""Signing keys and trust files: what is written, and every bad input refused naming file and field.

No federation here: the signed-release tampering tests reuse the finished run in test_release.py.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from typer.testing import CliRunner

from fedward.common.errors import FedwardError
from fedward.server.release_cli import release_app
from fedward.server.release_signing import (
    MANIFEST_DOMAIN,
    SIGNOFF_DOMAIN,
    fingerprint,
    keygen,
    load_private_key,
    load_trust,
    public_key_b64,
    sign,
    signature_key,
    verifies,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_a_0600_private_key_and_a_public_key(tmp_path: Path) -> None:
    old = os.umask(0o000)  # even with a permissive umask the private key is 0600
    try:
        key_path, pub_path, public = keygen(tmp_path / "keys", "ada")
    finally:
        os.umask(old)
    assert key_path == tmp_path / "keys" / "ada.key" and pub_path == tmp_path / "keys" / "ada.pub"
    assert _mode(key_path) == 0o600
    assert pub_path.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    private = load_private_key(key_path)
    assert fingerprint(private.public_key()) == fingerprint(public)
    loaded = serialization.load_pem_public_key(pub_path.read_bytes())
    assert isinstance(loaded, Ed25519PublicKey)
    assert public_key_b64(loaded) == public_key_b64(public)


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    keygen(tmp_path, "ada")
    before = (tmp_path / "ada.key").read_bytes()
    with pytest.raises(FedwardError, match=r"ada\.key already exists"):
        keygen(tmp_path, "ada")
    assert (tmp_path / "ada.key").read_bytes() == before


@pytest.mark.parametrize("name", ["", "../ada", ".hidden", "a/b"])
def test_keygen_refuses_a_name_that_is_not_a_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(FedwardError, match="--name"):
        keygen(tmp_path, name)


def test_a_signature_verifies_only_for_its_bytes_and_its_domain() -> None:
    key = Ed25519PrivateKey.generate()
    block = sign(key, SIGNOFF_DOMAIN, b"record")
    public, value = signature_key(block, "test")
    assert verifies(public, value, SIGNOFF_DOMAIN, b"record")
    assert not verifies(public, value, SIGNOFF_DOMAIN, b"recorD")
    assert not verifies(public, value, MANIFEST_DOMAIN, b"record")  # no reuse across purposes
    with pytest.raises(FedwardError, match="key_fingerprint does not belong"):
        other = Ed25519PrivateKey.generate().public_key()
        signature_key({**block, "public_key": public_key_b64(other)}, "test")


# ---- bad keys ------------------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FedwardError, match=r"nope\.key: signing key file not found"):
        load_private_key(tmp_path / "nope.key")


def test_a_public_key_given_as_the_private_key_is_named(tmp_path: Path) -> None:
    _, pub, _ = keygen(tmp_path, "ada")
    with pytest.raises(FedwardError, match=r"ada\.pub: holds a public key; --key takes"):
        load_private_key(pub)


def test_a_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = _write(tmp_path / "ec.key", pem)
    with pytest.raises(FedwardError, match=r"ec\.key: holds an EC \(ECDSA\) private key.*Ed25519"):
        load_private_key(path)


def test_garbage_and_encrypted_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FedwardError, match=r"junk\.key: not a PEM private key"):
        load_private_key(_write(tmp_path / "junk.key", b"not a key\n"))
    encrypted = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(FedwardError, match=r"enc\.key: the private key is encrypted"):
        load_private_key(_write(tmp_path / "enc.key", encrypted))


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    key_path, _, _ = keygen(tmp_path, "ada")
    key_path.chmod(0o644)
    with pytest.raises(FedwardError, match=r"ada\.key: .*other accounts \(mode 0644\).*chmod 600"):
        load_private_key(key_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_key_is_named(tmp_path: Path) -> None:
    key_path, _, _ = keygen(tmp_path, "ada")
    key_path.chmod(0o000)
    with pytest.raises(FedwardError, match=r"ada\.key: signing key could not be read"):
        load_private_key(key_path)


# ---- trust files ---------------------------------------------------------------------------------


def _b64() -> str:
    return public_key_b64(Ed25519PrivateKey.generate().public_key())


def test_a_trust_file_in_toml_or_json_with_base64_or_pem_keys(tmp_path: Path) -> None:
    _, _, public = keygen(tmp_path, "ada")
    _, ops_pub, _ = keygen(tmp_path, "ops")
    toml = tmp_path / "trust.toml"
    pem = ops_pub.read_text()
    toml.write_text(
        '[[signers]]\nname = "Dr. Ada Byron"\nrole = "privacy officer"\n'
        f'public_key = "{public_key_b64(public)}"\n\n'
        f'[[signers]]\nname = "Ops"\nrole = "release engineer"\npublic_key = """{pem}"""\n'
    )
    trust = load_trust(toml)
    assert [s.name for s in trust.signers] == ["Dr. Ada Byron", "Ops"]
    ada = trust.signer_for(public)
    assert ada is not None and ada.role == "privacy officer"
    assert ada.fingerprint == fingerprint(public)
    as_json = tmp_path / "trust.json"
    as_json.write_text(json.dumps({"signers": [{"name": "A", "role": "r", "public_key": _b64()}]}))
    assert load_trust(as_json).signers[0].name == "A"
    assert load_trust(as_json).signer_for(public) is None


def _bad_trust(tmp_path: Path, text: str, name: str = "trust.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FedwardError) as error:
        load_trust(path)
    message = str(error.value)
    assert message.startswith(str(path)), message
    return message


def test_malformed_trust_files_are_refused_naming_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(FedwardError, match=r"absent\.toml: trust file not found"):
        load_trust(tmp_path / "absent.toml")
    assert "not valid TOML" in _bad_trust(tmp_path, "[[signers]\nname=")
    assert "not valid JSON" in _bad_trust(tmp_path, "{", "trust.json")
    assert "no `signers` list" in _bad_trust(tmp_path, 'title = "x"\n')
    no_role = _bad_trust(tmp_path, f'[[signers]]\nname = "A"\npublic_key = "{_b64()}"\n')
    assert "signers[0]: field 'role' is missing" in no_role
    empty_name = _bad_trust(
        tmp_path, f'[[signers]]\nname = ""\nrole = "r"\npublic_key = "{_b64()}"\n'
    )
    assert "signers[0]: field 'name' is \"\", not a non-empty text" in empty_name
    good = f'[[signers]]\nname = "A"\nrole = "r"\npublic_key = "{_b64()}"\n'
    not_b64 = _bad_trust(tmp_path, good + '[[signers]]\nname = "B"\nrole = "r"\npublic_key = "!"')
    assert "signers[1] (B): field 'public_key': not base64" in not_b64
    short = base64.b64encode(b"x" * 16).decode()
    too_short = _bad_trust(tmp_path, f'[[signers]]\nname="B"\nrole="r"\npublic_key="{short}"')
    assert "field 'public_key': decodes to 16 bytes, an Ed25519 public key has 32" in too_short


def test_a_trust_file_with_a_key_of_the_wrong_type_or_shared_is_refused(tmp_path: Path) -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    wrong = _bad_trust(tmp_path, f'[[signers]]\nname="A"\nrole="r"\npublic_key="""{ec_pem}"""')
    assert "signers[0] (A): field 'public_key': is an EC (ECDSA) public key" in wrong
    key = _b64()
    shared = _bad_trust(
        tmp_path,
        f'[[signers]]\nname="A"\nrole="r"\npublic_key="{key}"\n'
        f'[[signers]]\nname="B"\nrole="r"\npublic_key="{key}"\n',
    )
    assert "signers[1] (B): field 'public_key' is also listed for 'A'" in shared


def test_the_keygen_command_prints_a_trust_entry_that_loads(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        release_app,
        ["keygen", "--out", str(tmp_path), "--name", "ada", "--role", "privacy officer"],
    )
    assert result.exit_code == 0, result.output
    assert _mode(tmp_path / "ada.key") == 0o600 and (tmp_path / "ada.pub").is_file()
    entry = result.output[result.output.index("[[signers]]") :]
    (tmp_path / "trust.toml").write_text(entry)
    (signer,) = load_trust(tmp_path / "trust.toml").signers
    assert signer.name == "ada" and signer.role == "privacy officer"
    assert signer.fingerprint in result.output
    again = CliRunner().invoke(release_app, ["keygen", "--out", str(tmp_path), "--name", "ada"])
    assert again.exit_code == 1 and "already exists" in again.output
