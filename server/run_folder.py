"""The run folder: manifest, progress events, per-round checkpoints, metrics and the final model.

Everything is written atomically (write to a temporary file, fsync, rename), so a coordinator that
dies mid-write leaves the previous version, never a torn file.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord

from fedward.common.durable_files import atomic_write_bytes, atomic_write_json
from fedward.common.run_config import RunConfig

PROGRESS_FILE = "progress.jsonl"
_PACKAGES = (
    "fedward",
    "flwr",
    "torch",
    "opacus",
    "numpy",
    "scikit-learn",
    "pandas",
    "pydantic",
    "ray",
)


def package_versions() -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(start: Path | None = None) -> str | None:
    """The source tree's commit, when fedward runs from a git checkout."""
    here = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


class RunFolder:
    """One run's folder on the coordinator."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(
        cls, root: str | Path, run: RunConfig, *, run_id: int | str, engine: str
    ) -> RunFolder:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in run.name)[:40]
        path = Path(root) / f"{stamp}-{safe}-{run_id}"
        return cls.at(path, run, run_id=run_id, engine=engine)

    @classmethod
    def at(cls, path: str | Path, run: RunConfig, *, run_id: int | str, engine: str) -> RunFolder:
        folder = cls(path)
        folder.path.mkdir(parents=True, exist_ok=True)
        (folder.path / "checkpoints").mkdir(exist_ok=True)
        atomic_write_json(folder.path / "run_config.json", run.model_dump(mode="json"))
        atomic_write_json(folder.path / "manifest.json", build_manifest(run, run_id, engine))
        return folder

    @classmethod
    def reopen(cls, path: str | Path) -> RunFolder:
        """An existing run folder, continued by a resumed coordinator: its manifest, run config and
        progress are kept as they are; a progress line the crash cut short is closed off, so the
        next event starts on a line of its own."""
        folder = cls(path)
        if not (folder.path / "manifest.json").is_file():
            raise FileNotFoundError(f"{folder.path} is not a run folder: it has no manifest.json")
        progress = folder.path / PROGRESS_FILE
        if progress.is_file() and progress.stat().st_size:
            with progress.open("rb+") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
        return folder

    # ---- progress events (read by `fedward simulate` / `fedward run` to show progress) ----------

    def event(self, kind: str, **data: Any) -> None:
        record = {"t": round(time.time(), 3), "event": kind, **data}
        with (self.path / PROGRESS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()

    # ---- models -----------------------------------------------------------------------------------

    def save_checkpoint(self, server_round: int, arrays: ArrayRecord) -> Path:
        path = self.path / "checkpoints" / f"round-{server_round:04d}.pt"
        _save_state_dict(path, arrays)
        atomic_write_json(
            self.path / "checkpoints" / "latest.json", {"round": server_round, "file": path.name}
        )
        return path

    def save_model(self, arrays: ArrayRecord, description: dict[str, Any]) -> Path:
        path = self.path / "model.pt"
        _save_state_dict(path, arrays)
        atomic_write_json(self.path / "model.json", description)
        return path

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        atomic_write_json(path, data)
        return path


def _save_state_dict(path: Path, arrays: ArrayRecord) -> None:
    buf = io.BytesIO()
    torch.save(arrays.to_torch_state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())


def build_manifest(run: RunConfig, run_id: int | str, engine: str) -> dict[str, Any]:
    """What it takes to reproduce the run: seeds, versions, config hash, commit, torch settings."""
    return {
        "run_id": str(run_id),
        "name": run.name,
        "created": datetime.now(UTC).isoformat(),
        "engine": engine,
        "config_hash": run.config_hash(),
        "seed": run.seed,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "argv0": Path(sys.argv[0]).name,
        },
        "torch": {
            "deterministic_algorithms": True,
            "cudnn_benchmark": False,
            "cuda_available": torch.cuda.is_available(),
        },
    }
