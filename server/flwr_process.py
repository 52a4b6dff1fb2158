"""`flwr run` as a child process of `fedward run`: finding the executable, reading the run id
and Flower's error out of its output, and finding the run folder the ServerApp makes for the run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedward.common.errors import FedwardError

FLWR_LOG_LINES = 400
_STARTED_RUN = re.compile(r"Successfully started run (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class FlwrNotFound(FedwardError):
    """No `flwr` executable next to this Python or on PATH."""


class RunFollowError(FedwardError):
    """The run was started but its run folder cannot be followed."""


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

    def __init__(
        self,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        echo: Callable[[str], object] | None = None,
    ) -> None:
        """``echo`` gets every line as it arrives (`fedward simulate` keeps them in its log)."""
        self.cmd = cmd
        self.echo = echo
        self.lines: deque[str] = deque(maxlen=FLWR_LOG_LINES)
        self.run_id: str | None = None
        self.started = threading.Event()
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Unbuffered: the run id line must arrive now, not when Flower's buffer fills.
            env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.echo is not None:
                self.echo(line)
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
