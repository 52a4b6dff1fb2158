"""What a run prints on the coordinator operator's terminal: the live progress view, the sealed
test table with its caveats, which ε is which, left-out sites, data warnings and the audit verdict.

`fedward simulate` and `fedward run` print the same views, so they live here, apart from both
commands (and neither command module imports the other).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fedward.server.report_format import console_cell

if TYPE_CHECKING:
    from fedward.server.simulate import ProgressState

console = Console()


def progress_view(state: ProgressState, title: str) -> Group:
    """The live view while a run goes: its round, then each site's status, ε so far and tune figures."""
    head = Text(f"{title}  round {state.current_round}/{state.rounds}", style="bold")
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("site", "status", "ε of model so far", "train loss", "tune AUROC", "tune acc"):
        table.add_column(col)
    for name, s in sorted((state.sites or {}).items()):
        table.add_row(
            name,
            str(s.get("status", "…")),
            console_cell(s.get("epsilon"), 2),
            console_cell(s.get("loss")),
            console_cell(s.get("auroc")),
            console_cell(s.get("accuracy")),
        )
    parts: list[Any] = [head, table]
    if state.pooled:
        parts.append(Text(f"pooled tune AUROC {console_cell(state.pooled.get('auroc'))}"))
    if state.phase:
        parts.append(Text(state.phase, style="dim"))
    return Group(*parts)


def final_table(run_dir: Path) -> Table:
    """The final model on each site's sealed test split, and the pooled row with its caveats."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = json.loads((run_dir / "run_record.json").read_text())
    test = metrics["test"] or {"sites": {}, "pooled": None}
    eps = {s["site"]: s for s in record["sites"]}
    table = Table(title="Sealed test split, final model", header_style="bold", pad_edge=False)
    for col in ("site", "n", "acc", "AUROC [95% CI]", "AUPRC", "bal.acc", "Brier", "ε"):
        table.add_column(col, no_wrap=True)
    for name, panel in sorted(test["sites"].items()):
        ci = f"{console_cell(panel.get('auroc'), 2)} [{console_cell(panel.get('auroc_lo'), 2)}–{console_cell(panel.get('auroc_hi'), 2)}]"
        table.add_row(
            name,
            console_cell(panel.get("n"), 0),
            console_cell(panel.get("accuracy"), 2),
            ci,
            console_cell(panel.get("auprc"), 2),
            console_cell(panel.get("balanced_accuracy"), 2),
            console_cell(panel.get("brier"), 2),
            console_cell(
                eps.get(name, {}).get("epsilon_model", eps.get(name, {}).get("epsilon")), 2
            ),
        )
    pooled = test.get("pooled") or {}
    omitted = pooled.get("omitted") or {}
    table.add_row(
        "pooled*" + ("†" if omitted or pooled.get("coverage") else ""),
        console_cell(pooled.get("n"), 0),
        console_cell(pooled.get("accuracy"), 2),
        console_cell(pooled.get("auroc"), 2),
        console_cell(pooled.get("auprc"), 2),
        console_cell(pooled.get("balanced_accuracy"), 2),
        console_cell(pooled.get("brier"), 2),
        "",
        style="bold",
    )
    table.caption = (
        "* pooled from the sites' score histograms, never from raw scores; – not sent by the "
        "site (a figure that would name a count under its minimum cell size) or undefined"
        + _pooled_caveats(pooled, test.get("histograms") or {})
        if metrics["test"] is not None
        else f"no final model: {record.get('stopped_reason')}"
    )
    return table


_POOLED_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "brier": "Brier",
    "ece": "calibration error",
    "auroc": "AUROC",
    "prevalence": "prevalence",
    "auprc": "AUPRC",
}


def _pooled_caveats(pooled: dict[str, Any], histograms: dict[str, Any]) -> str:
    """† lines under the table: which sites the pooled row covers and each figure it leaves out."""
    from fedward.server.pooled_metrics import pooled_coverage

    lines = []
    if coverage := pooled_coverage(pooled, histograms):
        lines.append(f"pooled row covers {coverage}")
    bounds = pooled.get("bounds") or {}
    if bounds.get("auroc") and pooled.get("auroc") is not None:
        lo, hi = bounds["auroc"]
        lines.append(
            "pooled AUROC counts scores tied within a histogram group as one half (toward 0.5); "
            f"the exact figure lies in {lo:.2f}–{hi:.2f}"
        )
    for key in pooled.get("from_sites") or []:
        lines.append(
            f"pooled {_POOLED_LABELS.get(key, key)} is the sites' own figures weighted by n (exact)"
        )
    for key, reason in (pooled.get("omitted") or {}).items():
        span = bounds.get(key)
        where = f" (lies in {span[0]:.2f}–{span[1]:.2f})" if span else ""
        lines.append(f"pooled {_POOLED_LABELS.get(key, key)} left out{where}: {reason}")
    return "".join(f"\n† {line}" for line in lines)


def epsilon_lines(run_dir: Path) -> list[str]:
    """Which ε is which: the released model's per site, then what else the invocation spent."""
    summary = json.loads((run_dir / "privacy_summary.json").read_text())
    if not summary.get("dp"):
        return []
    covers = json.loads((run_dir / "run_record.json").read_text())["privacy"]["epsilon_covers"]
    lines = [
        f"ε above: the released model's, per site (target {summary.get('target_epsilon')}), "
        f"composing {', '.join(covers)}"
    ]
    for s in summary.get("sites") or []:
        bound = s.get("epsilon_bound")
        if bound:
            lines.append(
                f"[yellow]{escape(s['site'])}: ε at least {bound['at_least']:.2f}, at most "
                f"{bound['at_most']:g}: {escape(bound['reason'])}[/]"
            )
        other = s.get("companion_epsilon") or {}
        if other:
            spent = ", ".join(f"{k} {v:.2f}" for k, v in sorted(other.items()))
            lifetime = s.get("epsilon_lifetime")
            lines.append(
                f"{escape(s['site'])} also spent: {spent} (not in the released model's ε); "
                f"lifetime ε now {console_cell(lifetime, 2)}"
            )
    return lines


