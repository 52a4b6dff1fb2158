"""Resume checkpoints: written atomically, read back whole, a torn or damaged file never read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAdam, FedAvg

from fedward.common.durable_files import atomic_write_bytes
from fedward.server import run_folder
from fedward.server.checkpoint import (
    CheckpointError,
    ResumeCheckpoint,
    load_last_checkpoint,
    restore_strategy,
    restore_tracker,
    state_path,
    strategy_state,
    tracker_state,
    write_checkpoint,
)
from fedward.server.run_folder import RunFolder
from fedward.server.site_tracking import SiteTracking
from fedward.server.tracking_book import SiteRecord


def _tracker(tmp_path: Path, strategy: FedAvg | None = None) -> SiteTracking:
    return SiteTracking(
        strategy or FedAvg(), folder=RunFolder(tmp_path), histogram_bins=10, min_sites=1
    )


def _checkpoint(server_round: int, value: float = 1.0) -> ResumeCheckpoint:
    return ResumeCheckpoint(
        round=server_round,
        run_id="run-abc",
        config_hash="hash-1",
        run="{}",
        arrays=ArrayRecord({"w": torch.full((2, 3), value), "b": torch.zeros(1)}),
        tracker={"history": {"train": [{"round": server_round}], "tune": [], "test": []}},
        strategy={"chain": ["FedAvg"]},
        strategy_arrays={},
    )


def test_a_checkpoint_reads_back_as_written(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, _checkpoint(2, value=0.5))
    assert path == state_path(tmp_path, 2)
    loaded = load_last_checkpoint(tmp_path)
    assert loaded is not None and loaded.round == 2 and loaded.run_id == "run-abc"
    assert loaded.config_hash == "hash-1" and loaded.written
    weights = loaded.arrays.to_torch_state_dict()
    assert torch.equal(weights["w"], torch.full((2, 3), 0.5))
    assert loaded.tracker["history"]["train"] == [{"round": 2}]


def test_the_latest_whole_checkpoint_wins_and_a_torn_temp_file_is_ignored(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, _checkpoint(1))
    write_checkpoint(tmp_path, _checkpoint(2))
    # A coordinator killed while writing round 3 leaves only its temporary file.
    torn = tmp_path / "checkpoints" / ".state-0003.pt.k2j4.tmp"
    torn.write_bytes(state_path(tmp_path, 2).read_bytes()[:100])
    loaded = load_last_checkpoint(tmp_path)
    assert loaded is not None and loaded.round == 2


def test_a_damaged_checkpoint_falls_back_to_the_round_before(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, _checkpoint(1))
    state_path(tmp_path, 2).write_bytes(b"not a checkpoint")
    loaded = load_last_checkpoint(tmp_path)
    assert loaded is not None and loaded.round == 1


def test_a_run_folder_without_checkpoints_has_nothing_to_resume(tmp_path: Path) -> None:
    assert load_last_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "round-0001.pt").write_bytes(b"a model, not a resume state")
    assert load_last_checkpoint(tmp_path) is None


def test_a_write_that_fails_midway_leaves_the_previous_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.bin"
    atomic_write_bytes(target, b"old")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(run_folder.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_a_checkpoint_write_fsyncs_the_file_and_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(run_folder.os, "fsync", spy)
    write_checkpoint(tmp_path, _checkpoint(1))
    folder = str(tmp_path / "checkpoints")
    assert folder in synced  # the rename is durable
    assert any(p.startswith(folder + "/.state-0001.pt.") for p in synced)  # the data first


def test_the_tracker_records_and_history_round_trip(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    rec = SiteRecord(node_id=7, name="hungary", status="ok", rounds_ok=2, epsilon=0.4)
    rec.non_dp_outputs.update({"tune metrics", "train loss"})
    tracker.sites[7] = rec
    tracker.excluded.add(9)
    tracker.attempts[2] = "attempt-2"
    tracker.history["tune"].append({"round": 2, "split": "tune", "sites": {}, "pooled": None})
    fresh = _tracker(tmp_path)
    restore_tracker(fresh, tracker_state(tracker))
    assert fresh.sites[7] == rec
    assert fresh.excluded == {9} and fresh.attempts == {2: "attempt-2"}
    assert fresh.history == tracker.history
    assert fresh.restored == {7}


def test_fedadam_moments_survive_a_restart(tmp_path: Path) -> None:
    before = FedAdam()
    before.m_t = {"w": np.full((2, 2), 0.25, dtype=np.float32)}
    before.v_t = {"w": np.full((2, 2), 0.5, dtype=np.float32)}
    state, arrays = strategy_state(_tracker(tmp_path, before).strategy)
    after = FedAdam()
    restore_strategy(after, state, arrays)
    assert after.m_t is not None and after.v_t is not None
    np.testing.assert_array_equal(after.m_t["w"], before.m_t["w"])
    np.testing.assert_array_equal(after.v_t["w"], before.v_t["w"])


def test_a_checkpoint_of_another_strategy_is_refused() -> None:
    state, arrays = strategy_state(FedAdam())
    with pytest.raises(CheckpointError, match="FedAdam is not this run's FedAvg"):
        restore_strategy(FedAvg(), state, arrays)
