"""The release gate: a model leaves the coordinator only with its DP guarantee, a passed audit and a
person's recorded sign-off, as one file set whose every byte is listed in a manifest of hashes.

The seeds' rule (do not share models trained on sensitive data unless protected) is enforced here,
not left to habit: ``release`` refuses unless ``check_release`` finds nothing wrong. A sign-off binds
a named person to the exact bytes of the model, its frozen preprocessing and its card (SHA-256 at
signing time), so changing any of them afterwards voids the sign-off instead of inheriting it. The
log of sign-offs (``signoffs.jsonl``) and of releases (``releases.jsonl``) is append-only, for the
privacy officer's audit trail.

The weights leave as TorchScript: loadable with ``torch.jit.load`` and no fedward code, checked
after saving to give the same logits as the model that was trained.

Hashes show that files agree with each other, not who made them: anyone who can write a release
folder can edit a file and rehash the manifest. So a sign-off made with ``key`` carries the
signer's Ed25519 signature over the record (its file hashes included), an export made with
``key`` writes ``MANIFEST.sig`` beside MANIFEST.json, and ``verify_release(..., trust=...)``
accepts them only when the keys are in the receiver's trust file (``release_signing``).
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fedward.common.code_identity import fedward_version
from fedward.common.config import ModelConfig
from fedward.common.durable_files import atomic_write_bytes, atomic_write_json
from fedward.common.errors import FedwardError
from fedward.common.models import build_model
from fedward.common.preprocessing import SharedTransform
from fedward.server.release_signing import (
    MANIFEST_DOMAIN,
    SIGNATURE_FORMAT,
    SIGNOFF_DOMAIN,
    TrustFile,
    canonical_json,
    sign,
    signature_key,
    verifies,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# torch 2.13 marks torch.jit deprecated in favour of torch.export; TorchScript is still what a
# consumer can load with stock torch and no fedward code, so the warning is not passed on.
_JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"

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
LOGIT_TOLERANCE = 1e-6
_CARD_HINT = "generate it with `fedward card RUN_DIR`"


class ReleaseRefused(FedwardError):
    """The release gate said no; ``problems`` holds every reason, one plain sentence each."""

    def __init__(self, where: str | Path, problems: list[str]) -> None:
        self.where = str(where)
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"release of {self.where} refused:\n{listing}")


@dataclass
class ReleaseCheck:
    """What the gate found: ``ok`` only when ``problems`` is empty and a sign-off is valid."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    signoff: dict[str, Any] | None = None


# ---- small file helpers --------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, written in one call and fsynced: the logs are evidence, not a cache."""
    new = not path.exists()
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:  # the file's directory entry must survive a crash too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read_json(path: Path) -> tuple[Any, str | None]:
    """The parsed file, or None and a sentence saying why it could not be read."""
    if not path.exists():
        return None, f"{path.name} is missing"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name} could not be read as JSON ({exc})"


def _read_object(path: Path, missing_hint: str, problems: list[str]) -> dict[str, Any] | None:
    data, error = _read_json(path)
    if error is not None:
        problems.append(f"{error}: {missing_hint}.")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} does not hold a JSON object: {missing_hint}.")
        return None
    return data


def _account_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER/LOGNAME (some containers)
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- sign-off ------------------------------------------------------------------------------------


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
        hint = f" ({_CARD_HINT})" if any(f.startswith("model_card") for f in missing) else ""
        raise FedwardError(
            f"{run}: cannot sign off, {', '.join(missing)} missing{hint}; a sign-off vouches "
            "for the model and every file released with it, as they are now"
        )
    record = {
        "by": name,
        "role": role,
        "note": note,
        "at": _now(),
        "run_id": _run_identity(run)["run_id"],
        "sha256": {f: sha256_file(run / f) for f in SIGNED_FILES},
    }
    if key is not None:
        record["signature"] = sign(key, SIGNOFF_DOMAIN, canonical_json(record))
    _append_line(run / SIGNOFFS_FILE, record)
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


