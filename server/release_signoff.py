"""Sign-offs: a named person vouching for the exact bytes of a run's model and every file released
beside it (SHA-256 at signing time), optionally under their Ed25519 key, so that changing a file or
the record afterwards voids the sign-off instead of inheriting it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedward.common.errors import FedwardError
from fedward.server.json_lines import json_objects
from fedward.server.release_files import (
    CARD_HINT,
    SIGNED_FILES,
    SIGNOFFS_FILE,
    append_line,
    now_iso,
    run_identity,
    sha256_file,
)
from fedward.server.release_signing import (
    SIGNOFF_DOMAIN,
    canonical_json,
    sign,
    signature_key,
    verifies,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def sign_off(
    run_dir: str | Path,
    *,
    by: str,
    role: str,
    note: str = "",
    key: Ed25519PrivateKey | None = None,
) -> dict[str, Any]:
    """Record that ``by`` (in ``role``) approves this exact model and card for release.

    The record holds the SHA-256 of every file in ``SIGNED_FILES`` as they are now; the gate
    counts it only while those files are unchanged. With ``key`` the record also holds
    ``signature``: the signer's Ed25519 signature over the canonical JSON of everything else in
    it, with the public key and its fingerprint, so that renaming the signer or editing any hash
    afterwards shows.
    """
    run = Path(run_dir)
    name, role = by.strip(), role.strip()
    if not name:
        raise FedwardError(
            f"{run / SIGNOFFS_FILE}: a sign-off needs the name of the person signing (--by)"
        )
    if not role:
        raise FedwardError(
            f"{run / SIGNOFFS_FILE}: a sign-off needs the signer's role, e.g. 'privacy officer'"
        )
    if not run.is_dir():
        raise FedwardError(f"{run} is not a run folder: nothing to sign off")
    missing = [f for f in SIGNED_FILES if not (run / f).is_file()]
    if missing:
        hint = f" ({CARD_HINT})" if any(f.startswith("model_card") for f in missing) else ""
        raise FedwardError(
            f"{run}: cannot sign off, {', '.join(missing)} missing{hint}; a sign-off vouches "
            "for the model and every file released with it, as they are now"
        )
    record = {
        "by": name,
        "role": role,
        "note": note,
        "at": now_iso(),
        "run_id": run_identity(run)["run_id"],
        "sha256": {f: sha256_file(run / f) for f in SIGNED_FILES},
    }
    if key is not None:
        record["signature"] = sign(key, SIGNOFF_DOMAIN, canonical_json(record))
    append_line(run / SIGNOFFS_FILE, record)
    return record


def signoff_signature_problem(record: dict[str, Any], where: str) -> str | None:
    """Why a signed sign-off's signature does not verify against its own key; None when it does
    or when the record is unsigned (``where`` names the file in the sentence)."""
    if "signature" not in record:
        return None
    try:
        public, value = signature_key(record["signature"], f"{where}: signature")
    except FedwardError as exc:
        return f"{exc}: the sign-off by {record.get('by') or '(no name)'} cannot be verified."
    payload = {k: v for k, v in record.items() if k != "signature"}
    try:
        message = canonical_json(payload)
    except ValueError:  # NaN or infinity: never in a record fedward signed
        message = b""
    if not verifies(public, value, SIGNOFF_DOMAIN, message):
        return (
            f"{where}: the signature does not match the sign-off by {record.get('by') or '(no name)'}"
            f" ({record.get('role') or 'no role'}): its signer, role, time, note or file hashes "
            "were changed after it was signed."
        )
    return None


def _stale_files(record: dict[str, Any], current: dict[str, str | None]) -> list[str]:
    """The files whose hash differs from the one signed (all of them when the record is malformed)."""
    signed = record.get("sha256")
    if not isinstance(signed, dict) or not str(record.get("by") or "").strip():
        return list(SIGNED_FILES)
    return [f for f in SIGNED_FILES if signed.get(f) is None or signed.get(f) != current.get(f)]


def valid_signoff(run: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The latest sign-off that still matches the files, or a sentence saying why there is none."""
    path = run / SIGNOFFS_FILE
    if not path.exists():
        return None, (
            f"{SIGNOFFS_FILE} is missing: nobody has signed off this run; record a sign-off with "
            "`fedward release sign-off RUN_DIR --by NAME --role ROLE` after reading the card."
        )
    current = {f: sha256_file(run / f) if (run / f).is_file() else None for f in SIGNED_FILES}
    records, unreadable = json_objects(path.read_text(encoding="utf-8", errors="replace"))
    for rec in reversed(records):
        if not _stale_files(rec, current) and signoff_signature_problem(rec, "") is None:
            return rec, None
    if not records:
        return None, (
            f"{SIGNOFFS_FILE} holds no readable sign-off ({unreadable} unreadable line(s)); "
            "record a sign-off with `fedward release sign-off RUN_DIR --by NAME --role ROLE`."
        )
    last = records[-1]
    forged = signoff_signature_problem(last, SIGNOFFS_FILE)
    if forged is not None and not _stale_files(last, current):
        return None, f"{forged} The model and card must be signed off again."
    changed = ", ".join(_stale_files(last, current))
    return None, (
        f"{SIGNOFFS_FILE} holds no valid sign-off: the latest, by {last.get('by') or '(no name)'} "
        f"({last.get('role') or 'no role'}) at {last.get('at') or 'an unknown time'}, was made "
        f"for a different {changed} (changed after signing); the model and card must be signed "
        "off again as they are now."
    )


def signer_summary(signoff: dict[str, Any]) -> dict[str, Any]:
    """Who signed off, when, and with which key (None for an unsigned sign-off)."""
    signature = signoff.get("signature")
    return {
        **{k: signoff.get(k) for k in ("by", "role", "at")},
        "key_fingerprint": signature.get("key_fingerprint")
        if isinstance(signature, dict)
        else None,
    }
