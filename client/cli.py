"""The site operator's commands: `fedward site approve | ledger | verify | metrics`.

Registered on the root `fedward` command through the ``fedward.cli`` entry point. The site approves
what it runs (run configs by hash, its fedward code by hash), shows its privacy ledger and budget to an
auditor, checks the ledger's hash chain, and serves its budget to Prometheus. Every command reads the
site config's own ``state_dir``; only ``approve`` writes to the ledger (its approvals table).

The accounting modules (Opacus, torch) are imported inside the commands that need them, so other
`fedward` commands do not pay for them.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from fedward.client.ledger import LEDGER_FILE, Ledger
from fedward.common.code_identity import SITE_PACKAGES, code_hash, fedward_version
from fedward.common.config import RunConfig, SiteConfig, load_run_config, load_site_config
from fedward.common.errors import FedwardError

if TYPE_CHECKING:
    from fedward.client.site_metrics import LedgerSummary

console = Console(soft_wrap=True)

site_app = typer.Typer(
    help="Site operator: approve runs and code, show and verify the privacy ledger, serve metrics.",
    no_args_is_help=True,
)

SiteConfigOption = Annotated[
    Path,
    typer.Option(
        "--site-config",
        help="The site config TOML (its state_dir holds the privacy ledger).",
        metavar="SITE.toml",
    ),
]

EXPORT_FORMATS: dict[str, Literal["json", "csv"]] = {".json": "json", ".csv": "csv"}


class SiteCommandError(FedwardError):
    """A site command cannot do what was asked; the message names the file or option at fault."""


# ---- formatting ------------------------------------------------------------------------------


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"uid {os.getuid()}"


def _time(iso: str) -> str:
    """An entry's UTC timestamp to the second, for tables (exports keep the full value)."""
    return iso[:19].replace("T", " ")


def _num(value: float | None, spec: str = ".4g") -> str:
    return "–" if value is None else format(value, spec)


# ---- approve ---------------------------------------------------------------------------------


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


@site_app.command("approve")
def approve(
    run_config: Annotated[
        Path, typer.Argument(help="The run config TOML to approve.", metavar="RUN.toml")
    ],
    site_config: SiteConfigOption,
    by: Annotated[
        str | None, typer.Option("--by", help="Who approves; default: the OS user name.")
    ] = None,
    note: Annotated[
        str, typer.Option("--note", help="Why, or a ticket reference; kept with the approval.")
    ] = "",
) -> None:
    """Approve a run config (by its hash) and this installation's fedward code (by its hash)."""
    site = load_site_config(site_config)
    run = load_run_config(run_config)
    who = (by if by is not None else _os_user()).strip()
    if not who:
        raise SiteCommandError("--by is empty: name the person who approves")
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


# ---- ledger ----------------------------------------------------------------------------------


def _export_format(path: Path) -> Literal["json", "csv"]:
    fmt = EXPORT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        suffix = path.suffix or "(none)"
        raise SiteCommandError(
            f"--export '{path}': unknown file suffix '{suffix}'; use .json or .csv"
        )
    return fmt


