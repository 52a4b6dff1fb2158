"""The `fedward` command. Groups register through the ``fedward.cli`` entry point, so the coordinator
and the site each bring their own commands and neither package imports the other."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from fedward.common.config import json_schemas
from fedward.common.errors import FedwardError
from fedward.common.schema_cli import schema_app

app = typer.Typer(
    name="fedward",
    help="Privacy-preserving federated training for hospitals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Configuration files: schema and validation.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(schema_app, name="schema")

err_console = Console(stderr=True)


@config_app.command("schema")
def config_schema(
    which: Annotated[str, typer.Argument(help="run, site, data_schema, or all")] = "all",
) -> None:
    """Print the JSON schema of the run config, the site config or the data schema."""
    schemas = json_schemas()
    if which == "all":
        typer.echo(json.dumps(schemas, indent=2))
        return
    if which not in schemas:
        raise typer.BadParameter(
            f"unknown config '{which}'; choose from {', '.join(schemas)} or all"
        )
    typer.echo(json.dumps(schemas[which], indent=2))


@config_app.command("check")
def config_check(
    path: Annotated[str, typer.Argument(help="A run or site config TOML.")],
    kind: Annotated[str, typer.Option(help="run or site")] = "run",
) -> None:
    """Validate a config file and print its hash."""
    from fedward.common.run_config import load_run_config
    from fedward.common.site_config import load_site_config

    if kind == "run":
        cfg = load_run_config(path)
        typer.echo(f"{path}: valid run config, hash {cfg.config_hash()}")
    elif kind == "site":
        site = load_site_config(path)
        site.load_schema()
        typer.echo(f"{path}: valid site config for site '{site.name}'")
    else:
        raise typer.BadParameter("kind must be 'run' or 'site'")


def command_group(parent: typer.Typer, name: str, help: str) -> typer.Typer:
    """The sub-command group ``name``, made on first use: the coordinator and the site may both
    add commands to one group (``fedward he serve`` and ``fedward he predict``)."""
    for info in parent.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(help=help, no_args_is_help=True)
    parent.add_typer(group, name=name)
    return group


@contextmanager
def exit_1_on(error: type[Exception], label: str, console: Console) -> Iterator[None]:
    """A command that changes nothing when ``error`` is raised: it prints "<label>: <message>" in
    bold red on ``console`` and exits 1 (the site's key rotation, the coordinator's site register)."""
    try:
        yield
    except error as exc:
        console.print(f"[bold red]{label}[/]: {escape(str(exc))}")
        raise typer.Exit(1) from None


HE_HELP = "Encrypted inference: a CKKS (TenSEAL) prediction service and its client."


def _register_plugins() -> None:
    for ep in entry_points(group="fedward.cli"):
        register = ep.load()
        register(app)


def _quiet_environment() -> None:
    # No telemetry, no update checks, no runtime dependency installation: hospitals run offline.
    for key, value in {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }.items():
        os.environ.setdefault(key, value)


def main() -> None:
    _quiet_environment()
    _register_plugins()
    try:
        app()
    except FedwardError as exc:
        # Escaped: a message may quote a TOML table ("[task]") that rich would take for markup.
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
