"""The site operator's commands: `fedward site init | check | approve | ledger | verify | rotate-key |
metrics | withdraw | withdrawals`.

Registered on the root `fedward` command through the ``fedward.cli`` entry point. The site writes its
config (``init``) and checks it without training (``check``), approves what it runs (run configs by
hash, its fedward code by hash), shows its privacy ledger and budget to an auditor, checks the
ledger's hash chain, serves its budget to Prometheus, and withdraws from runs. Every command reads
the site config's own ``state_dir``; only ``approve`` writes to the ledger (its approvals table),
and ``withdraw`` appends to the withdrawals file beside it.

The commands live by concept: ``approval_cli`` (approve), ``ledger_cli`` (ledger, verify,
rotate-key), ``site_setup_cli`` (init, check) and ``withdrawal_cli`` (withdraw, withdrawals), with
what they share in ``site_console``; ``metrics`` is here. The accounting modules (Opacus, torch) are
imported inside the commands that need them, so other `fedward` commands do not pay for them.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from fedward.client.approval_cli import approve
from fedward.client.ledger_cli import ledger, rotate_key, verify
from fedward.client.site_console import SiteConfigOption, console
from fedward.client.site_setup_cli import check, init
from fedward.client.withdrawal_cli import withdraw, withdrawals
from fedward.common.site_config import load_site_config

site_app = typer.Typer(
    help="Site operator: set up and check the site, approve runs and code, show and verify the "
    "privacy ledger, serve metrics, withdraw from runs.",
    no_args_is_help=True,
)


def metrics(
    site_config: SiteConfigOption,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port; 0 picks a free one.")
    ] = 9101,
) -> None:
    """Serve the site's privacy gauges to Prometheus at /metrics until SIGTERM or Ctrl-C."""
    from fedward.client.site_metrics import RowCount, serve_metrics, summarise

    site = load_site_config(site_config)
    rows = RowCount(site)
    # Fail at start, not at the first scrape: the schema, the table (default δ) and the ledger.
    site.load_schema()
    if site.policy.total_delta is None:
        rows()
    summary = summarise(site, rows)

    def ready(url: str) -> None:
        console.print(
            f"serving privacy metrics of site '{escape(site.name)}' at {url} "
            f"(ledger {escape(str(summary.ledger_path))}); stop with Ctrl-C or SIGTERM"
        )

    serve_metrics(site, host, port, rows=rows, on_ready=ready)
    console.print("metrics server stopped")


# In this order in `fedward site --help`.
site_app.command("approve")(approve)
site_app.command("ledger")(ledger)
site_app.command("verify")(verify)
site_app.command("rotate-key")(rotate_key)
site_app.command("metrics")(metrics)
site_app.command("init")(init)
site_app.command("check")(check)
site_app.command("withdraw")(withdraw)
site_app.command("withdrawals")(withdrawals)


def register(app: typer.Typer) -> None:
    """Entry point of the ``fedward.cli`` group: adds `fedward site`."""
    app.add_typer(site_app, name="site")
    from fedward.client.he_cli import register_he

    register_he(app)
