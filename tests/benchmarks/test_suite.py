"""The performance suite's entry point: one table, one JSON, and a broken benchmark reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import suite


def test_a_quick_dp_cost_run_gives_its_rows_targets_and_machine(tmp_path: Path) -> None:
    out, table = tmp_path / "bench.json", tmp_path / "bench.md"
    code = suite.main(
        ["--only", "dp_cost", "--quick", "--json", str(out), "--markdown", str(table)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["machine"]["nproc"] >= 1
    bench = result["benchmarks"]["dp_cost"]
    assert bench["error"] is None and bench["other_processes_cpu_share"] >= 0
    targets = [r for r in result["rows"] if r["target"]]
    assert {r["benchmark"] for r in result["rows"]} == {"dp_cost"}
    assert len(targets) == 2 and all(isinstance(r["met"], bool) for r in targets)
    assert all(r["value"] > 0 for r in result["rows"])
    assert table.read_text().count("| dp_cost |") == len(result["rows"])


def test_a_broken_benchmark_is_reported_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(suite.BENCHMARKS, "broken", "tests.benchmarks.no_such_module")
    out = tmp_path / "bench.json"
    code = suite.main(["--only", "broken,dp_cost", "--quick", "--json", str(out)])
    assert code == 1
    result = json.loads(out.read_text())
    assert "no_such_module" in result["benchmarks"]["broken"]["error"]
    assert result["benchmarks"]["dp_cost"]["error"] is None


def test_an_unknown_benchmark_name_is_refused() -> None:
    with pytest.raises(SystemExit):
        suite.main(["--only", "dp-cost"])
