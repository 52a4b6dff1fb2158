"""Serving a Prometheus registry over HTTP until the process is told to stop.

The site's gauges (`fedward site metrics`) and the coordinator's (`fedward coordinator metrics`)
are long-running processes that must stop cleanly on SIGTERM, the signal a container runtime sends,
and close their socket so a restart can bind the port again at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry


def serve_registry(
    registry: CollectorRegistry,
    host: str,
    port: int,
    *,
    cannot_bind: Callable[[OSError], Exception],
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve ``http://HOST:PORT/metrics`` until SIGTERM or SIGINT (or ``stop`` is set), then close.

    Signal handlers are installed only from the main thread; from any other, set ``stop``.
    ``cannot_bind`` turns a failure to bind into the caller's own error, naming what it serves.
    """
    stop = stop or threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            httpd, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise cannot_bind(exc) from exc
        try:
            bound_port = int(httpd.server_address[1])
            if on_ready is not None:
                on_ready(f"http://{host}:{bound_port}/metrics")
            while not stop.wait(0.5):
                pass
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
