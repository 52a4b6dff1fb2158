"""Ed25519 keys, signatures and the trust file behind signed sign-offs and releases.

Hashes alone show that a release folder agrees with its MANIFEST.json, not who made it: anyone who
can write the folder can rewrite a file and rehash the manifest. A signature by a key that only
its holder has, checked against a trust file the receiver keeps, shows who vouched for the bytes.

Formats, chosen to be readable with stock tools:

- ``NAME.key``: the private key, unencrypted PKCS#8 PEM, mode 0600 (refused when others can read
  it). ``NAME.pub``: the public key, SubjectPublicKeyInfo PEM.
- a key's fingerprint is ``sha256:`` and the hex SHA-256 of its 32 raw public-key bytes.
- a trust file (TOML, or JSON when it ends in ``.json``) holds ``signers``: tables with ``name``,
  ``role`` and ``public_key`` (the raw key in base64, as ``keygen`` prints it, or the PEM text).
- every signature is over a domain tag and the signed bytes, so a signature made for a sign-off
  can never be presented as one for a manifest, or the reverse.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedward.common.errors import FedwardError
from fedward.server.release_files import write_synced

ALGORITHM = "ed25519"
KEY_SUFFIX = ".key"
PUB_SUFFIX = ".pub"
SIGNOFF_DOMAIN = b"fedward-signoff/1\0"
MANIFEST_DOMAIN = b"fedward-manifest/1\0"
SIGNATURE_FORMAT = "fedward-signature/1"
_KEYGEN_HINT = "make one with `fedward release keygen --out DIR --name NAME`"


# ---- keys ----------------------------------------------------------------------------------------


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The form a trust file lists: the 32 raw bytes in base64 (44 characters)."""
    return base64.b64encode(raw_public_bytes(key)).decode("ascii")


def fingerprint(key: Ed25519PublicKey) -> str:
    return "sha256:" + hashlib.sha256(raw_public_bytes(key)).hexdigest()


