"""Resume checkpoints: everything a coordinator needs to continue a run after it was killed.

One file per completed round, ``checkpoints/state-NNNN.pt``, written at the end of the round (after
its tune evaluation) with the run folder's atomic write (temporary file in the same folder, fsync,
rename, fsync the folder): a reader finds the previous round's file or this one, never a torn one.
The file is the commit point, so a checkpoint is one file, never a set of files that could disagree.
A temporary file a crash leaves behind (``.state-NNNN.pt.*.tmp``) is never read; a complete file that
fails to load (a disk error) is skipped for the one before it.

A checkpoint holds the global model after round k, the round number, fedward's run id, the config
hash the run was asked with and the run config it federates (after a tuning search), the tracker's
per-site records and metric history, and the strategy state Flower's strategies keep between rounds:
FedOpt's moments (FedAdam, FedYogi, FedAdagrad: ``m_t``, ``v_t``), the adaptive-clipping norm of
Flower's central-DP wrapper and fedward's record of central-DP releases.

Not restored, by design: the random state of Flower's node sampling and of the central-DP noise
(fresh randomness after a resume is as private as before); replies of the round the crash
interrupted (that round is retried as a new attempt; what the sites spent on the lost attempt stays
in their ledgers and in the ε they report); a central-DP release made by the lost attempt after its
aggregation (it never left the coordinator unless the crash came during that round's evaluation).
The frozen shared transform is not in the checkpoint: it is the run folder's ``transform.json``,
written once before round 1 and read back on resume, so the sites never release it twice.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from logging import WARNING
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.common.logger import log
from flwr.serverapp.strategy import DifferentialPrivacyServerSideAdaptiveClipping, Strategy

from fedward.common.durable_files import atomic_write_bytes, atomic_write_json
from fedward.common.errors import FedwardError
from fedward.common.flower_compat import FEDOPT_MOMENTS, fedopt_moments, set_fedopt_moment
from fedward.server.site_tracking import SiteTracking
from fedward.server.strategies import CentralDPAccounting, Release
from fedward.server.tracking_book import SiteRecord

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"
_STATE_FILE = re.compile(r"^state-(\d{4,})\.pt$")


class CheckpointError(FedwardError):
    """A checkpoint cannot be written, read or applied to this run."""


@dataclass
class ResumeCheckpoint:
    """The state after ``round`` completed rounds (training and tune evaluation)."""

    round: int
    run_id: str
    config_hash: str  # of the run config the run was asked with (the manifest's)
    run: str  # the run config it federates, as JSON (differs from the asked one after tuning)
    arrays: ArrayRecord
    tracker: dict[str, Any]
    strategy: dict[str, Any]
    strategy_arrays: dict[str, torch.Tensor]
    written: str = ""
    path: Path | None = None


def state_path(run_dir: str | Path, server_round: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"state-{server_round:04d}.pt"


def write_checkpoint(run_dir: str | Path, ckpt: ResumeCheckpoint) -> Path:
    """Write round ``ckpt.round``'s checkpoint atomically, then point ``latest_state.json`` at it."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "round": int(ckpt.round),
        "run_id": ckpt.run_id,
        "config_hash": ckpt.config_hash,
        "run": ckpt.run,
        "arrays": ckpt.arrays.to_torch_state_dict(),
        "tracker": json.dumps(ckpt.tracker, default=str),
        "strategy": json.dumps(ckpt.strategy, default=str),
        "strategy_arrays": dict(ckpt.strategy_arrays),
        "written": datetime.now(UTC).isoformat(),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = state_path(run_dir, ckpt.round)
    atomic_write_bytes(path, buf.getvalue())
    # A convenience for people and dashboards; the loader scans the files, never trusts this alone.
    atomic_write_json(
        path.parent / "latest_state.json", {"round": int(ckpt.round), "file": path.name}
    )
    return path


