"""`fedward simulate` through `flwr run`: the app it renders, the run-config values that carry
every setting to the ServerApp, the federation config Flower must accept, and the processes it
must leave behind (none)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from fedward.common.errors import ConfigError
from fedward.common.run_config import RunConfig
from fedward.server import simulation_engine as engine
from fedward.server.coordinator_settings import CoordinatorSettings, settings_from_run_config
from fedward.server.simulation_engine import (
    MESSAGE_API_APP,
    SECAGG_APP,
    app_pyproject,
    app_values,
    federation_config,
    stop_tree,
    toml_assignments,
    write_app,
)

ROOT = Path(__file__).resolve().parents[2]
# Paths a person's files may have: a comma, quotes, a backslash, a non-ASCII name.
AWKWARD = ["/data/Hospital, North/site.toml", '/data/"quoted" \\ dir/s.toml', "/data/Zürich/s.toml"]


def _app_config(text: str) -> dict[str, object]:
    return dict(tomllib.loads(text)["tool"]["flwr"]["app"]["config"])


def test_the_shipped_app_declares_the_checkouts_app_config() -> None:
    checkout = _app_config((ROOT / "pyproject.toml").read_text())
    for app in (MESSAGE_API_APP, SECAGG_APP):
        assert _app_config(app_pyproject(app)) == checkout


@pytest.mark.parametrize("app", [MESSAGE_API_APP, SECAGG_APP], ids=lambda a: a.name)
def test_each_transport_is_an_app_of_its_own(app: object, tmp_path: Path) -> None:
    folder = write_app(tmp_path / "app", app)  # type: ignore[arg-type]
    data = tomllib.loads((folder / "pyproject.toml").read_text())
    components = data["tool"]["flwr"]["app"]["components"]
    assert (components["serverapp"], components["clientapp"]) == (
        app.serverapp,  # type: ignore[attr-defined]
        app.clientapp,  # type: ignore[attr-defined]
    )
    assert data["project"]["name"] == app.name  # type: ignore[attr-defined]
    assert sorted(p.name for p in folder.iterdir()) == ["pyproject.toml"]


def _settings(**kw: object) -> CoordinatorSettings:
    run = RunConfig.model_validate(
        {"name": "round-trip", "rounds": 3, "seed": 11, "privacy": {"target_epsilon": 2.5}}
    )
    return CoordinatorSettings(run=run, output_dir="/out", run_dir="/out/r1", **kw)  # type: ignore[arg-type]


def test_every_simulate_setting_survives_the_app_run_config() -> None:
    given = _settings(sim_site_configs=AWKWARD, sim_state_dir='/state/Zürich, "x"')
    values = app_values(given)
    # Flower reads `--run-config FILE.toml` with tomli: the file must parse back to the values.
    parsed = tomllib.loads(toml_assignments(values))
    assert parsed == values
    declared = _app_config(app_pyproject(MESSAGE_API_APP))
    assert set(values) <= set(declared), "flwr run refuses keys the app does not declare"
    got = settings_from_run_config({**declared, **parsed})
    assert got.run == given.run
    assert got.run.config_hash() == given.run.config_hash()
    assert got.sim_site_configs == AWKWARD
    assert got.sim_state_dir == given.sim_state_dir
    assert (got.run_dir, got.output_dir, got.engine) == ("/out/r1", "/out", "simulation")
    assert not got.audit_only and not got.resume


def test_an_audit_again_names_the_finished_run_not_a_new_one() -> None:
    values = app_values(_settings(audit_only=True))
    assert values["audit-run-dir"] == "/out/r1"
    assert "run-dir" not in values


def test_sites_as_a_person_types_them_still_read() -> None:
    got = settings_from_run_config({"sites": "a.toml,b.toml"})
    assert got.sim_site_configs == ["a.toml", "b.toml"]


@pytest.mark.parametrize("bad", ['["a.toml", 3]', '["a.toml"', '[{"a": 1}]'])
def test_a_bad_sites_value_is_named(bad: str) -> None:
    with pytest.raises(ConfigError, match="'sites'"):
        settings_from_run_config({"sites": bad})


def test_a_bad_inline_run_config_is_named() -> None:
    with pytest.raises(ConfigError, match="run-config-json"):
        settings_from_run_config({"run-config-json": '{"rounds": "many"}'})


@pytest.mark.parametrize("verbose", [False, True])
def test_flower_accepts_the_federation_config(verbose: bool) -> None:
    """Parsed as `flwr run --federation-config` parses it, into Flower's own SimulationConfig."""
    from flwr.common.config import parse_config_args
    from flwr.supercore.utils import simulation_config_from_json

    raw = parse_config_args([federation_config(4, 2, verbose)])
    config = simulation_config_from_json({k.replace("-", "_"): v for k, v in raw.items()})
    assert config.num_supernodes == 4
    assert (config.client_resources_num_cpus, config.client_resources_num_gpus) == (1, 0.0)
    assert (config.init_args_num_cpus, config.init_args_logging_level) == (2, "error")
    assert config.verbose is verbose