def _signoff_problem(run: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The latest sign-off that still matches the files, or a sentence saying why there is none."""
    path = run / SIGNOFFS_FILE
    if not path.exists():
        return None, (
            f"{SIGNOFFS_FILE} is missing: nobody has signed off this run; record a sign-off with "
            "`fedward release sign-off RUN_DIR --by NAME --role ROLE` after reading the card."
        )
    current = {f: sha256_file(run / f) if (run / f).is_file() else None for f in SIGNED_FILES}
    records: list[dict[str, Any]] = []
    unreadable = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            unreadable += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            unreadable += 1
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


# ---- the gate ------------------------------------------------------------------------------------


def _run_identity(run: Path) -> dict[str, str]:
    """Name, fedward run id and config hash: from run_record.json, else manifest.json."""
    record, _ = _read_json(run / "run_record.json")
    manifest, _ = _read_json(run / "manifest.json")
    record = record if isinstance(record, dict) else {}
    manifest = manifest if isinstance(manifest, dict) else {}
    return {
        "name": str(manifest.get("name") or "run"),
        "run_id": str(record.get("run_id") or manifest.get("run_id") or "unknown"),
        # run_record.json's hash is of the config the model was trained with (after tuning).
        "config_hash": str(record.get("config_hash") or manifest.get("config_hash") or ""),
    }


def _check_card(run: Path, problems: list[str]) -> dict[str, Any] | None:
    card = _read_object(run / "model_card.json", _CARD_HINT, problems)
    for name in ("model_card.md", "model_card.html"):
        if not (run / name).is_file():
            problems.append(f"{name} is missing: {_CARD_HINT}.")
    if card is None:
        return None
    verdicts = card.get("verdicts")
    if not isinstance(verdicts, dict):
        problems.append(
            "model_card.json has no `verdicts` object: the card predates the release gate; "
            f"{_CARD_HINT}."
        )
        return None
    if verdicts.get("dp_guarantee") is not True:
        problems.append(
            "model_card.json does not state a DP guarantee (verdicts.dp_guarantee is "
            f"{json.dumps(verdicts.get('dp_guarantee'))}): a model is released only when it was "
            "trained with DP and every participating site reported its ε."
        )
    return verdicts


def _check_privacy(run: Path, problems: list[str]) -> None:
    """The DP guarantee from the privacy summary itself, so a stale or edited card cannot claim it."""
    summary = _read_object(
        run / "privacy_summary.json", "the run did not finish writing its privacy summary", problems
    )
    if summary is None:
        return
    if summary.get("dp") is not True:
        problems.append(
            "privacy_summary.json says the run trained without DP (dp = "
            f"{json.dumps(summary.get('dp'))}): a model trained without DP is never released."
        )
        return
    sites = [s for s in summary.get("sites") or [] if isinstance(s, dict)]
    taking_part = [s for s in sites if s.get("status") == "ok"]
    if not taking_part:
        problems.append("privacy_summary.json lists no participating site: no DP guarantee.")
    for s in taking_part:
        eps = s.get("epsilon")
        if not isinstance(eps, int | float) or isinstance(eps, bool) or not math.isfinite(eps):
            problems.append(
                f"privacy_summary.json: site '{s.get('site')}' took part but reported no finite ε "
                f"(epsilon = {json.dumps(eps)}), so the model has no DP guarantee for its data."
            )


def _check_audit(run: Path, verdicts: dict[str, Any] | None, problems: list[str]) -> None:
    audit = _read_object(
        run / "audit.json",
        "the run's models were not audited; run `fedward audit RUN_DIR`",
        problems,
    )
    if audit is None:
        return
    verdict = str(audit.get("verdict") or "")
    if not verdict.startswith("pass"):
        why = {
            "inconclusive": "the audit could not show that the model resists membership "
            "inference (too few rows, or no attack could run)",
        }.get(verdict, "the membership-inference audit did not pass")
        problems.append(
            f"audit.json's verdict is '{verdict or '(none)'}': {why}; such a model is not released."
        )
        return
    if verdicts is not None and verdicts.get("audit_passed") is not True:
        problems.append(
            "model_card.json says the audit did not pass (verdicts.audit_passed is "
            f"{json.dumps(verdicts.get('audit_passed'))}) but audit.json's verdict is "
            f"'{verdict}': the card is out of date; {_CARD_HINT}."
        )


def _check_model(run: Path, problems: list[str]) -> None:
    record = _read_object(
        run / "run_record.json", "the run did not finish writing its record", problems
    )
    if record is not None and record.get("status") != "finished":
        problems.append(
            f"run_record.json says the run's status is '{record.get('status')}' "
            f"({record.get('stopped_reason') or 'no reason given'}): only a finished run's final "
            "model is released."
        )
    if not (run / "model.pt").is_file():
        problems.append("model.pt is missing: the run left no final model to release.")
    description = _read_object(run / "model.json", "the run left no model description", problems)
    transform_data = _read_object(
        run / "transform.json", "the run left no frozen preprocessing", problems
    )
    if description is None or transform_data is None:
        return
    try:
        fingerprint = SharedTransform.from_dict(transform_data).fingerprint()
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(f"transform.json is not a valid frozen transform ({exc}).")
        return
    if fingerprint != description.get("transform_fingerprint"):
        problems.append(
            f"transform.json does not match model.json: its fingerprint is {fingerprint[:12]}…, "
            "but model.json says the model was trained on the output of transform "
            f"{str(description.get('transform_fingerprint'))[:12]}…."
        )


def check_release(run_dir: str | Path) -> ReleaseCheck:
    """Every reason the run's model may not be released yet; ``ok`` when there is none.

    Needs: a finished run with its model; a card stating a DP guarantee (and a privacy summary
    that agrees); a membership audit whose verdict is a pass; a sign-off that matches the files.
    """
    run = Path(run_dir)
    if not run.is_dir():
        return ReleaseCheck(ok=False, problems=[f"{run} is not a run folder."])
    problems: list[str] = []
    _check_model(run, problems)
    verdicts = _check_card(run, problems)
    _check_privacy(run, problems)
    _check_audit(run, verdicts, problems)
    if (
        verdicts is not None
        and verdicts.get("release_ready") is not True
        and verdicts.get("dp_guarantee") is True
        and verdicts.get("audit_passed") is True
    ):
        listed = [str(p) for p in verdicts.get("problems") or []]
        problems.append(
            "model_card.json says the model is not ready for release"
            + (": " + "; ".join(listed) if listed else " (verdicts.release_ready is not true)")
            + "."
        )
    signoff, problem = _signoff_problem(run)
    if problem is not None:
        problems.append(problem)
    return ReleaseCheck(ok=not problems, problems=problems, signoff=signoff)


# ---- export --------------------------------------------------------------------------------------


def _rebuilt_model(description: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    cfg = ModelConfig(
        kind=description["kind"],
        hidden=list(description.get("hidden") or []),
        activation=description.get("activation", "relu"),
    )
    shape = description.get("image_shape")
    model = build_model(cfg, int(description["n_inputs"]), shape)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _torchscript(model: torch.nn.Module, n_inputs: int) -> bytes:
    """Scripted (keeps input-shape branches); traced only when scripting cannot compile it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _JIT_DEPRECATED, DeprecationWarning)
        try:
            compiled = torch.jit.script(model)
        except Exception:  # scripting refuses some Python; a trace of an eval model is exact
            compiled = torch.jit.trace(model, torch.zeros(2, n_inputs))
        buf = io.BytesIO()
        torch.jit.save(compiled, buf)
    return buf.getvalue()


