"""The coordinator's register of sites: which node key speaks for which site name.

Without it a site's identity is the name its reply reports, so a site could claim another's name
(and, with a longer ledger, get the honest site refused as "rolled back"). The operator binds each
site's node public key to one name when registering it (`fedward coordinator sites add NAME
KEY.pub`, next to `flwr supernode register KEY.pub`); the register lives in the coordinator's state
folder (``sites.json``, beside ``ledger_heads.json``). At run time the ServerApp reads each node's
public key from the SuperLink (Flower's ``Grid.get_nodes()``: ``NodeInfo.public_key``, the key the
node authenticated with), so every reply is attributed to the registered name of the key that sent
it, never to the name it reports.

An empty or missing register keeps the old behaviour (the reported name): simulations, which
have no node keys, and deployments that have not registered their sites yet (the run record
says identities were not bound).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedward.common.durable_files import atomic_write_json
from fedward.common.errors import FedwardError

REGISTRY_FILE = "sites.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SiteRegistryError(FedwardError):
    """A key or name that cannot be registered, or a register that cannot be read."""


def key_fingerprint(public_key: bytes) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo: the same for the OpenSSH ``.pub`` file the
    operator holds and the PEM bytes the SuperLink stores for the node."""
    from cryptography.exceptions import UnsupportedAlgorithm  # only when a key is read
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    text = public_key.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = serialization.load_ssh_public_key(text)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SiteRegistryError(f"not a public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SiteRegistryError("not an elliptic-curve key (Flower's node keys are ECDSA)")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class RegisteredSite:
    name: str
    fingerprint: str
    added_at: str
    key_file: str


class SiteRegistry:
    """``sites.json`` in the coordinator's state folder: {name: fingerprint, when, from which file}."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / REGISTRY_FILE
        self.sites: dict[str, RegisteredSite] = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
                self.sites = {
                    name: RegisteredSite(
                        name, str(v["fingerprint"]), str(v["added_at"]), str(v["key_file"])
                    )
                    for name, v in raw["sites"].items()
                }
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SiteRegistryError(
                    f"{self.path}: not a site register ({exc}); restore it from a backup"
                ) from None

    @property
    def active(self) -> bool:
        """Identities are bound only once at least one site is registered."""
        return bool(self.sites)

    def save(self) -> None:
        body: dict[str, Any] = {
            "sites": {
                s.name: {
                    "fingerprint": s.fingerprint,
                    "added_at": s.added_at,
                    "key_file": s.key_file,
                }
                for s in sorted(self.sites.values(), key=lambda s: s.name)
            }
        }
        # Atomically (no half-written register), without the run folder's heavy imports: the
        # `fedward coordinator sites` commands start fast.
        atomic_write_json(self.path, body)

    def add(self, name: str, key_file: Path, *, replace: bool = False) -> RegisteredSite:
        """Bind ``name`` to the key in ``key_file``; a name or key already bound is refused unless
        ``replace`` (a site's new key after rotation)."""
        if not _NAME.match(name):
            raise SiteRegistryError(
                f"site name {name!r}: letters, digits, '.', '_' and '-' only (as in its site config)"
            )
        try:
            fingerprint = key_fingerprint(key_file.read_bytes())
        except OSError as exc:
            raise SiteRegistryError(f"{key_file}: cannot read it ({exc.strerror or exc})") from None
        except SiteRegistryError as exc:
            raise SiteRegistryError(f"{key_file}: {exc}") from None
        for other in self.sites.values():
            if other.fingerprint == fingerprint and other.name != name:
                raise SiteRegistryError(
                    f"{key_file} is already the key of site '{other.name}': one key speaks for one "
                    "site only"
                )
        if name in self.sites and not replace and self.sites[name].fingerprint != fingerprint:
            raise SiteRegistryError(
                f"site '{name}' is already registered with another key; pass --replace to bind "
                "it to this one (after a key rotation)"
            )
        site = RegisteredSite(name, fingerprint, datetime.now(UTC).isoformat(), str(key_file))
        self.sites[name] = site
        self.save()
        return site

    def remove(self, name: str) -> None:
        if name not in self.sites:
            raise SiteRegistryError(f"no site '{name}' in {self.path}")
        del self.sites[name]
        self.save()

    def name_of(self, public_key: bytes) -> str | None:
        """The site bound to this node key, if any."""
        if not public_key:
            return None
        try:
            fingerprint = key_fingerprint(public_key)
        except SiteRegistryError:
            return None
        for site in self.sites.values():
            if site.fingerprint == fingerprint:
                return site.name
        return None

    def bind(self, nodes: Iterable[Any]) -> dict[int, str | None]:
        """Node id -> its registered site name (None: its key is not registered), from Flower's
        ``NodeInfo`` records (``node_id``, ``public_key``)."""
        return {int(n.node_id): self.name_of(bytes(n.public_key)) for n in nodes}