def test_stopping_reaches_processes_started_in_sessions_of_their_own() -> None:
    """As the SuperLink starts SuperExec and SuperExec the simulation: `start_new_session`."""
    spawn = (
        "import subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", spawn])
    deadline = time.monotonic() + 20
    while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = psutil.Process(parent.pid).children()
    assert child.pid and psutil.Process(child.pid).pid  # running
    stop_tree(parent)
    assert parent.poll() is not None
    assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other process already listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.slow
def test_a_port_taken_before_the_superlink_binds_it_is_chosen_again(
    taken_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ports = iter([taken_port, engine.free_port()])
    monkeypatch.setattr(engine, "free_port", lambda: next(ports))
    with (
        (tmp_path / "superlink.log").open("w") as log,
        engine.simulation_superlink(engine.engine_env(tmp_path / "home"), log) as superlink,
    ):
        address = superlink.address
        assert address != f"127.0.0.1:{taken_port}"
        assert engine._healthy(address)
    assert not engine._healthy(address)  # stopped on the way out


@pytest.mark.slow
def test_a_superlink_that_cannot_start_is_named_with_its_tries(
    taken_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(engine, "free_port", lambda: taken_port)
    monkeypatch.setattr(engine, "START_TRIES", 1)  # each try costs a SuperLink's start
    with (
        (tmp_path / "superlink.log").open("w") as log,
        pytest.raises(
            engine.SimulationEngineError,
            match=rf"exit code 1, on 1 port\(s\) in turn \(the last {taken_port}\)",
        ),
        engine.simulation_superlink(engine.engine_env(tmp_path / "home"), log),
    ):
        pass


def _simulate_cli(*args: str | Path) -> Any:
    import typer
    from typer.testing import CliRunner

    from fedward.server.cli import register

    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["simulate", *map(str, args)])


@pytest.mark.parametrize(
    ("finished", "said"),
    [
        (
            engine.FinishedRun("7", "finished:failed", "Simulation failed with exception: boom"),
            "the federation failed: Simulation failed with exception: boom",
        ),
        (engine.FinishedRun("7", "finished:completed", ""), "the federation did not finish"),
    ],
    ids=["flower-says-failed", "no-results"],
)
def test_a_run_without_results_ends_the_command_with_the_reason(
    finished: engine.FinishedRun, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Flower reported (here as `run_app` returns it) reaches the person, exit 1, no
    traceback; the engine's own part is tested against a real SuperLink in
    tests/e2e/test_flwr_run_local.py."""
    import fedward.server.simulate as simulate

    monkeypatch.setattr(simulate, "run_app", lambda *a, **k: finished)
    done = _simulate_cli("--rounds", "1", "--out", tmp_path / "runs", "--verbose")
    assert done.exit_code == 1, done.output
    assert said in " ".join(done.output.split())
    assert "simulation.log" not in done.output  # --verbose: the engine's output was on the console
    assert done.exception is None or isinstance(done.exception, SystemExit)
