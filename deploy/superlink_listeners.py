"""Start Flower's SuperLink with its APIs split over two listeners.

Flower 1.42 serves the Fleet API (SuperNodes), the Control API (`flwr`: register, list, unregister,
run, stop) and the Runtime API (the ServerApp) on one HTTP listener, under one TLS certificate, and
its open-source build authenticates no Control API caller. Whoever reaches the port the sites use
could therefore register their own SuperNode. This launcher serves the same Flower application on

* the **Fleet listener** (``--fleet-host``/``--fleet-port``, the published port): only ``/v1/fleet/``
  requests, under the certificate the sites' CA signed; everything else is answered 404;
* the **Control listener** (Flower's own ``--host``/``--port``, loopback by default): every API,
  under a certificate from a separate CA that the sites never receive. The ServerApp's SuperExec
  reaches the Runtime API here too.

All other arguments go to ``flower-superlink`` unchanged. Run it as
``python deploy/superlink_listeners.py --fleet-port 8000 [--fleet-ssl-certfile F --fleet-ssl-keyfile K]
-- FLOWER-SUPERLINK-ARGS``. It uses Flower's own start-up code (pinned to flwr 1.42), so the state,
node authentication and SuperExec behave as with ``flower-superlink``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FLEET_PREFIX = "/v1/fleet/"


class FleetOnly:
    """An ASGI wrapper that lets through the Fleet API's paths only: on the published port the
    Control and Runtime APIs must not exist at all, not merely refuse."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(FLEET_PREFIX):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        body = b'{"detail":"not served on this listener"}'
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to this launcher, which stops both listeners."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _own_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="superlink_listeners.py",
        description="Flower's SuperLink with the Fleet API alone on the published listener.",
    )
    parser.add_argument("--fleet-host", default="0.0.0.0", help="the sites' listener host")
    parser.add_argument("--fleet-port", type=int, default=8000, help="the sites' listener port")
    parser.add_argument("--fleet-ssl-certfile", help="TLS certificate the sites' CA signed")
    parser.add_argument("--fleet-ssl-keyfile", help="its private key")
    if "--" in argv:
        cut = argv.index("--")
        return parser.parse_args(argv[:cut]), argv[cut + 1 :]
    return parser.parse_known_args(argv)


async def _run(server: _Server) -> int:
    """Serves until told to stop; 1 when uvicorn gives up at start (it exits when a port is taken)."""
    try:
        await server.serve()
    except SystemExit as exc:
        return int(exc.code or 1)
    return 0


async def _serve(control: _Server, fleet: _Server) -> int:
    loop = asyncio.get_running_loop()
    asked = False

    def stop() -> None:
        nonlocal asked
        asked = True
        control.should_exit = True
        fleet.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    # The Control listener first: its lifespan opens Flower's state and starts the SuperExec.
    control_task = asyncio.ensure_future(_run(control))
    while not control.started and not control_task.done():
        await asyncio.sleep(0.05)
    fleet_task = asyncio.ensure_future(_run(fleet))
    await asyncio.wait({control_task, fleet_task}, return_when=asyncio.FIRST_COMPLETED)
    signalled = asked
    # One listener ended (a signal, or a port it could not bind): end the other too.
    control.should_exit = True
    fleet.should_exit = True
    statuses = [await control_task, await fleet_task]
    if any(statuses):
        return max(statuses)
    return 0 if signalled else 1


def main(argv: list[str] | None = None) -> int:
    """Parse both argument sets, build Flower's app once and serve it on both listeners."""
    own, flower_args = _own_args(list(sys.argv[1:] if argv is None else argv))
    # Flower's parser reads sys.argv; its private start-up helpers are reached through
    # fedward.common.flower_compat, which refuses a Flower version it was not tested on.
    sys.argv = ["flower-superlink", *flower_args]
    from fedward.common.flower_compat import superlink_app, superlink_config

    config = superlink_config()
    secure = not config.insecure
    if secure and not (own.fleet_ssl_certfile and own.fleet_ssl_keyfile):
        print(
            "superlink_listeners: --fleet-ssl-certfile and --fleet-ssl-keyfile are needed "
            "unless --insecure is given",
            file=sys.stderr,
        )
        return 2
    app, log_config = superlink_app(config)
    control = _Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_config=log_config,
            ssl_certfile=config.ssl_certfile,
            ssl_keyfile=config.ssl_keyfile,
        )
    )
    fleet = _Server(
        uvicorn.Config(
            FleetOnly(app),
            host=own.fleet_host,
            port=own.fleet_port,
            lifespan="off",
            log_config=log_config,
            ssl_certfile=own.fleet_ssl_certfile if secure else None,
            ssl_keyfile=own.fleet_ssl_keyfile if secure else None,
        )
    )
    print(
        f"superlink_listeners: Fleet API only on {own.fleet_host}:{own.fleet_port}; "
        f"Control and Runtime APIs on {config.host}:{config.port}",
        file=sys.stderr,
    )
    return asyncio.run(_serve(control, fleet))


if __name__ == "__main__":
    sys.exit(main())
