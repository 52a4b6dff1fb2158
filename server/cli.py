"""Coordinator and developer commands: `fedward simulate`, `fedward audit`, `fedward report
baselines`, and ``register``, which adds them and the other coordinator command groups to `fedward`.

What a run prints at its end lives in ``run_console``, shared with `fedward run`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from fedward.common.config_files import validate_config
from fedward.common.run_config import RunConfig, load_run_config
from fedward.server.exit_codes import EXIT_INTERRUPTED, closing_line, exit_code, read_record
from fedward.server.report_format import console_auroc, console_cell, difference
from fedward.server.run_console import (
    console,
    epsilon_lines,
    final_table,
    left_out_lines,
    print_audit,
    privacy_modes,
    progress_view,
    site_warning_lines,
)
from fedward.server.site_schemas import run_names_schema

VERBOSE_HELP = (
    "Show Flower's and Ray's logs, tracebacks included "
    "(without it they go to the run folder's simulation.log)."
)


def simulate(
    dataset: Annotated[
        str | None,
        typer.Option(help="Bundled dataset: heart-disease, breast-cancer, digits, synthetic."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Run config TOML.")] = None,
    sites: Annotated[
        int | None, typer.Option(help="Number of sites for datasets split artificially.")
    ] = None,
    site_config: Annotated[
        list[Path] | None,
        typer.Option("--site-config", help="A site config TOML; repeat once per site."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="A folder of your own data files, one CSV or Parquet file per site (the site "
            "is named after the file). One schema is inferred over all of them (or give "
            "--schema); the site configs and schema are written into the run folder.",
            metavar="DIR",
        ),
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="With --data: the outcome column.")
    ] = None,
    positive: Annotated[
        list[str] | None,
        typer.Option(
            "--positive", help="With --data: a label value meaning positive (repeatable)."
        ),
    ] = None,
    positive_above: Annotated[
        float | None,
        typer.Option("--positive-above", help="With --data: labels above it are positive."),
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(
            "--schema", help="With --data: a reviewed schema TOML instead of inferring one."
        ),
    ] = None,
    partition: Annotated[str | None, typer.Option(help="natural, iid or dirichlet.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    epsilon: Annotated[
        float | None,
        typer.Option(
            help="Target ε of the released model, per site: the tuning trials that chose its "
            "settings, DP preprocessing and training, composed. Baselines and controls spend "
            "on their own from each site's lifetime budget; the summary lists them apart."
        ),
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
    out: Annotated[
        Path, typer.Option(file_okay=False, help="Folder that receives the run folder.")
    ] = Path("runs"),
    state_dir: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="The simulated sites' state folders (their privacy ledgers). Default: a fresh one "
            "inside the run folder, so repeated simulations do not drain a budget by accident; give "
            "the same folder to several runs to see their budgets compose.",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="The run's model: logistic, mlp or cnn.")
    ] = None,
    he_compatible: Annotated[
        bool,
        typer.Option(
            "--he-compatible",
            help="Train a model the encrypted-inference service can evaluate (logistic, or an "
            "MLP with square activations).",
        ),
    ] = False,
    no_baselines: Annotated[
        bool,
        typer.Option(
            "--no-baselines",
            help="Skip the baseline suite, the federated logistic baseline and the pooled "
            "reference (on by default).",
        ),
    ] = False,
    tune_deep: Annotated[
        bool,
        typer.Option(
            "--tune-deep",
            help="Tune the run's model with the same budget as each baseline family (one "
            "federation per configuration; DP trials are accounted in the sites' ledgers).",
        ),
    ] = False,
    tuning_budget: Annotated[
        int | None,
        typer.Option(help="Configurations per model family (default: the run config's, 20)."),
    ] = None,
    label_shuffle: Annotated[
        bool,
        typer.Option("--label-shuffle", help="Add the label-shuffle control (one federation)."),
    ] = False,
    leave_one_site_out: Annotated[
        bool,
        typer.Option(
            "--leave-one-site-out", help="Add leave-one-site-out (one federation per site)."
        ),
    ] = False,
    no_audit: Annotated[
        bool,
        typer.Option(
            "--no-audit", help="Skip the membership-inference audit at the end (on by default)."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option(help=VERBOSE_HELP)] = False,
) -> None:
    """Run a whole federation on this machine (default: four heart-disease hospitals, DP ε=1).

    Exits 0 when every site took part, 4 when the model was trained without some sites (the run
    record's left_out says why), 3 when the run stopped without a model, 1 when it failed."""
    run = load_run_config(config)
    data: dict[str, Any] = run.model_dump(mode="json")
    chose_schema = "dataset" if dataset is not None else run_names_schema(run, config)
    if data_dir is not None:
        from fedward.server.data_folder import dataset_name

        if dataset is not None or site_config:
            raise typer.BadParameter("--data cannot be combined with --dataset or --site-config")
        data["task"]["dataset"] = dataset_name(data_dir)
        data["name"] = data["name"] if "name" in run.model_fields_set else data["task"]["dataset"]
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
    if model is not None:
        data["model"]["kind"] = model
    if he_compatible:
        data["model"]["he_compatible"] = True
        # An activation the config left unset becomes square; one it chose is checked as given.
        if "activation" not in run.model.model_fields_set or model == "mlp":
            data["model"]["activation"] = "square"
    if no_baselines:
        data["baselines"]["enabled"] = False
    if tune_deep:
        data["tuning"]["deep"] = True
    if tuning_budget is not None:
        data["tuning"]["budget"] = tuning_budget
    if label_shuffle:
        data["controls"]["label_shuffle"] = True
    if leave_one_site_out:
        data["controls"]["leave_one_site_out"] = True
    if no_audit:
        data["audit"]["enabled"] = False
    if secure_aggregation:
        data["strategy"]["secure_aggregation"] = True
    if central_dp:
        data["privacy"]["central"]["enabled"] = True
    run = validate_config(RunConfig, data, config or "<command line>")

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = out / f"{stamp}-{run.name}"
    if data_dir is not None or site_config:
        # Before any engine starts: the sites' files and schemas, checked in seconds.
        from fedward.server.simulation_sites import prepare_sites

        run, site_config = prepare_sites(
            run,
            run_dir,
            console,
            data_dir=data_dir,
            site_configs=site_config or [],
            label=label,
            positive=positive or [],
            positive_above=positive_above,
            schema=schema,
            run_chose_schema=chose_schema,
        )
    # Imported here: torch, Flower and Ray take seconds to load, and other commands need none of them.
    from fedward.server.coordinator_settings import CoordinatorSettings
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
    try:
        if verbose:
            run_simulation(settings, verbose=True)
        else:
            with Live(console=console, refresh_per_second=4, transient=False) as live:
                run_simulation(settings, on_update=lambda s: live.update(progress_view(s, title)))
    except RuntimeError as exc:
        if (run_dir / "metrics.json").exists():
            raise
        # The federation ended without writing its results: no model, and nothing to tabulate.
        console.print(f"[bold red]run failed:[/] {escape(str(exc))}", soft_wrap=True)
        logs = (
            "the engine's logs above"
            if verbose
            else f"the engine's log, {run_dir / 'simulation.log'}"
        )
        console.print(escape(closing_line(run_dir, None, logs=logs)), soft_wrap=True)
        raise typer.Exit(exit_code(None)) from None
    except KeyboardInterrupt:
        # The engine (SuperLink, SuperExec, the simulation process, Ray) has been stopped by now.
        console.print(
            f"[bold yellow]interrupted:[/] the simulation was stopped; what it wrote so far is in "
            f"{escape(str(run_dir))}",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    console.print(final_table(run_dir))
    for line in left_out_lines(run_dir):
        console.print(f"[yellow]{line}[/]")
    for line in site_warning_lines(run_dir):
        console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True)
    for line in epsilon_lines(run_dir) + privacy_modes(run_dir):
        console.print(line)
    if (run_dir / "baselines.json").exists():
        report = json.loads((run_dir / "baselines.json").read_text())
        console.print(f"[bold]Baselines:[/] {report['verdict']}")
        console.print(f"  details: fedward report baselines {run_dir}")
    print_audit(run_dir)
    if (run_dir / "model_card.html").exists():
        console.print(f"[bold]Model card:[/] {run_dir / 'model_card.html'}")
    console.print(f"run folder: [bold]{run_dir}[/]")
    record = read_record(run_dir)
    console.print(escape(closing_line(run_dir, record)), soft_wrap=True)
    if (code := exit_code(record)) != 0:
        raise typer.Exit(code)


def audit(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    federation: Annotated[
        str | None,
        typer.Option(help="Deployment: the federation (SuperLink connection) to audit through."),
    ] = None,
    app_dir: Annotated[
        Path, typer.Option(help="Deployment: the fedward Flower app directory for `flwr run`.")
    ] = Path("."),
    verbose: Annotated[bool, typer.Option(help=VERBOSE_HELP)] = False,
) -> None:
    """Audit a finished run's released models at the sites again (membership inference)."""
    manifest = _read_report(run_dir, "manifest.json", "not a fedward run folder")
    run_data = _read_report(run_dir, "run_config.json", "not a fedward run folder")
    if (run_data.get("strategy") or {}).get("secure_aggregation"):
        raise typer.BadParameter(
            f"{run_dir} is a SecAgg+ run: its sites run the legacy SecAgg+ client, which does not "
            "answer audits in this version",
            param_hint="RUN_DIR",
        )
    if manifest.get("engine") == "simulation":
        from fedward.server.coordinator_settings import CoordinatorSettings
        from fedward.server.simulate import run_simulation

        sim = _read_report(run_dir, "simulation.json", "the simulation's settings were not kept")
        settings = CoordinatorSettings(
            run=RunConfig.model_validate(run_data),
            run_dir=str(run_dir),
            engine="simulation",
            sim_site_configs=list(sim["sim_site_configs"]),
            sim_state_dir=str(sim["sim_state_dir"]),
            audit_only=True,
        )
        with console.status("auditing at the simulated sites…"):
            run_simulation(settings, verbose=verbose)
    else:
        if federation is None:
            raise typer.BadParameter(
                "a deployment run is audited through its SuperLink: give --federation NAME",
                param_hint="--federation",
            )
        import subprocess
        import sys

        flwr = str(Path(sys.executable).parent / "flwr")
        cmd = [
            flwr,
            "run",
            str(app_dir),
            federation,
            "--stream",
            "--run-config",
            f"audit-run-dir='{run_dir.resolve()}'",
        ]
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            raise typer.Exit(done.returncode)
    print_audit(run_dir)


report_app = typer.Typer(help="Reports of a finished run.", no_args_is_help=True)


def _read_report(run_dir: Path, name: str, how: str) -> dict[str, Any]:
    path = run_dir / name
    if not run_dir.is_dir():
        raise typer.BadParameter(f"{run_dir} is not a run folder", param_hint="RUN_DIR")
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist: {how}", param_hint="RUN_DIR")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{path} is not valid JSON: {exc}", param_hint="RUN_DIR") from exc
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} does not hold a report object", param_hint="RUN_DIR")
    return data


