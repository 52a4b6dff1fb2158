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
waits are shortened as well (:mod:`fedward.common.flower_compat`, the only module that touches
Flower's internals). Usage::

    fedward-supernode [--flower-shortcuts] [--] FLOWER_SUPERNODE_ARGS...

Restarts. A SuperNode killed without deactivating (a crash, SIGKILL, a lost host) stays *online*
at the SuperLink until its heartbeats are overdue: Flower 1.42 allows twice the 30 s heartbeat
interval. Until then the SuperLink refuses to activate the same key again (HTTP 412, code 2004,
"Failed to activate SuperNode") and Flower's SuperNode exits at once, so a container restart
policy loops for up to a minute. The launcher makes a restarted site rejoin by itself:

* with ``FEDWARD_NODE_ID_FILE`` (the site entrypoint sets it inside the site's state folder) it
  records the node id the SuperLink activated, and before the next activation it releases that
  node (Fleet ``DeactivateNode``, signed with the same key: the SuperLink accepts it only from the
  key the node id belongs to), so the restart is activated at once;
* a refused activation is retried with backoff (1 s doubling to 8 s) for
  ``FEDWARD_ACTIVATION_WAIT_S`` seconds (default 120; 0: no retries), saying why, for a restart
  with no record (first start, lost state volume) or a release that failed.

A key the SuperLink does not know gets the same refusal: after the wait the SuperNode exits with
Flower's own message, at once where the recorded node's release showed that the SuperLink no
longer ties the key to it (unregistered or replaced). One key must run in one SuperNode: a second
process started with it would release the first one's node.

This wraps one method of Flower 1.42's Fleet client (``FleetHttpClient.ActivateNode``, whose
refusal payload and Fleet ``DeactivateNode`` call are public protocol); where a Flower upgrade
removes it, the launcher warns and the SuperNode starts as Flower ships it.
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
import time
from collections.abc import Callable, Sequence
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, Literal

from fedward.common import flower_compat
from fedward.common.flower_compat import (
    CLIENTAPP_MODULES,
    deactivate_node_request,
    fleet_http_client,
    run_flower_supernode,
    run_flwr_clientapp,
)

SHORTCUTS_ENV = "FEDWARD_FLOWER_SHORTCUTS"
ACTIVATION_WAIT_ENV = "FEDWARD_ACTIVATION_WAIT_S"
NODE_ID_FILE_ENV = "FEDWARD_NODE_ID_FILE"
ACTIVATION_WAIT_DEFAULT = 120.0
ACTIVATION_BACKOFF = (1.0, 8.0)  # first wait, longest wait (seconds)
ACTIVATION_FAILED_CODE = 2004  # flwr ApiErrorCode.FLEET_NODE_ACTIVATION_FAILED (HTTP 412)
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
    *CLIENTAPP_MODULES,
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
        sys.argv = [CLIENTAPP_COMMAND, *args]
        try:
            run_flwr_clientapp()
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

    try:
        applied = flower_compat.apply()
    except flower_compat.FlowerInternalsChanged as exc:
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


def activation_wait() -> float:
    """Seconds to keep retrying a refused activation (``FEDWARD_ACTIVATION_WAIT_S``)."""
    raw = os.environ.get(ACTIVATION_WAIT_ENV, "").strip()
    if not raw:
        return ACTIVATION_WAIT_DEFAULT
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise SystemExit(
            f"fedward-supernode: {ACTIVATION_WAIT_ENV}={raw!r} is not a number of seconds"
        ) from None


def is_activation_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is the SuperLink's 412 "Failed to activate SuperNode" (code 2004)."""
    response = getattr(exc, "response", None)
    if response is None or getattr(response, "status_code", None) != 412:
        return False
    try:
        payload = json.loads(response.text)
    except (ValueError, TypeError):
        return False
    return isinstance(payload, dict) and payload.get("code") == ACTIVATION_FAILED_CODE


def retry_activation(
    activate: Callable[[Any], Any],
    request: Any,
    *,
    wait_s: float,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> Any:
    """Call ``activate(request)``, retrying the SuperLink's activation refusal until ``wait_s``.

    Why: a crashed predecessor with the same key stays online at the SuperLink until its
    heartbeats are overdue; the refusal then lifts by itself. Any other error is raised at once.
    """
    from flwr.common.logger import log

    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    deadline = clock() + wait_s
    delay, longest = ACTIVATION_BACKOFF
    while True:
        try:
            return activate(request)
        except Exception as exc:
            left = deadline - clock()
            if not is_activation_refusal(exc) or left <= 0:
                raise
            pause = min(delay, left)
            log(
                WARNING,
                "fedward-supernode: the SuperLink refused to activate this node's key (HTTP 412, "
                "code 2004). It still counts this node's previous process as online (after a "
                "crash, until its heartbeats are overdue: up to 60 s), or the key is not "
                "registered. Retrying in %.0f s (%.0f s left).",
                pause,
                left,
            )
            sleep(pause)
            delay = min(delay * 2, longest)


def read_node_id(path: Path) -> int | None:
    """The node id a previous process of this site was activated as, if it recorded one."""
    try:
        value = int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return value if value > 0 else None


def write_node_id(path: Path, node_id: int) -> None:
    """Record the activated node id atomically; a site whose state cannot be written still runs."""
    from flwr.common.logger import log

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(f"{node_id}\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log(WARNING, "fedward-supernode: cannot record the node id in %s: %s", path, exc)


Release = Literal["released", "not-online", "not-this-key", "unknown"]


def release_stale_node(deactivate: Callable[[Any], Any], path: Path) -> Release | None:
    """Deactivate the node a crashed predecessor left online; None when nothing was recorded.

    Why: the SuperLink refuses to activate a key whose node it still counts as online. A node
    already offline (a clean stop) is refused with 412: expected. A 401 means the SuperLink no
    longer ties this key to that node (unregistered, or the key replaced): ``"not-this-key"``.
    """
    from flwr.common.logger import log

    stale = read_node_id(path)
    if stale is None:
        return None
    try:
        deactivate(deactivate_node_request(stale))
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            log(
                WARNING,
                "fedward-supernode: the SuperLink no longer ties this node's key to node %d, "
                "the node it was last activated as: the key was unregistered or replaced",
                stale,
            )
            return "not-this-key"
        log(INFO, "fedward-supernode: node %d was not left online (%s)", stale, type(exc).__name__)
        return "not-online" if status == 412 else "unknown"
    log(INFO, "fedward-supernode: released node %d, left online by a previous process", stale)
    return "released"


def install_activation_retry(wait_s: float, node_id_file: Path | None = None) -> bool:
    """Make Flower's Fleet client release a stale node and retry a refused activation.

    False where this Flower has no ``FleetHttpClient.ActivateNode`` to wrap.
    """
    FleetHttpClient = fleet_http_client()
    if FleetHttpClient is None:
        return False
    original = getattr(FleetHttpClient, "ActivateNode", None)
    if original is None or getattr(original, "_fedward_retry", False):
        return original is not None

    def activate_node(self: Any, request: Any) -> Any:
        released = (
            None if node_id_file is None else release_stale_node(self.DeactivateNode, node_id_file)
        )
        # After "not-this-key" a refusal means an unregistered key: waiting will not help.
        wait = 0.0 if released == "not-this-key" else wait_s
        response = retry_activation(lambda r: original(self, r), request, wait_s=wait)
        if node_id_file is not None:
            write_node_id(node_id_file, int(response.node_id))
        return response

    activate_node._fedward_retry = True  # type: ignore[attr-defined]
    # The class is looked up at run time (typed only as ``type``); ActivateNode was found above.
    FleetHttpClient.ActivateNode = activate_node  # type: ignore[attr-defined]
    return True


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
    wait_s = activation_wait()
    node_id_file = os.environ.get(NODE_ID_FILE_ENV, "").strip()
    if (wait_s > 0 or node_id_file) and not install_activation_retry(
        wait_s, Path(node_id_file) if node_id_file else None
    ):
        from flwr.common.logger import log

        log(WARNING, "fedward-supernode: this Flower has no Fleet ActivateNode to retry")
    if shortcuts:
        # Before the zygote forks: a ClientApp waits on the object-pull backoff too.
        _apply_shortcuts()
    workdir = Path(tempfile.mkdtemp(prefix="fedward-supernode-"))  # private: mode 0700
    zygote = start_zygote(workdir, real_clientapp())
    os.environ["PATH"] = f"{workdir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault(TASK_POLL_ENV, TASK_POLL_DEFAULT)
    try:
        sys.argv = ["flower-supernode", *supernode_args]
        run_flower_supernode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(zygote, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(zygote, 0)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
