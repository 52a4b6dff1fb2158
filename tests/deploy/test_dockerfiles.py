"""The three images' Dockerfiles, read as Docker would read their instructions: the README's install
command, a non-root user, Flower's and Ray's switches off, only repository files copied."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

DOCKERFILES = ("Dockerfile.site", "Dockerfile.coordinator", "Dockerfile.he")
INSTALL = "bash deploy/install.sh"
REQUIRED_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path}: a continuation line at the end"
    return out


def arg_defaults(steps: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, args in steps:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name] = value.strip('"')
    return defaults


def substitute(value: str, defaults: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m[1] or m[2]], value)


@pytest.fixture(params=DOCKERFILES)
def dockerfile(request: pytest.FixtureRequest) -> Path:
    return REPO / "deploy" / request.param


def test_the_readme_installs_with_the_same_command() -> None:
    assert INSTALL in (REPO / "README.md").read_text(encoding="utf-8")


def test_image_starts_from_python_311_slim(dockerfile: Path) -> None:
    froms = [args for keyword, args in instructions(dockerfile) if keyword == "FROM"]
    assert froms == ["python:3.11-slim"]


def test_image_installs_with_the_readmes_command(dockerfile: Path) -> None:
    runs = [args for keyword, args in instructions(dockerfile) if keyword == "RUN"]
    assert any(INSTALL in run for run in runs), dockerfile.name
    assert not any("pip install" in run for run in runs), "install through deploy/install.sh only"


def test_image_takes_cpu_torch_unless_a_build_argument_asks(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    assert arg_defaults(steps)["TORCH_VARIANT"] == "cpu"
    index = substitute(arg_defaults(steps)["TORCH_INDEX_URL"], arg_defaults(steps))
    assert index == "https://download.pytorch.org/whl/cpu"


def test_image_runs_as_a_non_root_user(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users, f"{dockerfile.name} sets no USER"
    user = substitute(users[-1], arg_defaults(steps)).split(":")[0]
    assert user not in {"root", "0"}
    # Nothing runs after the switch but metadata: the processes start as that user.
    after = [keyword for keyword, _ in steps[[k for k, _ in steps].index("USER") :]]
    assert set(after) <= {"USER", "WORKDIR", "EXPOSE", "ENTRYPOINT", "CMD", "ENV", "LABEL"}


def test_image_switches_off_telemetry_update_checks_and_runtime_installs(dockerfile: Path) -> None:
    env: dict[str, str] = {}
    for keyword, args in instructions(dockerfile):
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    for name, value in REQUIRED_ENV.items():
        assert env.get(name) == value, (dockerfile.name, name)


def test_image_copies_only_repository_files_that_exist(dockerfile: Path) -> None:
    """No `COPY .`: the host's .venv, run folders and private keys stay out of the image."""
    for keyword, args in instructions(dockerfile):
        if keyword in {"COPY", "ADD"}:
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            for source in parts[:-1]:
                assert source not in {".", "./", "*"}, args
                assert (REPO / source).exists(), (dockerfile.name, source)


def test_image_entrypoint_is_a_copied_script(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    entry = next(args for keyword, args in steps if keyword == "ENTRYPOINT")
    script = entry.strip('[]"')
    copied = [
        shlex.split(args)[-1] for keyword, args in steps if keyword == "COPY" and "--chmod" in args
    ]
    assert any(script.endswith(dest.removeprefix("./")) for dest in copied), script
    local = REPO / "deploy" / Path(script).name
    assert local.is_file()
    assert local.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash")