def privacy_modes(run_dir: Path) -> list[str]:
    """One line per optional privacy mode that was on, as privacy_summary.json states it."""
    summary = json.loads((run_dir / "privacy_summary.json").read_text())
    lines = []
    central = summary.get("central_dp") or {}
    if central.get("enabled"):
        lines.append(
            f"site-level central DP: ε={console_cell(central['epsilon'], 2)} planned, "
            f"{console_cell(central['epsilon_as_run'], 2)} as run, at δ={central['delta']:.2g}, over "
            f"{central['num_sites']} sites (the unit is a whole site)"
        )
        lines += [f"[yellow]{w}[/]" for w in central.get("warnings", [])]
    secagg = summary.get("secure_aggregation") or {}
    if secagg.get("enabled"):
        lines.append(
            f"secure aggregation (SecAgg+, {secagg['num_shares']} shares, threshold "
            f"{secagg['reconstruction_threshold']}): the coordinator saw only sums of site models"
        )
        lines += [f"[yellow]{w}[/]" for w in secagg.get("warnings", [])]
    return lines


def left_out_lines(run_dir: Path) -> list[str]:
    """One line per site the run record says was left out, with why."""
    record = json.loads((run_dir / "run_record.json").read_text())
    return [f"{x['site']} left out ({x['status']}): {x['reason']}" for x in record["left_out"]]


MAX_WARNING_LINES = 8


def site_warning_lines(run_dir: Path) -> list[str]:
    """The sites' data warnings (clipped out-of-range values with their count, or "fewer than N"
    under a site's minimum cell; empty columns), which otherwise only the run record and card hold."""
    record = json.loads((run_dir / "run_record.json").read_text())
    warnings = [str(w) for w in record.get("warnings") or []]
    lines = [f"warning: {w}" for w in warnings[:MAX_WARNING_LINES]]
    if len(warnings) > MAX_WARNING_LINES:
        lines.append(
            f"warning: {len(warnings) - MAX_WARNING_LINES} more in {run_dir / 'run_record.json'}"
        )
    return lines


def print_audit(run_dir: Path) -> None:
    """The membership audit's verdict, its flags, failures and caveats, when the run was audited."""
    if not (run_dir / "audit.json").exists():
        return
    report = json.loads((run_dir / "audit.json").read_text())
    verdict = report["verdict"]
    passed = verdict.startswith("pass")
    colour = "red" if not passed else "yellow" if "leak observed" in verdict else "green"
    console.print(f"[bold]Membership audit:[/] [{colour}]{verdict}[/]")
    for model in report["models"].values():
        for line in model["flags"] + model["failures"]:
            console.print(f"  [red]{line}[/]")
        # Under DP a leak is a flag, not a failure: still printed, with what was observed.
        if model.get("dp_guarantee"):
            for leak in model.get("leaks") or []:
                console.print(f"  [yellow]flag: leak observed within the DP guarantee: {leak}[/]")
        for site, entry in (model.get("sites") or {}).items():
            if entry.get("status") != "ok":
                console.print(f"  [yellow]not audited: {site}: {entry.get('reason')}[/]")
    for caveat in report.get("caveats", []):
        console.print(f"  [yellow]caveat: {caveat}[/]")
    console.print(f"  details: {run_dir / 'audit.html'}")
