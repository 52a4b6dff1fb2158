"""Coordinator and developer commands: `fedward simulate`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fedward.common.config import RunConfig, load_run_config, validate_config

if TYPE_CHECKING:
    from fedward.server.simulate import ProgressState

console = Console()


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and v.is_integer() and digits == 0:
        return str(int(v))
    if isinstance(v, float):
        return "∞" if v == float("inf") else f"{v:.{digits}f}"
    return str(v)


def _progress_view(state: ProgressState, title: str) -> Group:
    head = Text(f"{title}  round {state.current_round}/{state.rounds}", style="bold")
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("site", "status", "ε so far", "train loss", "tune AUROC", "tune acc"):
        table.add_column(col)
    for name, s in sorted((state.sites or {}).items()):
        table.add_row(
            name,
            str(s.get("status", "…")),
            _fmt(s.get("epsilon"), 2),
            _fmt(s.get("loss")),
            _fmt(s.get("auroc")),
            _fmt(s.get("accuracy")),
        )
    parts: list[Any] = [head, table]
    if state.pooled:
        parts.append(Text(f"pooled tune AUROC {_fmt(state.pooled.get('auroc'))}"))
    return Group(*parts)


def _final_table(run_dir: Path) -> Table:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = json.loads((run_dir / "run_record.json").read_text())
    test = metrics["test"] or {"sites": {}, "pooled": None}
    eps = {s["site"]: s for s in record["sites"]}
    table = Table(title="Sealed test split, final model", header_style="bold", pad_edge=False)
    for col in ("site", "n", "acc", "AUROC [95% CI]", "AUPRC", "bal.acc", "Brier", "ε"):
        table.add_column(col, no_wrap=True)
    for name, panel in sorted(test["sites"].items()):
        ci = f"{_fmt(panel.get('auroc'), 2)} [{_fmt(panel.get('auroc_lo'), 2)}–{_fmt(panel.get('auroc_hi'), 2)}]"
        table.add_row(
            name,
            _fmt(panel.get("n"), 0),
            _fmt(panel.get("accuracy"), 2),
            ci,
            _fmt(panel.get("auprc"), 2),
            _fmt(panel.get("balanced_accuracy"), 2),
            _fmt(panel.get("brier"), 2),
            _fmt(eps.get(name, {}).get("epsilon"), 2),
        )
    pooled = test.get("pooled") or {}
    table.add_row(
        "pooled*",
        _fmt(pooled.get("n"), 0),
        _fmt(pooled.get("accuracy"), 2),
        _fmt(pooled.get("auroc"), 2),
        _fmt(pooled.get("auprc"), 2),
        _fmt(pooled.get("balanced_accuracy"), 2),
        _fmt(pooled.get("brier"), 2),
        "",
        style="bold",
    )
    table.caption = (
        "* pooled from the sites' score histograms, never from raw scores"
        if metrics["test"] is not None
        else f"no final model: {record.get('stopped_reason')}"
    )
    return table


def _privacy_modes(run_dir: Path) -> list[str]:
    """One line per optional privacy mode that was on, as privacy_summary.json states it."""
    summary = json.loads((run_dir / "privacy_summary.json").read_text())
    lines = []
    central = summary.get("central_dp") or {}
    if central.get("enabled"):
        lines.append(
            f"site-level central DP: ε={_fmt(central['epsilon'], 2)} planned, "
            f"{_fmt(central['epsilon_as_run'], 2)} as run, at δ={central['delta']:.2g}, over "
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


def _left_out(run_dir: Path) -> list[str]:
    record = json.loads((run_dir / "run_record.json").read_text())
    return [f"{x['site']} left out ({x['status']}): {x['reason']}" for x in record["left_out"]]


def simulate(
    dataset: Annotated[
        str | None, typer.Option(help="Bundled dataset: heart-disease, breast-cancer, digits.")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Run config TOML.")] = None,
    sites: Annotated[
        int | None, typer.Option(help="Number of sites for datasets split artificially.")
    ] = None,
    site_config: Annotated[
        list[Path] | None,
        typer.Option("--site-config", help="A site config TOML; repeat once per site."),
    ] = None,
    partition: Annotated[str | None, typer.Option(help="natural, iid or dirichlet.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    epsilon: Annotated[
        float | None, typer.Option(help="Target ε for the whole run, per site.")
    ] = None,
    no_dp: Annotated[
        bool, typer.Option("--no-dp", help="Train without DP (simulation and comparison only).")
    ] = False,
    seed: Annotated[
        int | None, typer.Option(help="Seed for splits, initialisation and sampling.")
    ] = None,
    secure_aggregation: Annotated[
        bool,
        typer.Option(
            "--secure-aggregation",
            help="Flower's SecAgg+: the coordinator sees only the sum of the sites' models "
            "(legacy workflow; no per-update validation, no robust aggregation).",
        ),
    ] = False,
    central_dp: Annotated[
        bool,
        typer.Option(
            "--central-dp",
            help="Site-level DP with Flower's server-side wrapper; noise and clipping from the "
            "run config's privacy.central table. The unit is a whole site: needs many sites.",
        ),
    ] = False,
    out: Annotated[Path, typer.Option(help="Folder that receives the run folder.")] = Path("runs"),
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="The simulated sites' state folders (their privacy ledgers). Default: a fresh one "
            "inside the run folder, so repeated simulations do not drain a budget by accident; give "
            "the same folder to several runs to see their budgets compose."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Show Flower's and Ray's logs.")] = False,
) -> None:
    """Run a whole federation on this machine (default: four heart-disease hospitals, DP ε=1)."""
    run = load_run_config(config)
    data: dict[str, Any] = run.model_dump(mode="json")
    if dataset is not None:
        data["task"]["dataset"] = dataset
        if config is None and dataset != "heart-disease":
            data["task"]["partition"] = "iid"
            data["task"]["n_sites"] = 4
    if sites is not None:
        data["task"]["n_sites"] = sites
        if data["task"]["partition"] == "natural" and data["task"]["dataset"] != "heart-disease":
            data["task"]["partition"] = "iid"
    if partition is not None:
        data["task"]["partition"] = partition
    if rounds is not None:
        data["rounds"] = rounds
    if epsilon is not None:
        data["privacy"]["target_epsilon"] = epsilon
    if no_dp:
        data["privacy"]["dp"] = False
    if seed is not None:
        data["seed"] = seed
    if dataset == "digits" and config is None:
        data["model"]["kind"] = "cnn"
    if secure_aggregation:
        data["strategy"]["secure_aggregation"] = True
    if central_dp:
        data["privacy"]["central"]["enabled"] = True
    run = validate_config(RunConfig, data, config or "<command line>")

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = out / f"{stamp}-{run.name}"
    # Imported here: torch, Flower and Ray take seconds to load, and other commands need none of them.
    from fedward.server.app import CoordinatorSettings
    from fedward.server.simulate import run_simulation

    settings = CoordinatorSettings(
        run=run,
        output_dir=str(out),
        run_dir=str(run_dir),
        engine="simulation",
        sim_site_configs=[str(p.resolve()) for p in site_config or []],
        sim_state_dir=str(state_dir.resolve()) if state_dir is not None else None,
    )
    title = (
        f"fedward simulate · {run.task.dataset or 'site configs'} · "
        f"{'DP ε=' + str(run.privacy.target_epsilon) if run.privacy.dp else 'no DP'}"
        + (" · SecAgg+" if run.strategy.secure_aggregation else "")
        + (" · site-level central DP" if run.privacy.central.enabled else "")
    )
    if verbose:
        run_simulation(settings, verbose=True)
    else:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            run_simulation(settings, on_update=lambda s: live.update(_progress_view(s, title)))
    console.print(_final_table(run_dir))
    for line in _left_out(run_dir):
        console.print(f"[yellow]{line}[/]")
    for line in _privacy_modes(run_dir):
        console.print(line)
    console.print(f"run folder: [bold]{run_dir}[/]")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
