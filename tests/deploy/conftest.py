"""Shared fixtures of the deployment tests: the repository, the compose file, one make-certs run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MAKE_CERTS = REPO / "deploy" / "make-certs.sh"
SITES = ("cleveland", "hungary", "switzerland", "va-long-beach")


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of deploy/make-certs.sh with its default sites and one extra SuperLink name."""
    out = tmp_path_factory.mktemp("certs") / "certs"
    done = subprocess.run(
        ["bash", str(MAKE_CERTS), str(out), "--superlink-name", "coordinator.example.org"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out