def read_checkpoint(path: Path) -> ResumeCheckpoint:
    """One checkpoint file; CheckpointError names the file and what is wrong with it."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a fedward resume checkpoint of format {CHECKPOINT_FORMAT}"
        )
    try:
        return ResumeCheckpoint(
            round=int(raw["round"]),
            run_id=str(raw["run_id"]),
            config_hash=str(raw["config_hash"]),
            run=str(raw["run"]),
            arrays=ArrayRecord(raw["arrays"]),
            tracker=json.loads(raw["tracker"]),
            strategy=json.loads(raw["strategy"]),
            strategy_arrays=dict(raw["strategy_arrays"]),
            written=str(raw.get("written", "")),
            path=path,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is incomplete: {exc}") from exc


def load_last_checkpoint(run_dir: str | Path) -> ResumeCheckpoint | None:
    """The latest checkpoint that loads; None when the run folder has none.

    Only whole ``state-NNNN.pt`` files are candidates (a crash's temporary file never is); one that
    fails to load is logged and the round before it is tried.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    candidates: list[tuple[int, Path]] = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _STATE_FILE.match(p.name)
            if m and p.is_file():
                candidates.append((int(m.group(1)), p))
    for _, path in sorted(candidates, reverse=True):
        try:
            return read_checkpoint(path)
        except CheckpointError as exc:
            log(WARNING, "skipping checkpoint: %s", exc)
    return None


# ---- the tracker's records ---------------------------------------------------------------------


def tracker_state(tracker: SiteTracking) -> dict[str, Any]:
    """Per-site records, the sites left out, the round attempts and the metric history."""
    sites = []
    for rec in tracker.sites.values():
        data = asdict(rec)
        sites.append(
            {k: sorted(v) if isinstance(v, set) else v for k, v in data.items()}  # sets to lists
        )
    return {
        "sites": sites,
        "excluded": sorted(tracker.excluded),
        "attempts": {str(k): v for k, v in tracker.attempts.items()},
        "history": tracker.history,
    }


def restore_tracker(tracker: SiteTracking, state: dict[str, Any]) -> None:
    """Put a checkpoint's records back into a fresh tracker (fields it does not know are dropped)."""
    blank = SiteRecord(node_id=0)
    known = {f.name for f in fields(SiteRecord)}
    tracker.sites.clear()
    for data in state.get("sites", []):
        values = {k: v for k, v in data.items() if k in known}
        for key, value in list(values.items()):
            if isinstance(getattr(blank, key), set):
                values[key] = set(value)
        rec = SiteRecord(**values)
        tracker.sites[rec.node_id] = rec
        tracker.restored.add(rec.node_id)
    tracker.excluded.update(int(n) for n in state.get("excluded", []))
    tracker.attempts.update({int(k): str(v) for k, v in state.get("attempts", {}).items()})
    history = state.get("history", {})
    for split in tracker.history:
        tracker.history[split] = list(history.get(split, []))


# ---- the state Flower's strategies keep between rounds -----------------------------------------


def _chain(strategy: Strategy) -> Iterator[Strategy]:
    """The strategy and every strategy it wraps (Flower's wrappers keep theirs in ``.strategy``)."""
    seen: set[int] = set()
    current: Any = strategy
    while isinstance(current, Strategy) and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "strategy", None)


def strategy_state(strategy: Strategy) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """What each strategy of the chain carries from round to round, as JSON plus named tensors."""
    state: dict[str, Any] = {"chain": [type(s).__name__ for s in _chain(strategy)]}
    arrays: dict[str, torch.Tensor] = {}
    for depth, s in enumerate(_chain(strategy)):
        for attr, moments in (fedopt_moments(s) or {}).items():
            state[f"{depth}.{attr}"] = list(moments)
            for key, value in moments.items():
                arrays[f"{depth}.{attr}.{key}"] = torch.from_numpy(np.array(value, copy=True))
        if isinstance(s, DifferentialPrivacyServerSideAdaptiveClipping):
            state[f"{depth}.clipping_norm"] = float(s.clipping_norm)
        if isinstance(s, CentralDPAccounting):
            state[f"{depth}.releases"] = [asdict(r) for r in s.releases]
    return state, arrays


def restore_strategy(
    strategy: Strategy, state: dict[str, Any], arrays: dict[str, torch.Tensor]
) -> None:
    """Apply ``strategy_state``'s output to a freshly built strategy of the same chain."""
    chain = list(_chain(strategy))
    names = [type(s).__name__ for s in chain]
    if state.get("chain", names) != names:
        raise CheckpointError(
            f"the checkpoint's strategy chain {' -> '.join(state['chain'])} is not this run's "
            f"{' -> '.join(names)}: the run config's strategy changed since the checkpoint"
        )
    for depth, s in enumerate(chain):
        if fedopt_moments(s) is not None:
            for attr in FEDOPT_MOMENTS:
                keys = state.get(f"{depth}.{attr}")
                if keys is not None:
                    moment = {k: arrays[f"{depth}.{attr}.{k}"].numpy().copy() for k in keys}
                    set_fedopt_moment(s, attr, moment)
        if isinstance(s, DifferentialPrivacyServerSideAdaptiveClipping):
            norm = state.get(f"{depth}.clipping_norm")
            if norm is not None:
                s.clipping_norm = float(norm)
        if isinstance(s, CentralDPAccounting):
            s.releases = [Release(**r) for r in state.get(f"{depth}.releases", [])]


def checkpoint_of(
    tracker: SiteTracking,
    server_round: int,
    arrays: ArrayRecord,
    *,
    run_id: str,
    config_hash: str,
    run_json: str,
) -> ResumeCheckpoint:
    """The checkpoint of ``tracker``'s federation after ``server_round``."""
    strategy, strategy_arrays = strategy_state(tracker.strategy)
    return ResumeCheckpoint(
        round=server_round,
        run_id=run_id,
        config_hash=config_hash,
        run=run_json,
        arrays=arrays,
        tracker=tracker_state(tracker),
        strategy=strategy,
        strategy_arrays=strategy_arrays,
    )
