"""Verifying a release folder as its receiver: every file against MANIFEST.json's hashes, the
sign-off against the released files, and the signatures of MANIFEST.json and of the sign-off, by
keys the receiver's trust file lists when one is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedward.common.errors import FedwardError
from fedward.server.release_files import (
    COPIED_FILES,
    MANIFEST_FILE,
    MANIFEST_SIG_FILE,
    MODEL_FILE,
    RELEASE_FILES,
    SIGNOFF_FILE,
    read_json,
    read_object,
    sha256_file,
)
from fedward.server.release_signing import MANIFEST_DOMAIN, TrustFile, signature_key, verifies
from fedward.server.release_signoff import signer_summary, signoff_signature_problem


@dataclass
class ReleaseVerification:
    """What ``verify_release_report`` found.

    ``problems``: every way the folder is wrong (empty when it verifies). ``signers``: one
    sentence per signature that verified, naming the key's owner when a trust file was given.
    ``authenticity_checked``: whether a trust file was given, i.e. whether the signers were checked
    against keys the receiver trusts rather than only against the keys the folder itself carries.
    """

    problems: list[str] = field(default_factory=list)
    signers: list[str] = field(default_factory=list)
    authenticity_checked: bool = False


def verify_release(release_dir: str | Path, trust: TrustFile | None = None) -> list[str]:
    """Every way the release folder differs from its MANIFEST.json or, with ``trust``, fails to
    be signed by the trust file's signers; empty when it verifies."""
    return verify_release_report(release_dir, trust).problems


def verify_release_report(
    release_dir: str | Path, trust: TrustFile | None = None
) -> ReleaseVerification:
    """Hashes, then signatures: MANIFEST.sig over MANIFEST.json and the sign-off's own signature.

    A signature that does not verify against its own key is always a problem (the signed bytes
    were changed). Without ``trust`` that is all that can be said: whoever rewrote the folder
    could have signed it again with a key of their own. With ``trust`` both signatures must exist
    and be made by keys it lists, and the sign-off's name and role must be the key owner's.
    """
    folder = Path(release_dir)
    result = ReleaseVerification(authenticity_checked=trust is not None)
    if not folder.is_dir():
        result.problems.append(f"{folder} is not a release folder.")
        return result
    manifest = read_object(
        folder / MANIFEST_FILE, "this is not a fedward release folder", result.problems
    )
    if manifest is None:
        return result
    files = manifest.get("files")
    if not isinstance(files, dict):
        result.problems.append(f"{MANIFEST_FILE} lists no files.")
        result.problems += _manifest_signature(folder, trust, result.signers)
        return result
    result.problems += _file_problems(folder, manifest, files)
    result.problems += _manifest_signature(folder, trust, result.signers)
    result.problems += _signoff_signature(folder, trust, result.signers)
    return result


def _file_problems(folder: Path, manifest: dict[str, Any], files: dict[str, Any]) -> list[str]:
    """Every file against its listed hash and size; unlisted and missing files."""
    problems: list[str] = []
    for name in RELEASE_FILES:
        if name not in files:
            problems.append(f"{MANIFEST_FILE} does not list {name}, which every release holds.")
    for name, entry in sorted(files.items()):
        path = folder / name
        if Path(name).name != name or name in ("", ".", ".."):
            problems.append(f"{MANIFEST_FILE} lists '{name}', which is not a file of this folder.")
            continue
        if not path.is_file():
            problems.append(f"{name} is listed in {MANIFEST_FILE} but missing.")
            continue
        want = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        got = sha256_file(path)
        if got != want:
            problems.append(
                f"{name} does not match {MANIFEST_FILE}: its SHA-256 is {got[:16]}…, the "
                f"manifest says {str(want)[:16]}…; the file was changed after release."
            )
        elif size != path.stat().st_size:
            problems.append(
                f"{name} does not match {MANIFEST_FILE}: {path.stat().st_size} bytes, the "
                f"manifest says {size}."
            )
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in (MANIFEST_FILE, MANIFEST_SIG_FILE) and rel not in files:
            problems.append(f"{rel} is in the release folder but not listed in {MANIFEST_FILE}.")
    problems += _signoff_consistency(folder, manifest, files)
    return problems


