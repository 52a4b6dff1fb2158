"""The ``--run-config`` values `fedward run` passes to `flwr run`: checked against the keys the
Flower app declares (``[tool.flwr.app.config]``), typed as the app declares them, paths made
absolute for the SuperLink's machine, and, for ``--resume``, the values the run was launched with.

A value `fedward run` cannot follow or that another command handles is a usage error here, before
anything starts.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from fedward.common.errors import FedwardError
from fedward.server.run_console import console

DEFAULT_RUNS_DIR = Path("runs")
# Run-config keys `fedward run` handles itself, or refuses because it cannot follow them.
_OUTPUT_DIR, _RUN_CONFIG_FILE, _AUDIT_RUN_DIR = "output-dir", "run-config", "audit-run-dir"
_RUN_DIR, _RESUME = "run-dir", "resume"  # set by --resume only


def app_config_keys(app_dir: Path) -> dict[str, Any]:
    """The app's run-config keys and defaults (``[tool.flwr.app.config]`` of its pyproject.toml)."""
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise typer.BadParameter(
            f"{app_dir} is not a Flower app: it has no pyproject.toml", param_hint="APP_DIR"
        )
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(
            f"{pyproject} cannot be read: {exc}", param_hint="APP_DIR"
        ) from exc
    config = data.get("tool", {}).get("flwr", {}).get("app", {}).get("config")
    if not isinstance(config, dict):
        raise typer.BadParameter(
            f"{pyproject} has no [tool.flwr.app.config] table: not a Flower app",
            param_hint="APP_DIR",
        )
    return config


def resolve_run_config(
    overrides: list[str] | None, runs_dir: Path | None, known: dict[str, Any]
) -> tuple[dict[str, Any], Path]:
    """Parse ``--run-config`` as Flower does, check the keys, and make paths absolute.

    ``output-dir`` and ``run-config`` are paths on the SuperLink's machine, resolved against the
    ServerApp's working folder there; `fedward run` follows the folder here, so it passes them
    absolute (resolved against this shell's folder). Returns the overrides and the runs folder.
    """
    import click
    from flwr.common.config import parse_config_args

    try:
        parsed: dict[str, Any] = dict(parse_config_args(overrides))
    except (click.ClickException, ValueError, OSError) as exc:
        text = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        raise typer.BadParameter(text, param_hint="--run-config") from exc
    unknown = sorted(set(parsed) - set(known))
    if unknown:
        raise typer.BadParameter(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the app's "
            f"keys ([tool.flwr.app.config]) are: {', '.join(sorted(known))}. Other settings go "
            "in a run config TOML named by run-config='/path/run.toml'",
            param_hint="--run-config",
        )
    parsed = {key: as_declared(key, value, known[key]) for key, value in parsed.items()}
    if str(parsed.get(_AUDIT_RUN_DIR, "") or ""):
        raise typer.BadParameter(
            "audit-run-dir audits a finished run instead of training one: use "
            "`fedward audit RUN_DIR --federation NAME`",
            param_hint="--run-config",
        )
    if str(parsed.get(_RUN_DIR, "") or "") or parsed.get(_RESUME) is True:
        raise typer.BadParameter(
            "run-dir and resume continue a run that was interrupted: use "
            "`fedward run APP_DIR FEDERATION --resume RUN_DIR`",
            param_hint="--run-config",
        )
    given = str(parsed.get(_OUTPUT_DIR, "") or "")
    if runs_dir is not None and given and Path(given).resolve() != runs_dir.resolve():
        raise typer.BadParameter(
            f"--runs-dir {runs_dir} and output-dir='{given}' name different folders; give one",
            param_hint="--runs-dir",
        )
    out = (runs_dir or Path(given or DEFAULT_RUNS_DIR)).resolve()
    parsed[_OUTPUT_DIR] = str(out)
    run_config_file = str(parsed.get(_RUN_CONFIG_FILE, "") or "")
    if run_config_file:
        path = Path(run_config_file).expanduser()
        if not path.is_absolute() and path.exists():
            parsed[_RUN_CONFIG_FILE] = str(path.resolve())
    return parsed, out


def resume_run_config(
    run_dir: Path, overrides: list[str] | None, runs_dir: Path | None, known: dict[str, Any]
) -> tuple[dict[str, Any], Path]:
    """The run-config values to resume ``run_dir`` with: those it was launched with
    (``launch.json``), then ``overrides``, then ``run-dir`` and ``resume``. Checked here before
    anything starts (the ServerApp checks again): a run folder with a checkpoint, a run that has
    not finished, the same config hash, no coordinator still holding the folder. A refusal is a
    usage error (exit 2); what is resumed is printed."""
    from fedward.server.coordinator_settings import settings_from_run_config
    from fedward.server.resume import ResumeError, RunLock, launch_values, resume_point

    launch = {k: v for k, v in launch_values(run_dir).items() if k in known}
    given = [format_run_config(launch)] if launch else []
    values, out = resolve_run_config([*given, *(overrides or [])], runs_dir, known)
    try:
        point = resume_point(run_dir, settings_from_run_config(values).run)
        RunLock(run_dir).acquire().release()
    except (ResumeError, FedwardError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--resume") from exc
    values[_RUN_DIR] = str(run_dir)
    values[_RESUME] = True
    console.print(f"resuming {escape(point.describe(_planned_rounds(point)))}", soft_wrap=True)
    return values, out


def _planned_rounds(point: Any) -> int:
    from fedward.common.run_config import RunConfig

    return RunConfig.from_json(point.checkpoint.run).rounds


def as_declared(key: str, value: Any, default: Any) -> Any:
    """``value`` in the type the app declares for ``key``: Flower passes overrides as parsed, so
    ``dp=false`` would reach the ServerApp as a bool where it reads the string "false"."""
    if isinstance(default, str):
        return ("true" if value else "false") if isinstance(value, bool) else str(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise typer.BadParameter(
                f"{key}={value!r}: the app declares {key} as true or false",
                param_hint="--run-config",
            )
        return value
    if isinstance(default, int | float):
        whole = isinstance(default, int)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (whole and not isinstance(value, int))
        ):
            raise typer.BadParameter(
                f"{key}={value!r}: the app declares {key} as "
                f"{'a whole number' if whole else 'a number'} (default {default})",
                param_hint="--run-config",
            )
        return value if whole else float(value)
    return value


def format_run_config(values: dict[str, Any]) -> str:
    """One ``--run-config`` string, ``k=v ...``, that Flower's parser reads back to ``values``."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            s = str(value)
            if "'" in s and '"' in s:
                raise typer.BadParameter(
                    f"{key}: a value cannot hold both quote characters for `flwr run`",
                    param_hint="--run-config",
                )
            # A TOML literal string ('...') keeps backslashes as written; else a basic string.
            text = f"'{s}'" if "'" not in s else json.dumps(s)
        parts.append(f"{key}={text}")
    return " ".join(parts)
