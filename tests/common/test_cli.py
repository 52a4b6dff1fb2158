"""The `fedward` command as a person runs it: JSON schemas, config checks, readable errors."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.e2e.processes import BIN


def fedward(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fedward"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_config_schema_prints_the_run_config_json_schema() -> None:
    done = fedward("config", "schema", "run")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema["title"] == "RunConfig"
    assert "privacy" in schema["properties"]


def test_config_check_names_file_and_field_of_a_bad_value(tmp_path: Path) -> None:
    bad = tmp_path / "run.toml"
    bad.write_text("[privacy]\ntarget_epsilon = -1\n")
    done = fedward("config", "check", str(bad))
    assert done.returncode == 2
    err = " ".join(done.stderr.split())
    assert "run.toml" in err and "privacy.target_epsilon" in err


def test_config_check_prints_the_hash_a_site_would_approve(tmp_path: Path) -> None:
    good = tmp_path / "run.toml"
    good.write_text("rounds = 4\n")
    done = fedward("config", "check", str(good))
    assert done.returncode == 0 and "valid run config, hash" in done.stdout


TOP_LEVEL = (
    *("simulate", "run", "config", "schema", "coordinator", "site"),
    *("he", "release", "audit", "card", "report"),
)
"""The commands `fedward` must have: each a command or group of its own, not a word of the help."""


def _command_paths() -> list[list[str]]:
    """Every command and group of the installed `fedward`, as the words that invoke it."""
    import click
    import typer

    from fedward.common import cli

    if not any(g.name == "site" for g in cli.app.registered_groups):
        cli._register_plugins()  # what main() does before it runs the app

    def walk(command: click.Command, path: list[str]) -> list[list[str]]:
        found = [path]
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                found += walk(sub, [*path, name])
        return found

    return walk(typer.main.get_command(cli.app), [])


def test_every_command_group_is_registered() -> None:
    done = fedward("--help")
    assert done.returncode == 0, done.stderr
    registered = {path[0] for path in _command_paths() if len(path) == 1}
    missing = [name for name in TOP_LEVEL if name not in registered]
    assert missing == [], f"fedward has no command {missing}; it has {sorted(registered)}"
    for name in sorted(registered):  # listed in the help, as its own entry
        assert re.search(rf"^\W*{re.escape(name)}\s", done.stdout, re.MULTILINE), name


def test_every_command_answers_help_with_its_own_usage() -> None:
    from typer.testing import CliRunner

    from fedward.common import cli

    paths = _command_paths()
    assert len(paths) > len(TOP_LEVEL)
    runner = CliRunner()
    broken = []
    for path in paths:
        done = runner.invoke(cli.app, [*path, "--help"], prog_name="fedward")
        usage = " ".join(["Usage: fedward", *path])
        if done.exit_code != 0 or usage not in " ".join(done.output.split()):
            broken.append(f"fedward {' '.join(path)} --help: exit {done.exit_code}")
    assert broken == []