def _signoff_consistency(
    folder: Path, manifest: dict[str, Any], files: dict[str, Any]
) -> list[str]:
    """The released files and weights must be the ones the sign-off names."""
    signoff, error = read_json(folder / SIGNOFF_FILE)
    if error is not None:
        return []  # a missing or unreadable signoff.json is already reported above
    signed = signoff.get("sha256") if isinstance(signoff, dict) else None
    if not isinstance(signed, dict):
        return [f"{SIGNOFF_FILE} holds no signed hashes: it is not a fedward sign-off record."]
    out = []
    for name in COPIED_FILES:
        entry = files.get(name)
        if isinstance(entry, dict) and signed.get(name) != entry.get("sha256"):
            out.append(f"{SIGNOFF_FILE} was signed for a different {name} than the released one.")
    model = manifest.get("model")
    source = model.get("source_sha256") if isinstance(model, dict) else None
    if signed.get("model.pt") != source:
        out.append(
            f"{SIGNOFF_FILE} was signed for different weights than {MODEL_FILE} was made from."
        )
    named = manifest.get("signed_off_by")
    if isinstance(named, dict) and isinstance(signoff, dict):
        actual = signer_summary(signoff)
        for k in ("by", "role", "at", "key_fingerprint"):
            if k in named and named.get(k) != actual.get(k):
                out.append(
                    f"{MANIFEST_FILE} says the sign-off's {k} is {json.dumps(named.get(k))} but "
                    f"{SIGNOFF_FILE} says {json.dumps(actual.get(k))}."
                )
    return out


def _manifest_signature(folder: Path, trust: TrustFile | None, signers: list[str]) -> list[str]:
    """MANIFEST.sig must verify over MANIFEST.json's bytes; with ``trust``, by a listed key."""
    sig_path = folder / MANIFEST_SIG_FILE
    if not sig_path.exists():
        if trust is None:
            return []
        return [
            f"{MANIFEST_SIG_FILE} is missing: the release was exported without --key, so nothing "
            f"shows who made it; {trust.path} cannot vouch for it."
        ]
    problems: list[str] = []
    sig = read_object(sig_path, "it should hold the signature of MANIFEST.json", problems)
    if sig is None:
        return problems
    try:
        public, value = signature_key(sig, MANIFEST_SIG_FILE)
    except FedwardError as exc:
        return [f"{exc}; MANIFEST.json's signature cannot be checked."]
    owner = trust.signer_for(public) if trust is not None else None
    if trust is not None and owner is None:
        problems.append(
            f"{MANIFEST_SIG_FILE}: MANIFEST.json is signed with key {sig['key_fingerprint']}, "
            f"which {trust.path} does not list: the release was not signed by a trusted signer."
        )
    if not verifies(public, value, MANIFEST_DOMAIN, (folder / MANIFEST_FILE).read_bytes()):
        problems.append(
            f"{MANIFEST_SIG_FILE}: the signature does not match {MANIFEST_FILE}: "
            f"{MANIFEST_FILE} was changed after it was signed."
        )
    if not problems:
        who = f"{owner.name} ({owner.role})" if owner is not None else "a key the folder carries"
        signers.append(f"{MANIFEST_FILE} signed by {who}, key {sig['key_fingerprint']}")
    return problems


def _signoff_signature(folder: Path, trust: TrustFile | None, signers: list[str]) -> list[str]:
    """signoff.json's signature must verify; with ``trust``, by the key of the person it names."""
    signoff, error = read_json(folder / SIGNOFF_FILE)
    if error is not None or not isinstance(signoff, dict):
        return []  # reported with the hashes
    by, role = str(signoff.get("by") or ""), str(signoff.get("role") or "")
    if "signature" not in signoff:
        if trust is None:
            return []
        return [
            f"{SIGNOFF_FILE} is not signed: the sign-off by {by or '(no name)'} was recorded "
            f"without --key, so {trust.path} cannot show that {by or 'anyone'} made it."
        ]
    problem = signoff_signature_problem(signoff, SIGNOFF_FILE)
    if problem is not None:
        return [problem]
    public, _ = signature_key(signoff["signature"], SIGNOFF_FILE)
    key_print = signoff["signature"]["key_fingerprint"]
    if trust is None:
        signers.append(f"sign-off by {by} ({role}) signed by a key the folder carries, {key_print}")
        return []
    owner = trust.signer_for(public)
    if owner is None:
        return [
            f"{SIGNOFF_FILE}: the sign-off by {by} ({role}) is signed with key {key_print}, which "
            f"{trust.path} does not list: it was not made by a trusted signer."
        ]
    problems = []
    if owner.name != by.strip():
        problems.append(
            f"{SIGNOFF_FILE} names '{by}' as the signer but is signed with the key {trust.path} "
            f"lists for '{owner.name}' ({owner.role})."
        )
    if owner.role.casefold() != role.strip().casefold():
        problems.append(
            f"{SIGNOFF_FILE} gives the role '{role}' but {trust.path} lists {owner.name} as "
            f"'{owner.role}'."
        )
    if not problems:
        signers.append(f"sign-off by {owner.name} ({owner.role}), key {key_print}")
    return problems