def _history_table(summary: LedgerSummary) -> Table:
    several = len({e.dataset for e in summary.entries}) > 1
    table = Table(
        title=f"Privacy ledger of site '{summary.site}'",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    columns = ["seq", "time (UTC)", *(["dataset"] if several else [])]
    columns += ["run", "round", "attempt", "kind", "σ", "q", "steps", "δ", "hash"]
    for col in columns:
        table.add_column(col, no_wrap=True)
    for e in summary.entries:
        table.add_row(
            str(e.seq),
            _time(e.created_at),
            *([e.dataset] if several else []),
            e.run_id,
            str(e.round),
            e.attempt,
            e.kind,
            _num(e.noise_multiplier),
            _num(e.sample_rate),
            str(e.steps),
            _num(e.delta, ".2g"),
            e.hash[:10],
        )
    table.caption = "'plan' entries record a run's planned noise and spend nothing"
    return table


def _print_whole(table: Table) -> None:
    """Print a table at its natural width: an auditor's view never truncates a value (a narrow
    terminal wraps the lines instead)."""
    natural = Measurement.get(console, console.options.update(width=10**4), table).maximum
    if natural <= console.width:
        console.print(table)
    else:
        Console(width=natural, soft_wrap=True).print(table)


def _budget_table(summary: LedgerSummary) -> Table:
    table = Table(title="Lifetime privacy budget per dataset (RDP accountant)", header_style="bold")
    for col in ("dataset", "ε spent", "at δ", "ε budget", "ε remaining", "runs", "entries"):
        table.add_column(col)
    for d in summary.datasets:
        table.add_row(
            d.dataset,
            _num(d.epsilon_spent, ".3f"),
            _num(d.delta, ".2g"),
            _num(d.epsilon_budget, "g"),
            _num(d.epsilon_remaining, ".3f"),
            str(d.runs),
            str(d.entries),
        )
    return table


def _write_export(summary: LedgerSummary, path: Path, fmt: Literal["json", "csv"]) -> None:
    ledger = Ledger(summary.ledger_path.parent)
    try:
        ledger.export(path, fmt)
        if fmt == "json":
            data = json.loads(path.read_text())
            data["site"] = summary.site
            data["exported_at"] = datetime.now(UTC).isoformat()
            data["budget"] = summary.to_dict()
            path.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise SiteCommandError(
            f"--export '{path}': cannot write it ({exc.strerror or exc})"
        ) from exc


@site_app.command("ledger")
def ledger(
    site_config: SiteConfigOption,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Also write the ledger to FILE: .json (entries and a budget summary) or .csv.",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Show the privacy ledger's history and each dataset's lifetime ε: spent, budget, remaining."""
    from fedward.client.site_metrics import summarise

    site = load_site_config(site_config)
    fmt = _export_format(export) if export is not None else None
    summary = summarise(site)
    if export is not None and not summary.exists:
        raise SiteCommandError(
            f"site '{site.name}': no privacy ledger at {summary.ledger_path} yet, nothing to "
            f"export; check state_dir in {site_config}"
        )
    if summary.exists:
        _print_whole(_history_table(summary))
    else:
        console.print(f"no privacy ledger at {escape(str(summary.ledger_path))} yet: nothing spent")
    _print_whole(_budget_table(summary))
    for d in summary.datasets:
        if d.problem:
            console.print(
                f"[red]dataset {escape(d.dataset)}: ε not computed: {escape(d.problem)}[/]"
            )
    _print_chain(summary)
    if export is not None and fmt is not None:
        _write_export(summary, export, fmt)
        console.print(f"exported {len(summary.entries)} entries to {escape(str(export))} ({fmt})")


def _print_chain(summary: LedgerSummary) -> None:
    v = summary.verify
    if v.ok:
        console.print(f"hash chain: OK, {v.entries} entries, head {v.head[:12]}")
    else:
        console.print(f"[bold red]hash chain: BROKEN: {escape(v.problem or '')}[/]")


# ---- verify ----------------------------------------------------------------------------------


@site_app.command("verify")
def verify(site_config: SiteConfigOption) -> None:
    """Check the ledger's hash chain: exit 0 when intact, 1 naming the first bad entry."""
    site: SiteConfig = load_site_config(site_config)
    path = site.state_path / LEDGER_FILE
    if not path.is_file():
        console.print(
            f"OK: no privacy ledger at {escape(str(path))} yet (0 entries). If this site has "
            "trained before, its ledger was moved or deleted: restore it from a backup."
        )
        return
    result = Ledger(site.state_path).verify()
    if result.ok:
        console.print(f"OK: {escape(str(path))}: {result.entries} entries, head {result.head}")
        return
    console.print(
        f"[bold red]BROKEN[/]: {escape(str(path))}: {escape(result.problem or '')} "
        f"(entry {result.bad_seq} of {result.entries}; the chain is intact up to head "
        f"{result.head[:12]}). The site will not train until an auditor has looked at it."
    )
    raise typer.Exit(1)


# ---- metrics ---------------------------------------------------------------------------------


@site_app.command("metrics")
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


def register(app: typer.Typer) -> None:
    """Entry point of the ``fedward.cli`` group: adds `fedward site`."""
    app.add_typer(site_app, name="site")
    from fedward.client.he_cli import register_he

    register_he(app)
