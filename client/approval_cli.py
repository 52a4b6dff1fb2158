"""`fedward site approve`: a person at the site approves a run config (by its hash) and this
installation's fedward code (by its hash), and sees every companion federation the run config
asks for, which the approval covers. Approvals are kept in the privacy ledger's approvals table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from fedward.client.ledger import Ledger
from fedward.client.site_console import (
    SiteConfigOption,
    by_option,
    console,
    person,
)
from fedward.common.code_identity import SITE_PACKAGES, code_hash, fedward_version
from fedward.common.run_config import RunConfig, load_run_config
from fedward.common.site_config import load_site_config

if TYPE_CHECKING:
    pass


def companion_summary(run: RunConfig) -> list[str]:
    """One line per kind of federation besides the run that approving ``run`` lets the site join."""
    from fedward.common.run_plan import companion_runs, tuning_trials

    lines = []
    trials = tuning_trials(run)
    if trials:
        lines.append(
            f"{len(trials)} tuning trials of the run's model ({run.tuning.search} search, "
            f"{run.tuning.deep_rounds or run.rounds} rounds each), then the run with the best setting"
        )
    for name, companion, purpose in companion_runs(run):
        lines.append(f"{name} ({purpose}), config {companion.config_hash()[:12]}…")
    if run.controls.leave_one_site_out:
        lines.append("leave-one-site-out: the run's own config, once per site left out")
    if lines:
        lines.append("each spends privacy budget like any run and is recorded in the ledger")
    return lines


def approve(
    run_config: Annotated[
        Path, typer.Argument(help="The run config TOML to approve.", metavar="RUN.toml")
    ],
    site_config: SiteConfigOption,
    by: Annotated[str | None, by_option("approves")] = None,
    note: Annotated[
        str, typer.Option("--note", help="Why, or a ticket reference; kept with the approval.")
    ] = "",
) -> None:
    """Approve a run config (by its hash) and this installation's fedward code (by its hash)."""
    site = load_site_config(site_config)
    run = load_run_config(run_config)
    who = person(by, "approves")
    ledger = Ledger(site.state_path)
    wanted = [("run-config", run.config_hash()), ("code", code_hash())]
    before = {(a["kind"], a["value"]) for a in ledger.approvals()}
    for kind, value in wanted:
        ledger.approve(kind, value, by=who, note=note)
    recorded = {(a["kind"], a["value"]): a for a in ledger.approvals()}

    console.print(
        f"site [bold]{escape(site.name)}[/]: approvals in ledger {escape(str(ledger.path))}"
    )
    what = {
        "run-config": f"run config {run_config}",
        "code": f"fedward {fedward_version()} ({', '.join(SITE_PACKAGES)})",
    }
    for kind, value in wanted:
        rec = recorded[(kind, value)]
        again = " [yellow](already approved; the first approval is kept)[/]"
        console.print(
            f"  {kind:<10}  {value}  {escape(what[kind])}\n"
            f"              by {escape(rec['approved_by'])} at {rec['approved_at']}"
            + (f", note: {escape(rec['note'])}" if rec["note"] else "")
            + (again if (kind, value) in before else "")
        )
    plan = companion_summary(run)
    if plan:
        console.print(
            "  the run config also asks for these federations, which this approval covers (the "
            "site re-derives each one and accepts nothing else):"
        )
        for line in plan:
            console.print(f"    - {escape(line)}")
    if site.policy.auto_approve:
        console.print(
            "[yellow]note: this site's policy has auto_approve = true, so approvals are not "
            f"checked; set it to false in {escape(str(site_config))} for a real site[/]"
        )
    if not run.privacy.dp and not site.policy.allow_non_dp:
        console.print(
            "[yellow]note: this run config asks for training without DP; the site's policy "
            "(allow_non_dp = false) still refuses it[/]"
        )
