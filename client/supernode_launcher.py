"""``fedward-supernode``: Flower's SuperNode whose ClientApps start in milliseconds.

For every message, Flower's SuperExec starts a new ``flwr-clientapp`` process, which imports
torch, Opacus and fedward again: about 6–7 s and 7 CPU-seconds each, most of a round's time on a
small machine. The launcher keeps Flower's process model (one ClientApp process per message, no
state kept between messages, the same ``flwr-clientapp`` entry point and arguments) and only makes
the start cheap:

* a *zygote* process imports torch, Opacus, Flower's ClientApp runtime and fedward's ClientApp
  once, then waits on a private Unix socket;
* a small ``flwr-clientapp`` stand-in is put first on the PATH the SuperNode and its SuperExec
  see (SuperExec runs the command by name). It hands its arguments and standard streams to the
  zygote, which forks a child that runs Flower's own ``flwr-clientapp`` entry point; the stand-in
  exits with the child's status. If the zygote is gone, the stand-in runs the real
  ``flwr-clientapp`` instead, so the site degrades to stock behaviour, never to a failure;
* SuperExec's documented ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` is set to 0.5 s unless the
  operator set it.

Every forked child draws fresh random state (Python, NumPy and torch's default generator), as a
new process would: DP noise must never repeat between messages.

With ``--flower-shortcuts`` (or ``FEDWARD_FLOWER_SHORTCUTS=1``) the SuperNode's fixed internal
waits are shortened as well (:mod:`fedward.common.flower_internals`, the only module that touches
Flower's internals). Usage::

    fedward-supernode [--flower-shortcuts] [--] FLOWER_SUPERNODE_ARGS...
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
from collections.abc import Sequence
from logging import INFO, WARNING
from pathlib import Path

SHORTCUTS_ENV = "FEDWARD_FLOWER_SHORTCUTS"
TASK_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
TASK_POLL_DEFAULT = "0.5"
CLIENTAPP_COMMAND = "flwr-clientapp"
# Imported once in the zygote: what every ClientApp process would otherwise import again.
PRELOAD = (
    "numpy",
    "torch",
    "opacus",
    "sklearn.linear_model",
    "sklearn.metrics",
    "flwr.supernode.cli.flwr_clientapp",
    "flwr.supernode.runtime.run_clientapp",
    "fedward.client.app",
    "fedward.client.training",
)
_HEADER = struct.Struct("!I")

STAND_IN = """#!{python} -IS
# fedward-supernode's flwr-clientapp: asks the zygote to fork a ClientApp, else runs Flower's own.
import json, os, socket, struct, sys
args = sys.argv[1:]
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect({socket_path!r})
except OSError:
    os.execv({real!r}, [{real!r}] + args)
payload = json.dumps(args).encode()
socket.send_fds(s, [struct.pack("!I", len(payload)) + payload], [0, 1, 2])
status = b""
while True:
    chunk = s.recv(16)
    if not chunk:
        break
    status += chunk
if not status:
    sys.stderr.write("flwr-clientapp: the fedward zygote's child ended without a status\\n")
    sys.exit(1)
sys.exit(int(status))
"""


def _reseed() -> None:
    """Fresh entropy for the child, exactly as a newly started process would have."""
    import random

    import numpy as np
    import torch

    random.seed()
    np.random.seed()
    torch.seed()


def _receive_request(conn: socket.socket) -> tuple[list[str], list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < _HEADER.size:
        raise ValueError("truncated request")
    (size,) = _HEADER.unpack_from(data)
    payload = data[_HEADER.size :]
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            raise ValueError("truncated request")
        payload += chunk
    args = json.loads(payload)
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError("the request is not a list of arguments")
    return args, list(fds)


def _run_child(conn: socket.socket, args: list[str], fds: list[int]) -> None:
    """In the forked child: become ``flwr-clientapp ARGS`` with the stand-in's streams."""
    code = 1
    try:
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        _reseed()
        from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

        sys.argv = [CLIENTAPP_COMMAND, *args]
        try:
            flwr_clientapp()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # the child must report, whatever happened
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(str(code).encode())
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve_zygote(listener: socket.socket, parent_pid: int) -> None:
    """Preload, then fork one child per request until the launcher goes away."""
    for name in PRELOAD:
        importlib.import_module(name)
    listener.settimeout(1.0)
    while os.getppid() == parent_pid:
        _reap()
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        with conn:
            conn.settimeout(10.0)
            try:
                args, fds = _receive_request(conn)
            except (OSError, ValueError) as exc:
                print(f"fedward-supernode: refused a request: {exc}", file=sys.stderr)
                continue
            conn.settimeout(None)
            pid = os.fork()
            if pid == 0:
                listener.close()
                _run_child(conn, args, fds)
            for fd in fds:
                os.close(fd)


def write_stand_in(folder: Path, socket_path: Path, real: str) -> Path:
    path = folder / CLIENTAPP_COMMAND
    path.write_text(
        STAND_IN.format(python=sys.executable, socket_path=str(socket_path), real=real),
        encoding="utf-8",
    )
    path.chmod(0o700)
    return path


def _split_args(argv: Sequence[str]) -> tuple[bool, list[str]]:
    shortcuts = os.environ.get(SHORTCUTS_ENV, "").strip().lower() in ("1", "true", "yes")
    rest = list(argv)
    while rest and rest[0] in ("--flower-shortcuts", "--no-flower-shortcuts", "--"):
        flag = rest.pop(0)
        if flag == "--":
            break
        shortcuts = flag == "--flower-shortcuts"
    return shortcuts, rest


def _apply_shortcuts() -> None:
    from flwr.common.logger import log

    from fedward.common import flower_internals

    try:
        applied = flower_internals.apply()
    except flower_internals.FlowerInternalsChanged as exc:
        log(WARNING, "fedward-supernode: running without the Flower shortcuts: %s", exc)
        return
    log(
        INFO,
        "fedward-supernode: Flower shortcuts on (idle poll %.2f s, reply wait %.2f s, "
        "object pull backoff %.2f s)",
        applied.idle_poll,
        applied.reply_wait,
        applied.pull_backoff,
    )


def start_zygote(workdir: Path, real: str) -> int:
    """Fork the zygote, listening in ``workdir``, and write the stand-in there; returns its pid.

    Call it before any thread starts: the zygote forks ClientApps from a single-threaded state.
    """
    socket_path = workdir / "zygote.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(64)
    write_stand_in(workdir, socket_path, real)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            serve_zygote(listener, parent)
        except BaseException:  # report; never run the parent's code
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    listener.close()
    return pid


def real_clientapp() -> str:
    return shutil.which(CLIENTAPP_COMMAND) or str(Path(sys.executable).parent / CLIENTAPP_COMMAND)


def main(argv: Sequence[str] | None = None) -> None:
    shortcuts, supernode_args = _split_args(sys.argv[1:] if argv is None else argv)
    if shortcuts:
        # Before the zygote forks: a ClientApp waits on the object-pull backoff too.
        _apply_shortcuts()
    workdir = Path(tempfile.mkdtemp(prefix="fedward-supernode-"))  # private: mode 0700
    zygote = start_zygote(workdir, real_clientapp())
    os.environ["PATH"] = f"{workdir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault(TASK_POLL_ENV, TASK_POLL_DEFAULT)
    try:
        from flwr.supernode.cli import flower_supernode

        sys.argv = ["flower-supernode", *supernode_args]
        flower_supernode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(zygote, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(zygote, 0)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
