"""The coordinator's operating commands: `fedward run` launches a run on a SuperLink and follows it
in its run folder; `fedward coordinator metrics` serves every run folder to Prometheus.

`fedward run` is `flwr run APP_DIR FEDERATION` (Flower builds the app package, ships it and starts
the ServerApp) plus what a coordinator operator wants on top: the run-config keys checked against
the app's ``[tool.flwr.app.config]`` before anything starts, and typed as the app declares them
(Flower would hand ``dp=false`` to the ServerApp as a bool, which it reads as "not given"); the run
folder found by the run id Flower prints; the live view of `fedward simulate`, fed by its tailer of
``progress.jsonl``; and an exit status that is the run's (``fedward.server.exit_codes``): 0
finished with every site, 4 finished with a model but sites left out, 3 stopped without a model
(too few sites), 1 failed or could not be started or followed, 2 a usage error (bad option, flwr
not installed), 130 detached by Ctrl-C or SIGTERM (the run goes on at the SuperLink).

The ServerApp writes its run folders on the SuperLink's machine, under its ``output-dir``, so
following works where that folder is readable: on the SuperLink's machine or a shared disk.

The run-config checks live in ``run_config_args``, the `flwr run` child process in
``flwr_process`` and the views it prints in ``run_console``.
"""

from __future__ import annotations

import json
import shlex
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape

from fedward.common.cli import err_console
from fedward.server.exit_codes import (
    EXIT_FAILED,
    EXIT_FINISHED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    closing_line,
    exit_code,
    read_record,
)
from fedward.server.flwr_process import (
    FlwrNotFound,
    FlwrRun,
    RunFollowError,
    existing_folders,
    find_flwr,
    find_run_folder,
    flwr_message,
)
from fedward.server.run_config_args import (
    app_config_keys,
    format_run_config,
    resolve_run_config,
    resume_run_config,
)
from fedward.server.run_console import (
    console,
    final_table,
    left_out_lines,
    print_audit,
    progress_view,
)
from fedward.server.site_registry_cli import sites_app

# ---- the coordinator metrics endpoint ---------------------------------------------------------

coordinator_app = typer.Typer(
    help="Coordinator operations: Prometheus metrics of the run folders, the registered sites.",
    no_args_is_help=True,
)
coordinator_app.add_typer(sites_app, name="sites")


