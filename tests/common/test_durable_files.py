"""A durable write leaves the old file or the new one, owner-only, and no temporary behind."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fedward.common.durable_files import atomic_write_bytes, atomic_write_json


def test_a_write_replaces_the_file_whole_and_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "key"
    atomic_write_bytes(path, b"old")
    atomic_write_json(path, {"new": 1})
    assert json.loads(path.read_text()) == {"new": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["key"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "register.json"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]  # a str is refused
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["register.json"]
