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

This module exports a release; the gate's checks are in ``release_gate``, sign-offs in
``release_signoff``, the receiver's verification in ``release_verify`` and the file layout in
``release_files``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fedward.common.code_identity import fedward_version
from fedward.common.durable_files import atomic_write_bytes, atomic_write_json
from fedward.common.errors import FedwardError
from fedward.common.learning_config import ModelConfig
from fedward.common.models import build_model
from fedward.server.release_files import (
    COPIED_FILES,
    MANIFEST_FILE,
    MANIFEST_SIG_FILE,
    MODEL_FILE,
    RELEASE_FORMAT,
    RELEASES_FILE,
    SIGNOFF_FILE,
    account_name,
    append_line,
    now_iso,
    run_identity,
    sha256_file,
)
from fedward.server.release_gate import check_release
from fedward.server.release_signing import MANIFEST_DOMAIN, SIGNATURE_FORMAT, sign
from fedward.server.release_signoff import (
    signer_summary,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# torch 2.13 marks torch.jit deprecated in favour of torch.export; TorchScript is still what a
# consumer can load with stock torch and no fedward code, so the warning is not passed on.
_JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"

LOGIT_TOLERANCE = 1e-6


class ReleaseRefused(FedwardError):
    """The release gate said no; ``problems`` holds every reason, one plain sentence each."""

    def __init__(self, where: str | Path, problems: list[str]) -> None:
        self.where = str(where)
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"release of {self.where} refused:\n{listing}")


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
    identity = run_identity(run)
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
    append_line(
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
            "signoff": signer_summary(signoff),
        },
    )
    return target


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
    released_by = (by or "").strip() or account_name()
    manifest: dict[str, Any] = {
        "format": RELEASE_FORMAT,
        "run_name": identity["name"],
        "run_id": identity["run_id"],
        "config_hash": identity["config_hash"],
        "fedward_version": fedward_version(),
        "torch_version": torch.__version__,
        "released_at": now_iso(),
        "released_by": released_by,
        "signed_off_by": signer_summary(signoff),
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
