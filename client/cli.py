"""The site operator's commands: `fedward site init | check | approve | ledger | verify | rotate-key |
metrics | withdraw | withdrawals`.

Registered on the root `fedward` command through the ``fedward.cli`` entry point. The site writes its
config (``init``) and checks it without training (``check``), approves what it runs (run configs by
hash, its fedward code by hash), shows its privacy ledger and budget to an auditor, checks the
ledger's hash chain, serves its budget to Prometheus, and withdraws from runs. Every command reads
the site config's own ``state_dir``; only ``approve`` writes to the ledger (its approvals table),
and ``withdraw`` appends to the withdrawals file beside it.

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

from fedward.client.ledger import LEDGER_FILE, Ledger, LedgerError
from fedward.common.code_identity import SITE_PACKAGES, code_hash, fedward_version
from fedward.common.config import RunConfig, SiteConfig, load_run_config, load_site_config
from fedward.common.errors import FedwardError

if TYPE_CHECKING:
    from fedward.client.site_metrics import LedgerSummary

console = Console(soft_wrap=True)

site_app = typer.Typer(
    help="Site operator: set up and check the site, approve runs and code, show and verify the "
    "privacy ledger, serve metrics, withdraw from runs.",
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
    ledger = Ledger(site.state_path)
    result = ledger.verify()
    if result.ok:
        if result.adopted:
            console.print(f"[yellow]NOTE[/]: {escape(result.adopted)}")
        console.print(
            f"OK: {escape(str(path))}: {result.entries} entries, head {result.head}; anchored "
            f"under the site key {escape(str(ledger.key_path))}"
        )
        return
    where = (
        f"entry {result.bad_seq} of {result.entries}; the chain is intact up to head "
        f"{result.head[:12]}"
        if result.bad_seq is not None
        else f"the chain holds {result.entries} entries but does not reach the anchor "
        f"{escape(str(ledger.anchor_path))}"
    )
    console.print(
        f"[bold red]BROKEN[/]: {escape(str(path))}: {escape(result.problem or '')} "
        f"({where}). The site will not train until an auditor has looked at it."
    )
    raise typer.Exit(1)


@site_app.command("rotate-key")
def rotate_key(site_config: SiteConfigOption) -> None:
    """Replace the site key that signs the ledger's anchor, after verifying the ledger under the
    old one. Exit 1, changing nothing, when the ledger does not verify."""
    site: SiteConfig = load_site_config(site_config)
    ledger = Ledger(site.state_path)
    try:
        old, new = ledger.rotate_key()
    except LedgerError as exc:
        console.print(f"[bold red]NOT ROTATED[/]: {escape(str(exc))}")
        raise typer.Exit(1) from None
    console.print(
        f"Rotated: {escape(str(ledger.key_path))} now holds key {new} (was {old}); the anchor "
        f"{escape(str(ledger.anchor_path))} is signed under it. Back up the new key with the "
        "state folder; the old one no longer verifies anything."
    )


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


# ---- init ------------------------------------------------------------------------------------


def _interactive() -> bool:
    import sys

    return sys.stdin.isatty()


@site_app.command("init")
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


# ---- check -----------------------------------------------------------------------------------

_STATUS_STYLE = {"ok": "green", "warning": "yellow", "FAILED": "bold red", "skipped": "dim"}


@site_app.command("check")
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


# ---- withdraw --------------------------------------------------------------------------------


@site_app.command("withdraw")
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
    by: Annotated[
        str | None, typer.Option("--by", help="Who withdraws; default: the OS user name.")
    ] = None,
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
    who = (by if by is not None else _os_user()).strip()
    if not who:
        raise SiteCommandError("--by is empty: name the person who withdraws")
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


@site_app.command("withdrawals")
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
            _time(w.withdrawn_at), escape(w.run), matches, escape(w.withdrawn_by), escape(w.reason)
        )
    _print_whole(table)


def register(app: typer.Typer) -> None:
    """Entry point of the ``fedward.cli`` group: adds `fedward site`."""
    app.add_typer(site_app, name="site")
    from fedward.client.he_cli import register_he

    register_he(app)