def _key_type(key: object) -> str:
    """'an RSA', 'an EC (ECDSA)', …: for saying which kind of key was given instead."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x448, x25519

    kinds: list[tuple[tuple[type, ...], str]] = [
        ((rsa.RSAPrivateKey, rsa.RSAPublicKey), "an RSA"),
        ((ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey), "an EC (ECDSA)"),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448"),
        ((x25519.X25519PrivateKey, x25519.X25519PublicKey), "an X25519 (encryption-only)"),
        ((x448.X448PrivateKey, x448.X448PublicKey), "an X448 (encryption-only)"),
    ]
    for types, label in kinds:
        if isinstance(key, types):
            return label
    return f"a {type(key).__name__}"


def keygen(out_dir: str | Path, name: str) -> tuple[Path, Path, Ed25519PublicKey]:
    """Write ``NAME.key`` (0600, never overwritten) and ``NAME.pub`` in ``out_dir``.

    The private key is created with mode 0600 from the first byte (not chmod-ed afterwards), so
    there is no moment when another account could read it.
    """
    stem = name.strip()
    if not stem or stem.startswith(".") or "/" in stem or "\\" in stem or "\0" in stem:
        raise FedwardError(
            f"--name {name!r}: a key name is a file name (no '/', not starting with '.'), "
            "e.g. 'ada-byron'"
        )
    folder = Path(out_dir)
    key_path, pub_path = folder / f"{stem}{KEY_SUFFIX}", folder / f"{stem}{PUB_SUFFIX}"
    for path in (key_path, pub_path):
        if path.exists():
            raise FedwardError(
                f"{path} already exists: a key is never overwritten (a signature made with the "
                "old key would no longer verify); choose another --name or remove it on purpose"
            )
    folder.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # exact_mode: the umask can only remove bits; this makes the mode exact
    write_synced(key_path, pem, os.O_CREAT | os.O_EXCL, 0o600, exact_mode=True)
    public = private.public_key()
    pub_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_synced(pub_path, pub_pem, os.O_CREAT | os.O_EXCL, 0o644)
    return key_path, pub_path, public


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The signer's key from ``path``; every failure names the file and what is wrong with it."""
    key_path = Path(path)
    if not key_path.exists():
        raise FedwardError(f"{key_path}: signing key file not found ({_KEYGEN_HINT})")
    if not key_path.is_file():
        raise FedwardError(f"{key_path}: is not a file; --key takes the private key file NAME.key")
    try:
        mode = key_path.stat().st_mode
        data = key_path.read_bytes()
    except OSError as exc:
        raise FedwardError(
            f"{key_path}: signing key could not be read ({exc.strerror or exc})"
        ) from exc
    if b"PUBLIC KEY" in data:
        raise FedwardError(
            f"{key_path}: holds a public key; --key takes the private key (NAME{KEY_SUFFIX}), "
            f"the public one (NAME{PUB_SUFFIX}) goes in the trust file"
        )
    if os.name == "posix" and mode & 0o077:
        raise FedwardError(
            f"{key_path}: the signing key can be read or written by other accounts (mode "
            f"{stat.S_IMODE(mode):04o}); anyone who reads it can sign as you. Run "
            f"`chmod 600 {key_path}`, or make a new key if others may have copied it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # encrypted with a passphrase
        raise FedwardError(
            f"{key_path}: the private key is encrypted with a passphrase; fedward reads the "
            f"unencrypted PEM keys it writes ({_KEYGEN_HINT})"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise FedwardError(
            f"{key_path}: not a PEM private key ({str(exc).splitlines()[0] if str(exc) else exc}); "
            f"{_KEYGEN_HINT}"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise FedwardError(
            f"{key_path}: holds {_key_type(key)} private key; fedward signs only with Ed25519 "
            f"keys ({_KEYGEN_HINT})"
        )
    return key


def parse_public_key(text: str, where: str) -> Ed25519PublicKey:
    """A public key given as base64 of the 32 raw bytes or as PEM text; ``where`` names it."""
    value = text.strip()
    if value.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(value.encode("ascii", "replace"))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise FedwardError(f"{where}: not a readable PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise FedwardError(
                f"{where}: is {_key_type(key)} public key; only Ed25519 keys are accepted"
            )
        return key
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FedwardError(
            f"{where}: not base64 ({exc}); give the 44-character key `fedward release keygen` "
            "prints, or the PEM text of NAME.pub"
        ) from exc
    if len(raw) != 32:
        raise FedwardError(
            f"{where}: decodes to {len(raw)} bytes, an Ed25519 public key has 32; give the key "
            "`fedward release keygen` prints, or the PEM text of NAME.pub"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


# ---- signatures ----------------------------------------------------------------------------------


def canonical_json(data: Any) -> bytes:
    """One byte string per value, whatever the file's indentation or key order."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sign(key: Ed25519PrivateKey, domain: bytes, message: bytes) -> dict[str, str]:
    """A signature block: algorithm, the signer's public key and fingerprint, the signature."""
    public = key.public_key()
    return {
        "algorithm": ALGORITHM,
        "public_key": public_key_b64(public),
        "key_fingerprint": fingerprint(public),
        "value": base64.b64encode(key.sign(domain + message)).decode("ascii"),
    }


def signature_key(block: Any, where: str) -> tuple[Ed25519PublicKey, bytes]:
    """The public key a signature block names and the signature bytes, or an error naming why."""
    if not isinstance(block, dict):
        raise FedwardError(f"{where}: the signature is not an object")
    if block.get("algorithm") != ALGORITHM:
        raise FedwardError(
            f"{where}: signature algorithm is {json.dumps(block.get('algorithm'))}, "
            f"not '{ALGORITHM}'"
        )
    key = parse_public_key(str(block.get("public_key") or ""), f"{where}: public_key")
    if block.get("key_fingerprint") != fingerprint(key):
        raise FedwardError(f"{where}: key_fingerprint does not belong to the public_key given")
    try:
        value = base64.b64decode(str(block.get("value") or ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FedwardError(f"{where}: the signature value is not base64 ({exc})") from exc
    return key, value


def verifies(key: Ed25519PublicKey, value: bytes, domain: bytes, message: bytes) -> bool:
    try:
        key.verify(value, domain + message)
    except InvalidSignature:
        return False
    return True


# ---- the trust file ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """One person the receiver trusts to sign: as they sign (``name``, ``role``) and their key."""

    name: str
    role: str
    public_key: Ed25519PublicKey
    fingerprint: str


@dataclass(frozen=True)
class TrustFile:
    path: Path
    signers: tuple[Signer, ...]

    def signer_for(self, key: Ed25519PublicKey) -> Signer | None:
        raw = raw_public_bytes(key)
        for signer in self.signers:
            if raw_public_bytes(signer.public_key) == raw:
                return signer
        return None


def load_trust(path: str | Path) -> TrustFile:
    """Parse a trust file; a malformed one is refused, naming the file, the entry and the field."""
    trust_path = Path(path)
    try:
        text = trust_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FedwardError(f"{trust_path}: trust file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise FedwardError(f"{trust_path}: trust file could not be read ({exc})") from exc
    try:
        data: Any = (
            json.loads(text) if trust_path.suffix.lower() == ".json" else tomllib.loads(text)
        )
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if trust_path.suffix.lower() == ".json" else "TOML"
        raise FedwardError(f"{trust_path}: not valid {kind} ({exc})") from exc
    entries = data.get("signers") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise FedwardError(
            f"{trust_path}: no `signers` list; each signer is a [[signers]] table with name, "
            "role and public_key"
        )
    signers: list[Signer] = []
    seen: dict[str, str] = {}
    for index, entry in enumerate(entries):
        where = f"{trust_path}: signers[{index}]"
        if not isinstance(entry, dict):
            raise FedwardError(f"{where} is not a table with name, role and public_key")
        fields: dict[str, str] = {}
        for name in ("name", "role", "public_key"):
            value = entry.get(name)
            if not isinstance(value, str) or not value.strip():
                got = "missing" if value is None else f"{json.dumps(value)}, not a non-empty text"
                raise FedwardError(f"{where}: field '{name}' is {got}")
            fields[name] = value.strip()
        key = parse_public_key(
            fields["public_key"], f"{where} ({fields['name']}): field 'public_key'"
        )
        key_print = fingerprint(key)
        if key_print in seen and seen[key_print] != fields["name"]:
            raise FedwardError(
                f"{where} ({fields['name']}): field 'public_key' is also listed for "
                f"'{seen[key_print]}'; one key belongs to one person"
            )
        seen[key_print] = fields["name"]
        signers.append(Signer(fields["name"], fields["role"], key, key_print))
    return TrustFile(trust_path, tuple(signers))


def trust_entry(name: str, role: str | None, key: Ed25519PublicKey) -> str:
    """The TOML lines to paste into a trust file for this key."""
    return (
        "[[signers]]\n"
        f"name = {json.dumps(name)}  # exactly as they sign off with --by\n"
        f"role = {json.dumps(role or '<their role, as with --role>')}\n"
        f'public_key = "{public_key_b64(key)}"  # {fingerprint(key)}\n'
    )
