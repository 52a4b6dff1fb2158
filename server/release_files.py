"""A release's file layout, and how the release gate reads, hashes and appends to those files.

The names of the files a run folder must hold before release and of those a release folder holds;
the logs of sign-offs and releases are appended one fsynced JSON line at a time, since they are
evidence, not a cache.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SIGNOFFS_FILE = "signoffs.jsonl"
RELEASES_FILE = "releases.jsonl"
MANIFEST_FILE = "MANIFEST.json"
# The detached signature of MANIFEST.json's exact bytes; not listed in the manifest it signs.
MANIFEST_SIG_FILE = "MANIFEST.sig"
SIGNOFF_FILE = "signoff.json"
MODEL_FILE = "model.ts"
RELEASE_FORMAT = "fedward-release/1"
# Copied from the run folder into every release, byte for byte.
COPIED_FILES = (
    "transform.json",
    "model.json",
    "model_card.json",
    "model_card.md",
    "model_card.html",
    "audit.json",
    "privacy_summary.json",
)
# What a sign-off vouches for: the weights and every file released beside them, as the signer saw
# them. A re-run audit or a regenerated card voids it: the signer has not seen the new one.
SIGNED_FILES = ("model.pt", *COPIED_FILES)
RELEASE_FILES = (MODEL_FILE, *COPIED_FILES, SIGNOFF_FILE)
CARD_HINT = "generate it with `fedward card RUN_DIR`"


def sha256_file(path: Path) -> str:
    """The file's SHA-256, read in blocks: a model may not fit twice in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_synced(
    path: Path, data: bytes, flags: int, mode: int, *, exact_mode: bool = False
) -> None:
    """``data`` written in one call and fsynced before the file is closed: a log line or a key is
    on disk when this returns. ``flags`` add to O_WRONLY (append, create, never overwrite);
    ``exact_mode`` sets ``mode`` whatever the umask."""
    fd = os.open(path, os.O_WRONLY | flags, mode)
    try:
        if exact_mode:
            os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, written in one call and fsynced: the logs are evidence, not a cache."""
    new = not path.exists()
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    write_synced(path, line, os.O_APPEND | os.O_CREAT, 0o644)
    if new:  # the file's directory entry must survive a crash too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_json(path: Path) -> tuple[Any, str | None]:
    """The parsed file, or None and a sentence saying why it could not be read."""
    if not path.exists():
        return None, f"{path.name} is missing"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name} could not be read as JSON ({exc})"


def read_object(path: Path, missing_hint: str, problems: list[str]) -> dict[str, Any] | None:
    """The file's JSON object, or None with a problem (ending in ``missing_hint``) appended."""
    data, error = read_json(path)
    if error is not None:
        problems.append(f"{error}: {missing_hint}.")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} does not hold a JSON object: {missing_hint}.")
        return None
    return data


def account_name() -> str:
    """Who runs this process, for a release made without --by."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER/LOGNAME (some containers)
        return "unknown"


def now_iso() -> str:
    """UTC now to the second, as the sign-off and release logs record it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_identity(run: Path) -> dict[str, str]:
    """Name, fedward run id and config hash: from run_record.json, else manifest.json."""
    record, _ = read_json(run / "run_record.json")
    manifest, _ = read_json(run / "manifest.json")
    record = record if isinstance(record, dict) else {}
    manifest = manifest if isinstance(manifest, dict) else {}
    return {
        "name": str(manifest.get("name") or "run"),
        "run_id": str(record.get("run_id") or manifest.get("run_id") or "unknown"),
        # run_record.json's hash is of the config the model was trained with (after tuning).
        "config_hash": str(record.get("config_hash") or manifest.get("config_hash") or ""),
    }