def _logit_difference(model: torch.nn.Module, path: Path, n_inputs: int) -> float:
    """Largest |logit difference| between the saved TorchScript and the model, on a few rows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _JIT_DEPRECATED, DeprecationWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
    loaded.eval()
    gen = torch.Generator().manual_seed(0)
    batches = [
        torch.zeros(3, n_inputs),
        torch.randn(5, n_inputs, generator=gen),
        torch.randn(1, n_inputs, generator=gen),
    ]
    worst = 0.0
    with torch.no_grad():
        for x in batches:
            want, got = model(x), loaded(x)
            if got.shape != want.shape:
                return math.inf
            worst = max(worst, float((got - want).abs().max()))
    return worst


def _release_name(identity: dict[str, str]) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in identity["name"])[:40]
    return f"{safe or 'run'}-{identity['run_id'][:8]}"


def _signed_bytes(run: Path, name: str, signoff: dict[str, Any]) -> bytes:
    """The file's bytes, refused unless they are exactly the bytes that were signed off."""
    data = (run / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != signoff["sha256"][name]:
        raise ReleaseRefused(
            run, [f"{name} changed while the release was being written; check and sign off again."]
        )
    return data


def release(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    by: str | None = None,
    key: Ed25519PrivateKey | None = None,
) -> Path:
    """Export the run's model as one verified file set in ``out_dir/<run-name>-<run-id[:8]>/``.

    Refuses (``ReleaseRefused``, every problem listed) unless ``check_release`` passes, and never
    overwrites a release. Written to a hidden staging folder and renamed into place, so a crash
    leaves no half release. ``by`` is who performs the export (default: the account running it).
    With ``key``, MANIFEST.sig holds the exporter's signature of MANIFEST.json's exact bytes.
    """
    run = Path(run_dir)
    check = check_release(run)
    if not check.ok or check.signoff is None:
        raise ReleaseRefused(run, check.problems or ["no valid sign-off"])
    signoff = check.signoff
    identity = _run_identity(run)
    out = Path(out_dir)
    target = out / _release_name(identity)
    if target.exists():
        raise ReleaseRefused(
            run,
            [
                f"{target} already exists: a release is never overwritten; remove it on purpose "
                "or release into another --out folder."
            ],
        )
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=f".{target.name}.partial-"))
    try:
        manifest = _write_release(run, stage, identity, signoff, by)
        if key is not None:
            _sign_manifest(stage, key)
        if target.exists():
            raise ReleaseRefused(run, [f"{target} appeared while the release was being written."])
        os.rename(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _append_line(
        run / RELEASES_FILE,
        {
            "released_at": manifest["released_at"],
            "released_by": manifest["released_by"],
            "release_dir": str(target.resolve()),
            "manifest_sha256": sha256_file(target / MANIFEST_FILE),
            "manifest_key_fingerprint": (
                None
                if key is None
                else json.loads((target / MANIFEST_SIG_FILE).read_text())["key_fingerprint"]
            ),
            "run_id": identity["run_id"],
            "signoff": _signer_summary(signoff),
        },
    )
    return target


def _signer_summary(signoff: dict[str, Any]) -> dict[str, Any]:
    """Who signed off, when, and with which key (None for an unsigned sign-off)."""
    signature = signoff.get("signature")
    return {
        **{k: signoff.get(k) for k in ("by", "role", "at")},
        "key_fingerprint": signature.get("key_fingerprint")
        if isinstance(signature, dict)
        else None,
    }


def _sign_manifest(folder: Path, key: Ed25519PrivateKey) -> None:
    """MANIFEST.sig: a detached signature of MANIFEST.json's bytes exactly as written."""
    data = (folder / MANIFEST_FILE).read_bytes()
    block = sign(key, MANIFEST_DOMAIN, data)
    atomic_write_json(
        folder / MANIFEST_SIG_FILE,
        {
            "format": SIGNATURE_FORMAT,
            "signed_file": MANIFEST_FILE,
            "signed_sha256": hashlib.sha256(data).hexdigest(),
            **block,
        },
    )


def _write_release(
    run: Path,
    stage: Path,
    identity: dict[str, str],
    signoff: dict[str, Any],
    by: str | None,
) -> dict[str, Any]:
    description = json.loads(_signed_bytes(run, "model.json", signoff))
    model_bytes = _signed_bytes(run, "model.pt", signoff)
    try:
        state = torch.load(io.BytesIO(model_bytes), map_location="cpu", weights_only=True)
        model = _rebuilt_model(description, state)
    except (FedwardError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ReleaseRefused(
            run, [f"model.pt does not load into the model that model.json describes ({exc})."]
        ) from exc
    n_inputs = int(description["n_inputs"])
    atomic_write_bytes(stage / MODEL_FILE, _torchscript(model, n_inputs))
    difference = _logit_difference(model, stage / MODEL_FILE, n_inputs)
    if not difference <= LOGIT_TOLERANCE:
        raise ReleaseRefused(
            run,
            [
                f"{MODEL_FILE} does not reproduce the model: its logits differ by up to "
                f"{difference:.3g} (tolerance {LOGIT_TOLERANCE:g})."
            ],
        )
    for name in COPIED_FILES:
        atomic_write_bytes(stage / name, _signed_bytes(run, name, signoff))
    atomic_write_json(stage / SIGNOFF_FILE, signoff)
    released_by = (by or "").strip() or _account_name()
    manifest: dict[str, Any] = {
        "format": RELEASE_FORMAT,
        "run_name": identity["name"],
        "run_id": identity["run_id"],
        "config_hash": identity["config_hash"],
        "fedward_version": fedward_version(),
        "torch_version": torch.__version__,
        "released_at": _now(),
        "released_by": released_by,
        "signed_off_by": _signer_summary(signoff),
        "model": {
            "file": MODEL_FILE,
            "format": "TorchScript (torch.jit.load; eval mode, CPU)",
            "input": f"float32 rows of {n_inputs} features: the output of transform.json",
            "output": description.get("output"),
            "transform_fingerprint": description.get("transform_fingerprint"),
            "source_sha256": hashlib.sha256(model_bytes).hexdigest(),
            "max_abs_logit_difference": difference,
        },
        "files": {
            p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(stage.iterdir())
            if p.is_file()
        },
    }
    atomic_write_json(stage / MANIFEST_FILE, manifest)
    return manifest


# ---- verification ---------------------------------------------------------------------------------


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
    manifest = _read_object(
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
    signoff, error = _read_json(folder / SIGNOFF_FILE)
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
        actual = _signer_summary(signoff)
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
    sig = _read_object(sig_path, "it should hold the signature of MANIFEST.json", problems)
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
    signoff, error = _read_json(folder / SIGNOFF_FILE)
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