@report_app.command("baselines")
def report_baselines(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the Markdown report instead of a table.")
    ] = False,
) -> None:
    """The baselines report: every model's test AUROC, the difference to the run's model, a verdict."""
    report = _read_report(
        run_dir,
        "baselines.json",
        "the run was made with baselines off (--no-baselines) or did not finish",
    )
    if markdown:
        from fedward.server.baselines_report import render_markdown

        typer.echo(render_markdown(report))
        return
    rm = report["run_model"]
    table = Table(title="Test AUROC: the run's model and its baselines", header_style="bold")
    for col in ("model", "where", "pooled AUROC [95% CI]", "Δ run − baseline [CI]", "tune", "time"):
        table.add_column(col, no_wrap=True)
    table.add_row(
        f"run model: {rm['description']}",
        "federated",
        console_auroc((rm.get("test") or {}).get("pooled")),
        "",
        "",
        f"{rm['train_seconds']:.1f} s",
        style="bold",
    )
    for sec in report["families"].values():
        seconds = sec.get("train_seconds", sec.get("fit_seconds_total"))
        table.add_row(
            sec["name"] + (" ⁺" if sec.get("memorises_rows") else ""),
            "federated" if "federated" in sec["where"] else "local",
            console_auroc(sec.get("pooled")),
            difference(sec.get("difference")),
            console_cell(sec.get("mean_tune_auroc")),
            "–" if seconds is None else f"{seconds:.1f} s",
        )
    budget = report["budget"]
    table.caption = (
        f"{budget['configurations_per_family']} configurations per family "
        f"({budget['search']}); ⁺ memorises rows, never leaves its site"
    )
    console.print(table)
    for name, control in (report.get("controls") or {}).items():
        if "reading" in control:
            console.print(f"{name.replace('_', ' ')}: {control['reading']}")
    for failure in report.get("failures") or []:
        console.print(f"[yellow]{failure}[/]")
    console.print(f"[bold]Verdict:[/] {report['verdict']}")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
    app.command("audit")(audit)
    from fedward.server.card_cli import card

    app.command("card")(card)
    from fedward.server.release_cli import release_app

    app.add_typer(release_app, name="release")
    app.add_typer(report_app, name="report")
    from fedward.server.he_cli import register_he

    register_he(app)
    from fedward.server.run_cli import coordinator_app, run

    app.command("run")(run)
    app.add_typer(coordinator_app, name="coordinator")
