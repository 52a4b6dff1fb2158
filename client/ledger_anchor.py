"""The ledger's anchor outside the ledger file: a high-water mark signed under the site's key.

The hash chain alone is plain SHA-256: anyone who can write ``ledger.sqlite`` can delete the last
row, or edit a row and recompute every hash after it, and the chain still verifies. The anchor
closes that at the site itself, whatever the coordinator remembers:

* the **site key** — 32 random bytes in ``<state>.ledger-key`` beside the state folder, mode 0600;
* the **anchor** — ``<state>.ledger-anchor`` beside it: the number of entries and the head hash
  the site last wrote (the high-water mark), with an HMAC-SHA256 under the site key.

A ledger with fewer entries than the mark was truncated or had rows deleted; one whose entry at
the mark has another hash was rewritten (re-chained); an anchor whose HMAC does not verify was
forged or its key replaced. A ledger *longer* than the mark is accepted when it extends the
marked head (a crash between the ledger's commit and the anchor's write) and the mark moves on.

What it does not stop: someone who can read the key (root, the site's own account) can re-sign
anything, and restoring an old ledger together with its old anchor is a consistent rollback that
only the coordinator's remembered head catches. docs/threat-model.md says so.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from fedward.common.durable_files import atomic_write_bytes

KEY_SUFFIX = ".ledger-key"
ANCHOR_SUFFIX = ".ledger-anchor"
_DOMAIN = "fedward-ledger-anchor/v1"


class AnchorError(Exception):
    """The anchor or the site key cannot be trusted; ``reason`` says what to do."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Anchor:
    seq: int
    head: str
    key_id: str
    mac: str


def key_path(state_dir: Path) -> Path:
    state = state_dir.resolve()
    return state.parent / f"{state.name}{KEY_SUFFIX}"


def anchor_path(state_dir: Path) -> Path:
    state = state_dir.resolve()
    return state.parent / f"{state.name}{ANCHOR_SUFFIX}"


def key_id(key: bytes) -> str:
    """A short public name for a key (its hash), so an anchor says which key signed it."""
    return hashlib.sha256(b"fedward-ledger-key-id\n" + key).hexdigest()[:16]


def _mac(key: bytes, seq: int, head: str) -> str:
    message = f"{_DOMAIN}\n{seq}\n{head}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (0600 from the start)."""
    atomic_write_bytes(path, data)


def read_key(path: Path) -> bytes:
    """The site key; refused when others can read it (it would no longer prove anything)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AnchorError(f"the site key {path} is missing") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AnchorError(
            f"the site key {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"`chmod 600 {path}`, then rotate it (`fedward site rotate-key`): it may have leaked"
        )
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise AnchorError(f"the site key {path} is not a hex key") from None
    if len(key) < 32:
        raise AnchorError(f"the site key {path} is shorter than 32 bytes")
    return key


def new_key(path: Path, *, exclusive: bool = False) -> bytes:
    """A fresh key at ``path`` (0600). ``exclusive``: when another process made one first, use
    theirs, so two adopters of one ledger never sign under different keys."""
    key = secrets.token_bytes(32)
    if not exclusive:
        _write_private(path, (key.hex() + "\n").encode())
        return key
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    _write_private(tmp, (key.hex() + "\n").encode())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return read_key(path)
    finally:
        tmp.unlink(missing_ok=True)
    return key


def sign(key: bytes, seq: int, head: str) -> Anchor:
    return Anchor(seq, head, key_id(key), _mac(key, seq, head))


def write_anchor(path: Path, anchor: Anchor) -> None:
    body = {"seq": anchor.seq, "head": anchor.head, "key_id": anchor.key_id, "mac": anchor.mac}
    _write_private(path, (json.dumps(body, sort_keys=True) + "\n").encode())


def read_anchor(path: Path) -> Anchor:
    try:
        raw = json.loads(path.read_text())
        return Anchor(int(raw["seq"]), str(raw["head"]), str(raw["key_id"]), str(raw["mac"]))
    except FileNotFoundError:
        raise AnchorError(f"the ledger's anchor {path} is missing") from None
    except (ValueError, KeyError, TypeError):
        raise AnchorError(f"the ledger's anchor {path} is not readable") from None


def check(key: bytes, anchor: Anchor) -> None:
    """Raise when the anchor was not signed by ``key``."""
    if not hmac.compare_digest(anchor.mac, _mac(key, anchor.seq, anchor.head)):
        which = "another key" if anchor.key_id != key_id(key) else "this key, then altered"
        raise AnchorError(
            f"the ledger's anchor does not verify under the site key (signed by {which}): the "
            "anchor was forged or the key replaced"
        )


def finish_rotation(state_dir: Path) -> None:
    """Complete or undo a rotation a crash interrupted: the anchor decides which key is live.

    ``rotate`` writes the new key as ``<key>.new``, re-signs the anchor under it, then renames the
    new key over the old one. A ``.new`` key that signed the anchor is moved into place; one that
    did not (the crash came before the anchor was re-signed) is discarded.
    """
    kpath, apath = key_path(state_dir), anchor_path(state_dir)
    pending = kpath.with_name(kpath.name + ".new")
    if not pending.exists():
        return
    try:
        check(read_key(pending), read_anchor(apath))
    except AnchorError:
        pending.unlink()
        return
    os.replace(pending, kpath)


def rotate(state_dir: Path, seq: int, head: str) -> tuple[str, str]:
    """Replace the site key by a new one and re-sign the mark ``(seq, head)`` under it.

    The caller has verified the ledger under the old key first. Returns (old key id, new key id).
    """
    kpath, apath = key_path(state_dir), anchor_path(state_dir)
    old = read_key(kpath)
    pending = kpath.with_name(kpath.name + ".new")
    new = new_key(pending)
    write_anchor(apath, sign(new, seq, head))
    os.replace(pending, kpath)
    return key_id(old), key_id(new)
