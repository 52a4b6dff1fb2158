"""`fedward site init | check`: write a new site config (and a schema skeleton) and print its
SuperNode command; check config, schema, data, state folder, ledger and SuperLink without training.

Both import their modules (schema inference, data readers) inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fedward.client.site_console import (
    SiteCommandError,
    SiteConfigOption,
    console,
)

if TYPE_CHECKING:
    pass


def _interactive() -> bool:
    import sys

    return sys.stdin.isatty()


def init(
    config: Annotated[
        Path, typer.Argument(help="The site config TOML to write.", metavar="SITE.toml")
    ] = Path("site.toml"),
    name: Annotated[
        str | None, typer.Option("--name", help="The site's name, e.g. st-mary.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="The data file (CSV or Parquet).", metavar="FILE")
    ] = None,
    data_format: Annotated[
        str, typer.Option("--format", help="auto (by suffix), csv or parquet.")
    ] = "auto",
    schema: Annotated[
        Path | None,
        typer.Option(
            "--schema",
            help="The data schema TOML; default: schema.toml next to the site config.",
            metavar="FILE",
        ),
    ] = None,
    infer_schema: Annotated[
        bool | None,
        typer.Option(
            "--infer-schema/--no-infer-schema",
            help="Write a schema skeleton inferred from the data file's header and types.",
        ),
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="With --infer-schema: the outcome column.")
    ] = None,
    positive: Annotated[
        list[str] | None,
        typer.Option(
            "--positive", help="With --infer-schema: a label value meaning positive (repeatable)."
        ),
    ] = None,
    positive_above: Annotated[
        float | None,
        typer.Option("--positive-above", help="With --infer-schema: labels above it are positive."),
    ] = None,
    patient_id: Annotated[
        str | None,
        typer.Option("--patient-id", help="With --infer-schema: the patient id column, if any."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="The state folder (privacy ledger); default: state/ next to the site config.",
            metavar="DIR",
        ),
    ] = None,
    dataset_id: Annotated[
        str | None,
        typer.Option("--dataset-id", help="The budget's key in the ledger; default: the name."),
    ] = None,
    total_epsilon: Annotated[
        float | None, typer.Option("--total-epsilon", help="Lifetime ε (default 10).")
    ] = None,
    total_delta: Annotated[
        float | None,
        typer.Option("--total-delta", help="Lifetime δ (default: below 1/(10 × rows))."),
    ] = None,
    max_epsilon_per_run: Annotated[
        float | None,
        typer.Option(
            "--max-epsilon-per-run", help="The most ε one run may spend (default: no cap)."
        ),
    ] = None,
    allow_non_dp: Annotated[
        bool | None,
        typer.Option(
            "--allow-non-dp/--no-allow-non-dp", help="Ever allow non-DP training (default: no)."
        ),
    ] = None,
    min_cell_size: Annotated[
        int | None, typer.Option("--min-cell-size", help="Minimum cell size (default 10).")
    ] = None,
    superlink: Annotated[
        str | None,
        typer.Option("--superlink", help="For the printed SuperNode command: HOST:PORT."),
    ] = None,
    root_certificates: Annotated[
        Path | None,
        typer.Option(
            "--root-certificates",
            help="For the printed SuperNode command: the CA that verifies the SuperLink.",
            metavar="CA.pem",
        ),
    ] = None,
    auth_key: Annotated[
        Path | None,
        typer.Option(
            "--auth-supernode-private-key",
            help="For the printed SuperNode command: this node's private key (node auth).",
            metavar="KEY",
        ),
    ] = None,
    supernode_port: Annotated[
        int,
        typer.Option(
            "--supernode-port",
            min=1,
            max=65535,
            help="For the printed SuperNode command: its local runtime API port. Every "
            "SuperNode on one host needs its own.",
        ),
    ] = 9094,
    auto_approve: Annotated[
        bool,
        typer.Option(
            "--auto-approve",
            help="Accept every run config and code without `fedward site approve`: for "
            "simulations and demonstrations only, never for a hospital's data.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing site config or schema.")
    ] = False,
    interactive: Annotated[
        bool | None,
        typer.Option(
            "--interactive/--no-input",
            help="Prompt for what the flags leave out (default: when run in a terminal).",
        ),
    ] = None,
) -> None:
    """Write a new site config (and a schema skeleton) and print its SuperNode command.

    Values the flags leave out are asked for in a terminal; nothing existing is overwritten without
    --force.
    """
    from fedward.client.site_check import parse_superlink
    from fedward.client.site_init import (
        InitOptions,
        complete,
        describe,
        supernode_command,
        write_site,
    )

    if superlink is not None:
        parse_superlink(superlink)  # a malformed address is an error before anything is written
    opts = InitOptions(
        config=config,
        name=name,
        data=data,
        data_format=data_format,
        schema=schema,
        infer_schema=infer_schema,
        label=label,
        positive=list(positive or []),
        positive_above=positive_above,
        patient_id=patient_id,
        state_dir=state_dir,
        dataset_id=dataset_id,
        total_epsilon=total_epsilon,
        total_delta=total_delta,
        max_epsilon_per_run=max_epsilon_per_run,
        allow_non_dp=allow_non_dp,
        min_cell_size=min_cell_size,
        auto_approve=auto_approve,
        force=force,
    )
    if config.exists() and not force:  # before any question is asked
        raise SiteCommandError(f"{config} exists; pass --force to overwrite it")
    opts = complete(opts, interactive=_interactive() if interactive is None else interactive)
    result = write_site(opts)
    for line in describe(result):
        console.print(escape(line))
    for note in result.notes:
        console.print(f"[yellow]note: {escape(note)}[/]")
    console.print(
        "\nThe site config holds no connection settings. Start this site's SuperNode with:\n"
    )
    import shlex

    node_id_file = shlex.quote(str(result.site.state_path.resolve() / ".supernode-node-id"))
    console.print(
        escape(
            "export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1\n"
            # Lets a SuperNode restarted after a crash release its stale node (docs/deployment.md).
            + f"export FEDWARD_NODE_ID_FILE={node_id_file}\n"
            + supernode_command(
                config,
                superlink=superlink,
                root_certificates=root_certificates,
                auth_key=auth_key,
                port=supernode_port,
            )
        ),
        highlight=False,
    )
    console.print(
        f"\n--port {supernode_port} is this SuperNode's local runtime API port: each SuperNode on "
        "one host needs its own (--supernode-port).",
        highlight=False,
    )
    console.print(
        f"\nNext: `fedward site check --site-config {escape(str(config))}"
        + (f" --superlink {escape(superlink)}" if superlink else "")
        + (f" --root-certificates {escape(str(root_certificates))}" if root_certificates else "")
        + "`, then approve runs with `fedward site approve`.",
        highlight=False,
    )


_STATUS_STYLE = {"ok": "green", "warning": "yellow", "FAILED": "bold red", "skipped": "dim"}


def check(
    site_config: SiteConfigOption,
    superlink: Annotated[
        str | None,
        typer.Option(
            "--superlink",
            help="Also test TCP and TLS to the SuperLink at HOST:PORT.",
            metavar="HOST:PORT",
        ),
    ] = None,
    root_certificates: Annotated[
        Path | None,
        typer.Option(
            "--root-certificates",
            help="The CA that verifies the SuperLink (default: the system's trusted CAs).",
            metavar="CA.pem",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=120, help="Seconds for the connection test.")
    ] = 5.0,
) -> None:
    """Check config, schema, data, state folder, ledger and SuperLink; exit 1 if any check failed.

    Nothing is trained and no data is sent: the SuperLink test is a TCP connect and a TLS handshake.
    """
    from fedward.client.site_check import run_checks

    results = run_checks(
        site_config, superlink=superlink, root_certificates=root_certificates, timeout=timeout
    )
    table = Table(title=f"Site check of {escape(str(site_config))}", header_style="bold")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for r in results:
        table.add_row(r.name, f"[{_STATUS_STYLE[r.status]}]{r.status}[/]", escape(r.detail))
    console.print(table)
    failed = [r.name for r in results if r.failed]
    if failed:
        console.print(f"[bold red]FAILED[/]: {escape(', '.join(failed))}")
        raise typer.Exit(1)
    console.print(
        "[green]all checks passed[/]"
        + (" (with warnings)" if any(r.status == "warning" for r in results) else "")
    )
