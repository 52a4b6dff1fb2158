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
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape

from fedward.common.cli import err_console
from fedward.common.errors import FedwardError
from fedward.server.cli import console
from fedward.server.exit_codes import (
    EXIT_FAILED,
    EXIT_FINISHED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    closing_line,
    exit_code,
    read_record,
)
from fedward.server.site_registry_cli import sites_app

DEFAULT_RUNS_DIR = Path("runs")
FLWR_LOG_LINES = 400
_STARTED_RUN = re.compile(r"Successfully started run (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Run-config keys `fedward run` handles itself, or refuses because it cannot follow them.
_OUTPUT_DIR, _RUN_CONFIG_FILE, _AUDIT_RUN_DIR = "output-dir", "run-config", "audit-run-dir"
_RUN_DIR, _RESUME = "run-dir", "resume"  # set by --resume only


class FlwrNotFound(FedwardError):
    """No `flwr` executable next to this Python or on PATH."""


class RunFollowError(FedwardError):
    """The run was started but its run folder cannot be followed."""


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


# ---- launching a run --------------------------------------------------------------------------


def find_flwr(bin_dir: Path | None = None, path: str | None = None) -> str:
    """The `flwr` of this environment (beside its Python), else the first on ``PATH``."""
    here = (bin_dir or Path(sys.executable).parent) / "flwr"
    if here.is_file():
        return str(here)
    found = shutil.which("flwr", path=path)
    if found is None:
        raise FlwrNotFound(
            f"`flwr` was found neither beside {sys.executable} nor on PATH; install Flower in "
            "this environment (pip install 'flwr[simulation]>=1.41,<1.43') or put `flwr` on PATH"
        )
    return found


def app_config_keys(app_dir: Path) -> dict[str, Any]:
    """The app's run-config keys and defaults (``[tool.flwr.app.config]`` of its pyproject.toml)."""
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise typer.BadParameter(
            f"{app_dir} is not a Flower app: it has no pyproject.toml", param_hint="APP_DIR"
        )
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(
            f"{pyproject} cannot be read: {exc}", param_hint="APP_DIR"
        ) from exc
    config = data.get("tool", {}).get("flwr", {}).get("app", {}).get("config")
    if not isinstance(config, dict):
        raise typer.BadParameter(
            f"{pyproject} has no [tool.flwr.app.config] table: not a Flower app",
            param_hint="APP_DIR",
        )
    return config


def resolve_run_config(
    overrides: list[str] | None, runs_dir: Path | None, known: dict[str, Any]
) -> tuple[dict[str, Any], Path]:
    """Parse ``--run-config`` as Flower does, check the keys, and make paths absolute.

    ``output-dir`` and ``run-config`` are paths on the SuperLink's machine, resolved against the
    ServerApp's working folder there; `fedward run` follows the folder here, so it passes them
    absolute (resolved against this shell's folder). Returns the overrides and the runs folder.
    """
    import click
    from flwr.common.config import parse_config_args

    try:
        parsed: dict[str, Any] = dict(parse_config_args(overrides))
    except (click.ClickException, ValueError, OSError) as exc:
        text = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        raise typer.BadParameter(text, param_hint="--run-config") from exc
    unknown = sorted(set(parsed) - set(known))
    if unknown:
        raise typer.BadParameter(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the app's "
            f"keys ([tool.flwr.app.config]) are: {', '.join(sorted(known))}. Other settings go "
            "in a run config TOML named by run-config='/path/run.toml'",
            param_hint="--run-config",
        )
    parsed = {key: as_declared(key, value, known[key]) for key, value in parsed.items()}
    if str(parsed.get(_AUDIT_RUN_DIR, "") or ""):
        raise typer.BadParameter(
            "audit-run-dir audits a finished run instead of training one: use "
            "`fedward audit RUN_DIR --federation NAME`",
            param_hint="--run-config",
        )
    if str(parsed.get(_RUN_DIR, "") or "") or parsed.get(_RESUME) is True:
        raise typer.BadParameter(
            "run-dir and resume continue a run that was interrupted: use "
            "`fedward run APP_DIR FEDERATION --resume RUN_DIR`",
            param_hint="--run-config",
        )
    given = str(parsed.get(_OUTPUT_DIR, "") or "")
    if runs_dir is not None and given and Path(given).resolve() != runs_dir.resolve():
        raise typer.BadParameter(
            f"--runs-dir {runs_dir} and output-dir='{given}' name different folders; give one",
            param_hint="--runs-dir",
        )
    out = (runs_dir or Path(given or DEFAULT_RUNS_DIR)).resolve()
    parsed[_OUTPUT_DIR] = str(out)
    run_config_file = str(parsed.get(_RUN_CONFIG_FILE, "") or "")
    if run_config_file:
        path = Path(run_config_file).expanduser()
        if not path.is_absolute() and path.exists():
            parsed[_RUN_CONFIG_FILE] = str(path.resolve())
    return parsed, out


def resume_run_config(
    run_dir: Path, overrides: list[str] | None, runs_dir: Path | None, known: dict[str, Any]
) -> tuple[dict[str, Any], Path]:
    """The run-config values to resume ``run_dir`` with: those it was launched with
    (``launch.json``), then ``overrides``, then ``run-dir`` and ``resume``. Checked here before
    anything starts (the ServerApp checks again): a run folder with a checkpoint, a run that has
    not finished, the same config hash, no coordinator still holding the folder. A refusal is a
    usage error (exit 2); what is resumed is printed."""
    from fedward.server.app import settings_from_run_config
    from fedward.server.resume import ResumeError, RunLock, launch_values, resume_point

    launch = {k: v for k, v in launch_values(run_dir).items() if k in known}
    given = [format_run_config(launch)] if launch else []
    values, out = resolve_run_config([*given, *(overrides or [])], runs_dir, known)
    try:
        point = resume_point(run_dir, settings_from_run_config(values).run)
        RunLock(run_dir).acquire().release()
    except (ResumeError, FedwardError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--resume") from exc
    values[_RUN_DIR] = str(run_dir)
    values[_RESUME] = True
    console.print(f"resuming {escape(point.describe(_planned_rounds(point)))}", soft_wrap=True)
    return values, out


def _planned_rounds(point: Any) -> int:
    from fedward.common.config import RunConfig

    return RunConfig.from_json(point.checkpoint.run).rounds


def as_declared(key: str, value: Any, default: Any) -> Any:
    """``value`` in the type the app declares for ``key``: Flower passes overrides as parsed, so
    ``dp=false`` would reach the ServerApp as a bool where it reads the string "false"."""
    if isinstance(default, str):
        return ("true" if value else "false") if isinstance(value, bool) else str(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise typer.BadParameter(
                f"{key}={value!r}: the app declares {key} as true or false",
                param_hint="--run-config",
            )
        return value
    if isinstance(default, int | float):
        whole = isinstance(default, int)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (whole and not isinstance(value, int))
        ):
            raise typer.BadParameter(
                f"{key}={value!r}: the app declares {key} as "
                f"{'a whole number' if whole else 'a number'} (default {default})",
                param_hint="--run-config",
            )
        return value if whole else float(value)
    return value


def format_run_config(values: dict[str, Any]) -> str:
    """One ``--run-config`` string, ``k=v ...``, that Flower's parser reads back to ``values``."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            s = str(value)
            if "'" in s and '"' in s:
                raise typer.BadParameter(
                    f"{key}: a value cannot hold both quote characters for `flwr run`",
                    param_hint="--run-config",
                )
            # A TOML literal string ('...') keeps backslashes as written; else a basic string.
            text = f"'{s}'" if "'" not in s else json.dumps(s)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def flwr_message(lines: list[str]) -> str:
    """Flower's error, out of the box it draws around it (or its last lines when there is none)."""
    clean = [_ANSI.sub("", line).rstrip() for line in lines]
    boxed = [line.strip().strip("│").strip() for line in clean if line.strip().startswith("│")]
    if boxed:
        return " ".join(part for part in boxed if part)
    return "\n".join(line for line in clean if line.strip())[-3000:]


class FlwrRun:
    """`flwr run` as a child process whose output is kept (its last lines) and searched for the
    run id, so the live view owns the terminal while Flower streams the ServerApp's log."""

    def __init__(self, cmd: list[str]) -> None:
        self.cmd = cmd
        self.lines: deque[str] = deque(maxlen=FLWR_LOG_LINES)
        self.run_id: str | None = None
        self.started = threading.Event()
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Unbuffered: the run id line must arrive now, not when Flower's buffer fills.
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.run_id is None and (m := _STARTED_RUN.search(_ANSI.sub("", line))):
                self.run_id = m.group(1)
                self.started.set()
        self.started.set()  # the process ended: whoever waits for the run id stops waiting

    def wait_started(self) -> str | None:
        self.started.wait()
        return self.run_id

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self) -> int:
        code = self.proc.wait()
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        """Stop following (the run goes on at the SuperLink)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Flower ends its log stream on SIGINT
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)

    def tail(self, n: int = 40) -> str:
        return "".join(list(self.lines)[-n:]).rstrip()


def _folder_run_id(folder: Path) -> str | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(manifest.get("run_id")) if isinstance(manifest, dict) else None


def existing_folders(out: Path) -> set[str]:
    try:
        return {p.name for p in out.iterdir() if p.is_dir()}
    except OSError:
        return set()


def find_run_folder(
    out: Path,
    before: set[str],
    run_id: str,
    *,
    timeout: float,
    running: Any,
    poll_s: float = 0.2,
) -> Path:
    """The run folder the ServerApp makes for ``run_id`` under ``out``: a new folder named
    ``<stamp>-<name>-<run id>`` (or whose manifest names the run id). ``running()`` says whether
    `flwr run` is still attached; once it is not, one last look decides."""
    from fedward.server.coordinator_metrics import is_run_folder

    deadline = time.monotonic() + timeout
    while True:
        alive = bool(running())
        for name in sorted(existing_folders(out) - before):
            folder = out / name
            if not is_run_folder(folder):
                continue
            if name.endswith(f"-{run_id}") or _folder_run_id(folder) == run_id:
                return folder
        if not alive:
            raise RunFollowError(
                f"run {run_id} ended without a run folder under {out}: the ServerApp failed "
                "before writing one, or it writes on another machine"
            )
        if time.monotonic() > deadline:
            raise RunFollowError(
                f"no run folder for run {run_id} appeared under {out} within {timeout:g} s. The "
                "ServerApp writes its run folders on the SuperLink's machine, under its "
                "output-dir: run `fedward run` there or give --runs-dir a folder both machines "
                "share (or wait longer with --folder-timeout)"
            )
        time.sleep(poll_s)


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
    from fedward.server.cli import _progress_view
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
                live.update(_progress_view(state, title))

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
    from fedward.server.cli import _final_table, _left_out, _print_audit
    from fedward.server.coordinator_metrics import read_run_progress

    progress = read_run_progress(folder)
    record = read_record(folder)
    if progress.state == "finished":
        if (folder / "metrics.json").is_file() and record is not None:
            console.print(_final_table(folder))
            for line in _left_out(folder):
                console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True)
        if (folder / "baselines.json").is_file():
            report = json.loads((folder / "baselines.json").read_text(encoding="utf-8"))
            console.print(f"[bold]Baselines:[/] {escape(str(report.get('verdict')))}")
        _print_audit(folder)
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
            for line in _left_out(folder):
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
