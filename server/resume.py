"""Resuming a run whose coordinator died (SIGKILL, power cut, a lost SuperLink): the checks before
it continues, the lock that keeps two coordinators off one run folder, and the audit events.

A resumed run keeps fedward's run id (the sites' ledgers and plans are keyed by it, so the budget a
site planned for the run, which reserves one retried round, still applies) and the run folder (its
progress, metric history and checkpoints continue). It starts from the last complete checkpoint
(``fedward.server.checkpoint``): after round k it runs rounds k+1..n under their real numbers. The
round the crash interrupted is retried as a new attempt with its own attempt id; what the sites
spent on the lost attempt was committed to their ledgers before it was trained, stays there and
stays in the ε they report. A site refuses to train the same attempt twice or a round older than
one it already trained (``fedward.client.app``), so nothing is counted twice.

`fedward run APP_DIR FEDERATION --resume RUN_DIR` launches with the run-config values the run was
first launched with (``launch.json`` in the run folder) plus ``run-dir`` and ``resume``; the ServerApp
refuses, and says why, when the run folder has no checkpoint, when the run already finished, when
the config it is asked to run has another hash than the one the run started with, or when another
coordinator still holds the run folder's lock.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedward.common.errors import FedwardError
from fedward.common.run_config import RunConfig
from fedward.server.checkpoint import ResumeCheckpoint, load_last_checkpoint
from fedward.server.coordinator_audit import CoordinatorAudit
from fedward.server.site_tracking import SiteTracking

LAUNCH_FILE = "launch.json"  # the app's run-config values the run was first launched with
LOCK_FILE = ".coordinator.lock"
# Run-config keys that describe one launch, not the run: never carried into a resume.
LAUNCH_ONLY_KEYS = ("run-dir", "resume", "audit-run-dir")


class ResumeError(FedwardError):
    """The run folder cannot be resumed; the message says why and what to do."""


@dataclass(frozen=True)
class ResumePoint:
    run_dir: Path
    checkpoint: ResumeCheckpoint
    manifest: dict[str, Any]

    @property
    def next_round(self) -> int:
        return self.checkpoint.round + 1

    def describe(self, rounds: int) -> str:
        ckpt = self.checkpoint
        name = ckpt.path.name if ckpt.path is not None else "?"
        if ckpt.round >= rounds:
            then = "all rounds are done: the final evaluation and reports run again"
        else:
            then = f"continuing with round {ckpt.round + 1} of {rounds}"
        return (
            f"run {ckpt.run_id} from its checkpoint after round {ckpt.round} "
            f"({name}, written {ckpt.written or 'at an unknown time'}); {then}"
        )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def resume_point(run_dir: str | Path, asked: RunConfig | None) -> ResumePoint:
    """Everything that must hold before a run is resumed, checked in the order a person fixes it.

    ``asked``: the run config the resumed coordinator was given; its hash must be the one the run
    was started with (the manifest's), else the resumed rounds would not be the run the sites
    approved and the checkpoint's model was trained for. None skips that check.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise ResumeError(f"{folder} does not exist: give the run folder of the run to resume")
    manifest = _read_json(folder / "manifest.json")
    if manifest is None:
        raise ResumeError(f"{folder} is not a run folder (no readable manifest.json)")
    record = _read_json(folder / "run_record.json")
    if record is not None and record.get("status") in ("finished", "stopped"):
        raise ResumeError(
            f"run {record.get('run_id')} in {folder} already {record['status']}: there is "
            "nothing to resume; start a new run"
        )
    checkpoint = load_last_checkpoint(folder)
    if checkpoint is None:
        raise ResumeError(
            f"{folder} has no checkpoint (checkpoints/state-NNNN.pt): its coordinator stopped "
            "before the first round finished, so there is nothing to continue from; start a new run"
        )
    started_hash = str(manifest.get("config_hash", ""))
    if checkpoint.config_hash != started_hash:
        raise ResumeError(
            f"the checkpoint {checkpoint.path} belongs to a run with config hash "
            f"{checkpoint.config_hash}, but {folder}/manifest.json says {started_hash}: the run "
            "folder was mixed up; resume it from a copy that is whole"
        )
    if asked is not None and asked.config_hash() != started_hash:
        raise ResumeError(
            f"the run config given has config hash {asked.config_hash()}, but the run in {folder} "
            f"was started with {started_hash}: resume with the same run config and overrides "
            f"(`fedward run --resume` reuses {folder / LAUNCH_FILE}; leave out --run-config "
            "overrides that change the run)"
        )
    return ResumePoint(folder, checkpoint, manifest)


def launch_values(run_dir: str | Path) -> dict[str, Any]:
    """The app's run-config values the run was first launched with, without the launch-only keys."""
    data = _read_json(Path(run_dir) / LAUNCH_FILE) or {}
    return {k: v for k, v in data.items() if k not in LAUNCH_ONLY_KEYS}


# ---- one coordinator per run folder -------------------------------------------------------------


class RunLock:
    """An exclusive ``flock`` on the run folder, held while a coordinator runs it.

    The kernel drops the lock when the process dies, SIGKILL included, so a crashed coordinator
    never leaves a stale lock; a coordinator that is still alive keeps a resume from starting a
    second one on the same folder (same machine or a shared disk with working locks).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ResumeError(
                f"another coordinator (pid {holder}) is still running the run in "
                f"{self.path.parent}: stop it (`flwr stop RUN_ID FEDERATION`) before resuming"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ---- the coordinator's audit events about sites ------------------------------------------------


class SiteAdmissions:
    """Turns the tracker's per-site status into audit events, once per change.

    A site is *admitted* to a run the first time its update is accepted, and *refused* when it is
    left out for good (it refused, or the coordinator refused it: a ledger check failed).
    """

    def __init__(self, audit: CoordinatorAudit, run_id: str) -> None:
        self.audit = audit
        self.run_id = run_id
        self.seen: dict[str, str] = {}

    def restore(self, tracker: SiteTracking) -> None:
        """A resumed run already recorded the checkpoint's sites: do not record them again."""
        for rec in tracker.sites.values():
            self.seen[rec.label] = self._state(tracker, rec.node_id)

    @staticmethod
    def _state(tracker: SiteTracking, node_id: int) -> str:
        rec = tracker.sites[node_id]
        if node_id in tracker.excluded or rec.status == "refused":
            return "refused"
        return "admitted" if rec.rounds_ok > 0 else "pending"

    def sweep(self, tracker: SiteTracking, server_round: int | None) -> None:
        for node_id, rec in list(tracker.sites.items()):
            state = self._state(tracker, node_id)
            if state == "pending" or self.seen.get(rec.label) == state:
                continue
            self.seen[rec.label] = state
            self.audit.record(
                f"site-{state}",
                run_id=self.run_id,
                site=rec.label,
                round=server_round,
                reason=rec.reason if state == "refused" else None,
            )
