"""`fedward site withdraw | withdrawals`: the site withdraws from a run (the ClientApp then refuses
every further message of it) and lists its withdrawals. The privacy ledger is never changed:
what was spent stays spent.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fedward.client.ledger import LEDGER_FILE, Ledger
from fedward.client.site_console import (
    SiteCommandError,
    SiteConfigOption,
    by_option,
    console,
    person,
    print_whole,
    time_cell,
)
from fedward.common.run_config import load_run_config
from fedward.common.site_config import SiteConfig, load_site_config

if TYPE_CHECKING:
    pass


def withdraw(
    site_config: SiteConfigOption,
    run: Annotated[
        str | None,
        typer.Argument(
            help="fedward's run id (it also covers the run's companion federations) or a run "
            "config's full hash.",
            metavar="RUN",
        ),
    ] = None,
    run_config: Annotated[
        Path | None,
        typer.Option(
            "--run-config",
            help="Withdraw from a run config (by its hash) instead of RUN.",
            metavar="RUN.toml",
        ),
    ] = None,
    by: Annotated[str | None, by_option("withdraws")] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why; kept at the site, never sent.")
    ] = "",
) -> None:
    """Withdraw this site from a run: the ClientApp refuses every further message of it.

    Nothing already in the privacy ledger changes.
    """
    from fedward.client.withdrawal import read_withdrawals, record_withdrawal, withdrawals_path

    if (run is None) == (run_config is None):
        raise SiteCommandError("give exactly one of RUN or --run-config RUN.toml")
    site = load_site_config(site_config)
    target = run if run is not None else load_run_config(run_config).config_hash()
    target = target.strip()
    who = person(by, "withdraws")
    state = site.state_path
    earlier = next((w for w in read_withdrawals(state) if w.run == target), None)
    if earlier is not None:
        console.print(
            f"site [bold]{escape(site.name)}[/] already withdrew from {escape(earlier.describe())} "
            f"at {earlier.withdrawn_at} (by {escape(earlier.withdrawn_by)}); nothing recorded"
        )
        return
    done = record_withdrawal(state, run=target, site=site.name, by=who, reason=reason)
    console.print(
        f"site [bold]{escape(site.name)}[/] withdrew from {escape(done.describe())} at "
        f"{done.withdrawn_at} by {escape(done.withdrawn_by)}"
        + (f", reason: {escape(done.reason)}" if done.reason else "")
        + f"\n  recorded in {escape(str(withdrawals_path(state)))}; every further message of "
        "it is refused. The privacy ledger is unchanged: what was spent stays spent."
    )
    for warning in _withdrawal_warnings(site, done.run, done.match):
        console.print(f"[yellow]note: {escape(warning)}[/]")


def _withdrawal_warnings(site: SiteConfig, run: str, match: str) -> list[str]:
    """A run this site never saw may be a typo: say so, without refusing (a site may withdraw early)."""
    path = site.state_path / LEDGER_FILE
    if not path.is_file():
        return [f"no ledger at {path} yet: check the run id ({run}) with the coordinator"]
    ledger = Ledger(site.state_path)
    if match == "config-hash":
        seen = ledger.is_approved("run-config", run) or any(
            e.config_hash == run for e in ledger.entries()
        )
        return [] if seen else [f"run config {run[:12]}… was never approved or run at this site"]
    runs = {e.run_id for e in ledger.entries()}
    if any(r == run or r.startswith(run + "-") for r in runs):
        return []
    notes = [f"no ledger entry names run {run} yet (`fedward site ledger` lists the runs)"]
    prefix = run.lower()
    for a in ledger.approvals():
        if a["kind"] == "run-config" and len(prefix) >= 8 and a["value"].startswith(prefix):
            notes.append(
                f"{run} is the start of the approved run config hash {a['value']}: to withdraw "
                "from that config, give the full hash or --run-config RUN.toml"
            )
    return notes


def withdrawals(site_config: SiteConfigOption) -> None:
    """List this site's withdrawals from runs: what, when, by whom and why."""
    from fedward.client.withdrawal import read_withdrawals, withdrawals_path

    site = load_site_config(site_config)
    path = withdrawals_path(site.state_path)
    found = read_withdrawals(site.state_path)
    if not found:
        console.print(f"site {escape(site.name)}: no withdrawals recorded ({escape(str(path))})")
        return
    table = Table(
        title=f"Withdrawals of site '{escape(site.name)}' ({escape(str(path))})",
        header_style="bold",
    )
    for col in ("time (UTC)", "withdrawn from", "matches", "by", "reason"):
        table.add_column(col)
    for w in found:
        matches = "run config hash" if w.match == "config-hash" else "run id and its companions"
        table.add_row(
            time_cell(w.withdrawn_at),
            escape(w.run),
            matches,
            escape(w.withdrawn_by),
            escape(w.reason),
        )
    print_whole(table)
