"""The model card's collector: the run folder's files, read once, and what a missing one means.

The card recomputes nothing from data; everything it says comes from what this module reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedward.common.errors import FedwardError
from fedward.server.companions import COMPANIONS_DIR
from fedward.server.release_files import RELEASES_FILE, SIGNED_FILES, SIGNOFFS_FILE, sha256_file

ENCRYPTED_INFERENCE_FILE = "encrypted_inference.json"
NOT_DONE = "not done"

# What a finished run folder holds, and what its absence means.
REQUIRED_FILES = {
    "manifest.json": "written when a run starts; this is not a fedward run folder",
    "run_config.json": "written when a run starts; this is not a fedward run folder",
    "run_record.json": "written when a run ends; the run has not finished",
    "privacy_summary.json": "written when a run ends; the run has not finished",
    "metrics.json": "written when a run ends; the run has not finished",
    "transform.json": "the frozen preprocessing; the run did not get past its start",
    "model.json": "written only when a run trains to the end; the run stopped or has not finished",
}
OPTIONAL_FILES = {
    "baselines.json": "baselines were switched off for this run (baselines.enabled = false)",
    "audit.json": "the membership-inference audit was switched off (audit.enabled = false) or has "
    "not run; run `fedward audit RUN_DIR`",
    "profiles.json": "the sites' training-data profiles were not collected for this run",
}


class RunNotFinished(FedwardError, FileNotFoundError):
    """The folder lacks a file a finished run writes; the message names it and what it means."""


# ---- reading the run folder ---------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunNotFinished(f"{path} cannot be read as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RunNotFinished(f"{path} does not hold a JSON object")
    return data


def load_run(run_dir: str | Path) -> dict[str, dict[str, Any] | None]:
    """Every file the card reads, by name; an optional file that is absent is None."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunNotFinished(f"{path} is not a folder: give a finished fedward run folder")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        record = path / "run_record.json"
        status = ""
        if record.is_file():
            data = _read(record)
            if data.get("status") != "finished":
                status = (
                    f" (run_record.json says the run {data.get('status')}: "
                    f"{data.get('stopped_reason') or 'no reason given'})"
                )
        listing = "; ".join(f"{n} is missing ({REQUIRED_FILES[n]})" for n in missing)
        raise RunNotFinished(f"{path}: no model card for an unfinished run{status}: {listing}")
    out: dict[str, dict[str, Any] | None] = {n: _read(path / n) for n in REQUIRED_FILES}
    for name in (*OPTIONAL_FILES, ENCRYPTED_INFERENCE_FILE):
        out[name] = _read(path / name) if (path / name).is_file() else None
    return out


def section_not_done(name: str) -> dict[str, Any]:
    return {
        "done": False,
        "status": NOT_DONE,
        "reason": f"{name} is missing: {OPTIONAL_FILES[name]}",
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The readable JSON objects of an append-only log, oldest first; [] when there is none."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def companion_names(run_dir: Path) -> list[str]:
    """The folders of the federations that ran beside the run (controls, baselines)."""
    companions = run_dir / COMPANIONS_DIR
    if not companions.is_dir():
        return []
    return [p.name for p in companions.iterdir() if p.is_dir()]


def release_records(run_dir: Path) -> dict[str, Any]:
    """signoffs.jsonl and releases.jsonl, and (when someone signed off) the current SHA-256 of
    every file a sign-off covers but the card itself (None for a file that is gone)."""
    signoffs = read_jsonl(run_dir / SIGNOFFS_FILE)
    releases = read_jsonl(run_dir / RELEASES_FILE)
    hashes: dict[str, str | None] = {}
    if signoffs:
        for name in SIGNED_FILES:
            if not name.startswith("model_card"):
                path = run_dir / name
                hashes[name] = sha256_file(path) if path.is_file() else None
    return {"signoffs": signoffs, "releases": releases, "hashes": hashes}
