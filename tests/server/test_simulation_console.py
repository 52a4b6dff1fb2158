"""What a simulation puts on the console: the federation-size line for `flwr run .`, and the
sites' warnings, capped. (That the sites' Ray output goes to the run's log file instead of the
terminal is checked end to end, in tests/e2e/test_simulation.py.)"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fedward.common.run_config import RunConfig
from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.federation_size import (
    FederationSizeError,
    federation_size_problem,
    stop_on_federation_size,
)

LINE = 'flwr run . --stream --federation-config "num-supernodes=4"'


def test_flowers_default_two_nodes_get_the_line_to_change() -> None:
    settings = CoordinatorSettings(run=RunConfig())  # heart-disease: four hospitals
    problem = federation_size_problem(2, settings)
    assert problem is not None
    assert "2 SuperNodes" in problem and "'heart-disease' has 4 sites" in problem
    assert problem.endswith(LINE)
    assert federation_size_problem(4, settings) is None


def test_site_configs_set_the_size() -> None:
    settings = CoordinatorSettings(run=RunConfig(), sim_site_configs=["a.toml", "b.toml"])
    assert federation_size_problem(2, settings) is None
    problem = federation_size_problem(4, settings)
    assert problem is not None and problem.endswith('"num-supernodes=2"')


def test_the_stop_is_one_line_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    settings = CoordinatorSettings(run=RunConfig())
    stop_on_federation_size(4, settings)  # the right size: nothing happens
    with pytest.raises(FederationSizeError, match="num-supernodes=4"):
        stop_on_federation_size(2, settings)
    # Flower logs the ServerApp's exception with exc_info; the filter keeps only the sentence.
    flwr_logger = logging.getLogger("flwr")
    record = flwr_logger.makeRecord(
        "flwr", logging.ERROR, __file__, 1, "Simulation raised an exception", (), None
    )
    try:
        raise FederationSizeError("x")
    except FederationSizeError as exc:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    assert all(f.filter(record) for f in flwr_logger.filters if hasattr(f, "filter"))
    assert record.exc_info is None


def test_site_warnings_are_listed_up_to_a_cap(tmp_path: Path) -> None:
    import json

    from fedward.server.run_console import MAX_WARNING_LINES
    from fedward.server.run_console import site_warning_lines as _site_warnings

    warnings = [f"site{i}: column age: 12 values lie outside the declared range" for i in range(11)]
    (tmp_path / "run_record.json").write_text(json.dumps({"warnings": warnings}))
    lines = _site_warnings(tmp_path)
    assert lines[0] == f"warning: {warnings[0]}"
    assert len(lines) == MAX_WARNING_LINES + 1
    assert lines[-1].startswith(f"warning: {11 - MAX_WARNING_LINES} more in ")
