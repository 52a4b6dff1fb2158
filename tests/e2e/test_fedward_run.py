"""`fedward run`: its errors and its handling of run-config keys. The run it launches and follows on a
real SuperLink with TLS, node authentication and four SuperNodes, with `fedward coordinator metrics`
scraped while it goes, is in test_secure_topology.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedward.server.run_cli import (
    FlwrNotFound,
    RunFollowError,
    find_flwr,
    find_run_folder,
    flwr_message,
    format_run_config,
    resolve_run_config,
)
from tests.e2e.processes import flower_env, free_port

REPO = Path(__file__).resolve().parents[2]
FEDWARD = str(Path(sys.executable).parent / "fedward")
APP_KEYS = {
    "run-config": "",
    "output-dir": "runs",
    "rounds": -1,
    "run-name": "",
    "dp": "",
    "target-epsilon": -1.0,
    "audit-run-dir": "",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def flower_home(tmp: Path, link_port: int) -> dict[str, str]:
    home = tmp / "flwr_home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "fedward-test"\n\n[superlink.fedward-test]\n'
        f'address = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    return flower_env(home)


def said(done: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, its box-drawing and line wrapping undone."""
    return " ".join((done.stdout + done.stderr).replace("│", " ").split())


def test_an_unknown_federation_is_named_with_flowers_own_words(tmp_path: Path) -> None:
    env = flower_home(tmp_path, free_port())
    done = subprocess.run(
        [FEDWARD, "run", str(REPO), "no-such-link", "--runs-dir", str(tmp_path / "runs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    text = said(done)
    assert "`flwr run` could not start the run on 'no-such-link'" in text
    assert "SuperLink connection 'no-such-link' not found" in text
    assert not (tmp_path / "runs").exists()


def test_unknown_run_config_keys_are_refused_before_anything_starts(tmp_path: Path) -> None:
    env = flower_home(tmp_path, free_port())
    done = subprocess.run(
        [FEDWARD, "run", str(REPO), "fedward-test", "-c", "rounds=2 baselines-enabled=false"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    text = said(done)
    assert "unknown key baselines-enabled" in text and "rounds" in text


def test_flwr_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FlwrNotFound, match="install Flower"):
        find_flwr(bin_dir=tmp_path, path=str(tmp_path))


def test_output_dir_and_run_config_are_passed_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text("rounds = 2\n")
    values, out = resolve_run_config(
        ["output-dir='runs' rounds=2 run-config='run.toml' run-name=\"it's\""], None, APP_KEYS
    )
    assert out == tmp_path / "runs"
    assert values["output-dir"] == str(tmp_path / "runs")
    assert values["run-config"] == str(tmp_path / "run.toml")
    typed, _ = resolve_run_config(["dp=false target-epsilon=2"], tmp_path / "runs", APP_KEYS)
    assert typed["dp"] == "false" and typed["target-epsilon"] == 2.0  # as the app declares them
    # The string handed to `flwr run` reads back to the same values with Flower's own parser.
    from flwr.common.config import parse_config_args

    assert parse_config_args([format_run_config(values)]) == values
    _, default = resolve_run_config(None, None, APP_KEYS)
    assert default == tmp_path / "runs"


def test_no_run_folder_within_the_timeout_says_where_it_is_written(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (out / "20260101-000000-other-7").mkdir(parents=True)
    (out / "20260101-000000-other-7" / "progress.jsonl").write_text("")
    with pytest.raises(RunFollowError, match=r"within 0\.5 s.*SuperLink's machine"):
        find_run_folder(out, set(), "42", timeout=0.5, running=lambda: True, poll_s=0.05)
    with pytest.raises(RunFollowError, match="run 42 ended without a run folder"):
        find_run_folder(out, set(), "42", timeout=60, running=lambda: False)
    (out / "20260101-000001-mine-42").mkdir()
    (out / "20260101-000001-mine-42" / "manifest.json").write_text('{"run_id": "42"}')
    found = find_run_folder(out, set(), "42", timeout=1, running=lambda: True)
    assert found.name == "20260101-000001-mine-42"


def test_flowers_boxed_error_is_unboxed() -> None:
    lines = [
        "╭─ Error ─────╮\n",
        "│ Connection to the SuperLink is  │\n",
        "│ unavailable.                    │\n",
        "╰─────────────╯\n",
    ]
    assert flwr_message(lines) == "Connection to the SuperLink is unavailable."
