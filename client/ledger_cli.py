"""`fedward site ledger | verify | rotate-key`: the privacy ledger shown to an auditor (its
history and each dataset's lifetime ε, optionally exported), its hash chain checked, and the site
key that signs its anchor replaced.

The accounting modules (Opacus, torch) are imported inside ``ledger``, which needs them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from fedward.client.ledger import LEDGER_FILE, Ledger, LedgerError
from fedward.client.site_console import (
    SiteCommandError,
    SiteConfigOption,
    console,
    num_cell,
    print_whole,
    time_cell,
)
from fedward.common.cli import exit_1_on
from fedward.common.site_config import SiteConfig, load_site_config

if TYPE_CHECKING:
    from fedward.client.site_metrics import LedgerSummary

EXPORT_FORMATS: dict[str, Literal["json", "csv"]] = {".json": "json", ".csv": "csv"}


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
            time_cell(e.created_at),
            *([e.dataset] if several else []),
            e.run_id,
            str(e.round),
            e.attempt,
            e.kind,
            num_cell(e.noise_multiplier),
            num_cell(e.sample_rate),
            str(e.steps),
            num_cell(e.delta, ".2g"),
            e.hash[:10],
        )
    table.caption = "'plan' entries record a run's planned noise and spend nothing"
    return table


def _budget_table(summary: LedgerSummary) -> Table:
    table = Table(title="Lifetime privacy budget per dataset (RDP accountant)", header_style="bold")
    for col in ("dataset", "ε spent", "at δ", "ε budget", "ε remaining", "runs", "entries"):
        table.add_column(col)
    for d in summary.datasets:
        table.add_row(
            d.dataset,
            num_cell(d.epsilon_spent, ".3f"),
            num_cell(d.delta, ".2g"),
            num_cell(d.epsilon_budget, "g"),
            num_cell(d.epsilon_remaining, ".3f"),
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
        print_whole(_history_table(summary))
    else:
        console.print(f"no privacy ledger at {escape(str(summary.ledger_path))} yet: nothing spent")
    print_whole(_budget_table(summary))
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


def rotate_key(site_config: SiteConfigOption) -> None:
    """Replace the site key that signs the ledger's anchor, after verifying the ledger under the
    old one. Exit 1, changing nothing, when the ledger does not verify."""
    site: SiteConfig = load_site_config(site_config)
    ledger = Ledger(site.state_path)
    with exit_1_on(LedgerError, "NOT ROTATED", console):
        old, new = ledger.rotate_key()
    console.print(
        f"Rotated: {escape(str(ledger.key_path))} now holds key {new} (was {old}); the anchor "
        f"{escape(str(ledger.anchor_path))} is signed under it. Back up the new key with the "
        "state folder; the old one no longer verifies anything."
    )
