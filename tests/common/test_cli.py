"""The `fedward` command as a person runs it: JSON schemas, config checks, readable errors."""

from __future__ import annotations

import json
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


def test_every_command_group_is_registered() -> None:
    done = fedward("--help")
    assert done.returncode == 0
    assert "simulate" in done.stdout and "config" in done.stdout
    for group in ("run", "coordinator", "site", "he", "release", "audit", "card"):
        assert group in done.stdout, group