@coordinator_app.command("metrics")
def coordinator_metrics(
    runs: Annotated[
        Path,
        typer.Option(
            "--runs",
            help="The ServerApp's output-dir: one sub-folder per run (it may not exist yet).",
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port; 0 picks a free one.")
    ] = 9400,
) -> None:
    """Serve the runs' progress, per-site status and ε, AUROC and audit AUCs to Prometheus at
    /metrics until SIGTERM or Ctrl-C, read from the run folders at every scrape."""
    from fedward.server.coordinator_metrics import describe_runs_dir, serve_metrics

    if runs.exists() and not runs.is_dir():
        raise typer.BadParameter(f"{runs} is a file, not a folder of runs", param_hint="--runs")
    where = describe_runs_dir(runs)

    def ready(url: str) -> None:
        console.print(
            f"serving coordinator metrics at {url} ({escape(where)}); stop with Ctrl-C or SIGTERM",
            soft_wrap=True,
        )

    serve_metrics(runs, host, port, on_ready=ready)
    console.print("metrics server stopped")


def run(
    app_dir: Annotated[
        Path,
        typer.Argument(help="The fedward Flower app (the folder with its pyproject.toml)."),
    ],
    federation: Annotated[
        str,
        typer.Argument(help="The SuperLink connection, as named in $FLWR_HOME/config.toml."),
    ],
    run_config: Annotated[
        list[str] | None,
        typer.Option(
            "--run-config",
            "-c",
            help='Overrides of the app\'s config, "key=value ..." as for `flwr run` (keys: '
            "run-config, output-dir, rounds, seed, dp, target-epsilon, run-name).",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow",
            help="Follow the run in its run folder until it ends (default), or only start it.",
        ),
    ] = True,
    runs_dir: Annotated[
        Path | None,
        typer.Option(
            "--runs-dir",
            help="Where the ServerApp writes run folders (its output-dir, passed absolute); "
            "default: output-dir from --run-config, else ./runs.",
        ),
    ] = None,
    folder_timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait for the run folder to appear.", min=1.0),
    ] = 120.0,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the run in this run folder from its last checkpoint, with the same "
            "run id and the run-config values it was launched with (a new Flower run).",
        ),
    ] = None,
) -> None:
    """Start a run on a SuperLink with `flwr run` and follow it: round, sites, ε, tune AUROC.
    Exits 0 when every site took part, 4 when the model was trained without some sites (the run
    record's left_out says why), 3 when the run stopped without a model (too few sites), 1 when
    it failed; with --no-follow, 0 once the run has started."""
    app_dir = app_dir.expanduser().resolve()
    known = app_config_keys(app_dir)
    folder: Path | None = None
    if resume is None:
        values, out = resolve_run_config(run_config, runs_dir, known)
    else:
        folder = resume.expanduser().resolve()
        values, out = resume_run_config(folder, run_config, runs_dir, known)
    try:
        flwr = find_flwr()
    except FlwrNotFound as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    cmd = [flwr, "run", str(app_dir), federation, "--run-config", format_run_config(values)]
    if follow:
        cmd.append("--stream")
    before = existing_folders(out)
    launched = FlwrRun(cmd)
    # SIGTERM detaches like Ctrl-C: `flwr run` is stopped, the run goes on at the SuperLink.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = _start_and_follow(
            launched,
            federation,
            out,
            before,
            follow,
            folder_timeout,
            folder=folder,
            app_dir=app_dir,
        )
    except KeyboardInterrupt:
        launched.stop()
        run_id = launched.run_id
        if run_id is None:
            err_console.print("stopped before the SuperLink answered", soft_wrap=True)
        else:
            err_console.print(
                f"stopped following; run {run_id} goes on at the SuperLink (stop it with "
                f"`flwr stop {run_id} {escape(federation)}`)",
                soft_wrap=True,
            )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(code)


def _start_and_follow(
    launched: FlwrRun,
    federation: str,
    out: Path,
    before: set[str],
    follow: bool,
    folder_timeout: float,
    *,
    folder: Path | None = None,
    app_dir: Path | None = None,
) -> int:
    """From `flwr run`'s answer to the run's end; returns the exit status. ``folder``: the run
    folder a resumed run continues in (else the new one is looked for under ``out``); ``app_dir``
    goes into the resume hint."""
    run_id = launched.wait_started()
    if run_id is None:
        code = launched.wait()
        err_console.print(
            f"[bold red]error:[/] `flwr run` could not start the run on '{escape(federation)}' "
            f"(exit {code}): {escape(flwr_message(list(launched.lines)))}",
            soft_wrap=True,
        )
        return code or EXIT_FAILED
    console.print(f"started run {run_id} on '{escape(federation)}'", soft_wrap=True)
    if not follow:
        launched.wait()
        console.print(
            f"its run folder appears under {escape(str(out))} on the SuperLink's machine; "
            f"stop it with `flwr stop {run_id} {escape(federation)}`",
            soft_wrap=True,
        )
        return EXIT_FINISHED
    try:
        if folder is None:
            folder = find_run_folder(
                out, before, run_id, timeout=folder_timeout, running=lambda: launched.poll() is None
            )
    except RunFollowError as exc:
        alive = launched.poll() is None
        launched.stop()
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        if alive:
            err_console.print(
                f"run {run_id} goes on at the SuperLink; stop it with "
                f"`flwr stop {run_id} {escape(federation)}`",
                soft_wrap=True,
            )
        elif launched.tail():
            err_console.print(f"flwr's last lines:\n{escape(launched.tail())}", soft_wrap=True)
        return EXIT_FAILED
    console.print(f"following {escape(str(folder))}", soft_wrap=True)
    try:
        _follow(folder, launched, f"fedward run · {federation} · run {run_id}")
    except KeyboardInterrupt:
        console.print(f"run folder: [bold]{escape(str(folder))}[/]", soft_wrap=True)
        raise
    return _report(folder, launched, resume=(app_dir, federation) if app_dir else None)


