"""Two simulations sharing one state folder: the second run's sites compose the first run's spend.

The first is the session's default DP run (``dp_run`` in conftest.py), whose sites keep their
ledgers in a state folder of their own; the second runs one round on the same folder.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import FinishedRun
from tests.e2e.processes import BIN

pytestmark = pytest.mark.slow


def _simulate(out: Path, state: Path) -> dict[str, dict[str, float]]:
    args = [
        str(BIN / "fedward"),
        "simulate",
        "--rounds",
        "1",
        "--out",
        str(out),
        "--state-dir",
        str(state),
        # Only the federation's DP-SGD spend is under test; the membership audit writes nothing to
        # the ledgers, and leaving it out saves a quarter of each run.
        "--no-baselines",
        "--no-audit",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return _sites(run_dir)


def _sites(run_dir: Path) -> dict[str, dict[str, float]]:
    summary = json.loads((run_dir / "privacy_summary.json").read_text())
    return {s["site"]: s for s in summary["sites"]}


def test_a_shared_state_folder_carries_the_lifetime_budget(
    dp_run: FinishedRun, tmp_path: Path
) -> None:
    state = dp_run.state
    assert state is not None and dp_run.returncode == 0, dp_run.stdout[-3000:]
    first = _sites(dp_run.dir)
    second = _simulate(tmp_path / "two", state)
    for site in ("cleveland", "hungary", "switzerland", "va-long-beach"):
        assert first[site]["epsilon_lifetime"] == pytest.approx(first[site]["epsilon"])
        assert second[site]["epsilon_lifetime"] > second[site]["epsilon"]
        assert second[site]["epsilon_lifetime"] > first[site]["epsilon_lifetime"]
        assert second[site]["epsilon_remaining"] < first[site]["epsilon_remaining"]
    assert (state / "cleveland" / "ledger.sqlite").is_file()