def resume_hint(folder: Path, app_dir: Path | str, federation: str) -> str:
    """What to do when a run ended unfinished, most often because its coordinator (SuperLink or
    ServerApp) died or was stopped: resume from the last checkpoint, never start it again (a new
    run would spend the sites' ε a second time)."""
    checkpoints = sorted((folder / "checkpoints").glob("state-*.pt"))
    if not checkpoints:
        return (
            "the run has no checkpoint yet (one is written after each round): start it again "
            "with `fedward run`"
        )
    return (
        "if the coordinator (SuperLink or ServerApp) died or was stopped, continue from its last "
        f"checkpoint ({checkpoints[-1].name}), same run id, ε already spent counted once: "
        f"`fedward run {shlex.quote(str(app_dir))} {shlex.quote(federation)} --resume "
        f"{shlex.quote(str(folder))}`"
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _follow(folder: Path, launched: FlwrRun, title: str) -> None:
    """The live view of `fedward simulate`, fed by the same tailer, until `flwr run` detaches
    (with ``--stream`` Flower detaches when the run has ended)."""
    # Imported here: the tailer's module loads Flower and torch, which take seconds.
    from fedward.server.simulate import ProgressState, follow_progress

    stop = threading.Event()
    problems: list[str] = []

    def watch(update: Any) -> None:
        try:
            follow_progress(folder, update, stop)
        except (ValueError, KeyError, TypeError) as exc:  # a torn line ends the live view only
            problems.append(f"live view stopped at a bad line of progress.jsonl: {exc}")

    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:

            def update(state: ProgressState) -> None:
                live.update(progress_view(state, title))

            watcher = threading.Thread(target=watch, args=(update,), daemon=True)
            watcher.start()
            try:
                launched.wait()
            finally:
                stop.set()
                watcher.join(timeout=5)
    finally:
        if not console.is_terminal:
            console.line()  # Live ends its last frame with a newline only on a terminal
    for line in problems:
        console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True)


def _report(folder: Path, launched: FlwrRun, *, resume: tuple[Path, str] | None = None) -> int:
    """Print the run's outcome (as `fedward simulate` does) and return its exit status.
    ``resume`` (app folder, federation): for the hint to resume a run that ended unfinished."""
    from fedward.server.coordinator_metrics import read_run_progress

    progress = read_run_progress(folder)
    record = read_record(folder)
    if progress.state == "finished":
        if (folder / "metrics.json").is_file() and record is not None:
            console.print(final_table(folder))
            for line in left_out_lines(folder):
                console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True)
        if (folder / "baselines.json").is_file():
            report = json.loads((folder / "baselines.json").read_text(encoding="utf-8"))
            console.print(f"[bold]Baselines:[/] {escape(str(report.get('verdict')))}")
        print_audit(folder)
        if (folder / "model_card.html").is_file():
            console.print(f"[bold]Model card:[/] {folder / 'model_card.html'}", soft_wrap=True)
    elif progress.state == "stopped":
        console.print(
            f"[bold yellow]run stopped:[/] {escape(progress.stop_reason or 'no reason given')}",
            soft_wrap=True,
        )
        if record is None or record.get("status") != "stopped":
            record = {"status": "stopped", "stopped_reason": progress.stop_reason}
        else:
            for line in left_out_lines(folder):
                console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True)
    else:
        err_console.print(
            "[bold red]run failed:[/] the ServerApp ended without finishing the run",
            soft_wrap=True,
        )
        if launched.tail():
            err_console.print(f"its last log lines:\n{escape(launched.tail())}", soft_wrap=True)
        if resume is not None:
            err_console.print(
                f"[bold]to resume:[/] {escape(resume_hint(folder, *resume))}", soft_wrap=True
            )
        record = None
    console.print(f"run folder: [bold]{escape(str(folder))}[/]", soft_wrap=True)
    logs = "the ServerApp's log at the SuperLink (its last lines are above)"
    console.print(escape(closing_line(folder, record, logs=logs)), soft_wrap=True)
    return exit_code(record)
