"""`fedward he serve` and `fedward he add-client`: the coordinator's side of encrypted inference."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedward.common.cli import HE_HELP, command_group
from fedward.common.errors import FedwardError

console = Console(stderr=True)


def serve(
    model: Annotated[
        Path | None,
        typer.Option(help="A release folder (from `fedward release export`): the model served."),
    ] = None,
    unreleased_run: Annotated[
        Path | None,
        typer.Option(
            help="Serve a finished run folder that has NOT passed the release gate. For "
            "simulation and tests only, never for patients."
        ),
    ] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on (port 0: any free one).")] = (
        "127.0.0.1:50051"
    ),
    tls_cert: Annotated[Path | None, typer.Option(help="Server certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Server private key (PEM).")] = None,
    client_ca: Annotated[
        Path | None, typer.Option(help="CA that signs client certificates: turns on mutual TLS.")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="No TLS (local tests only; prints a warning).")
    ] = False,
    clients: Annotated[
        Path | None,
        typer.Option(help="Clients file (TOML): token hashes, budgets, rate limits."),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No API tokens (local tests only; prints a warning).")
    ] = False,
    state: Annotated[
        Path, typer.Option(help="Folder for the usage ledger and the request log.")
    ] = Path("he-state"),
    max_batch: Annotated[
        int | None, typer.Option(help="Most patients per request (default: a ciphertext's slots).")
    ] = None,
    max_request_mb: Annotated[float, typer.Option(help="Largest request accepted, in MiB.")] = 64.0,
    logit_noise: Annotated[
        float,
        typer.Option(
            help="Standard deviation of Gaussian noise added to every returned logit under "
            "encryption: coarsens what a client learns about the weights."
        ),
    ] = 0.0,
    session_ttl: Annotated[float, typer.Option(help="Seconds an idle session lives.")] = 3600.0,
    workers: Annotated[int, typer.Option(help="Requests served at once.")] = 4,
    metrics_port: Annotated[
        int, typer.Option(help="Prometheus metrics on this port (0: off).")
    ] = 0,
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics endpoint.")] = (
        "127.0.0.1"
    ),
) -> None:
    """Serve encrypted predictions of a released model over gRPC (TenSEAL CKKS)."""
    from fedward.server.he_access import Access, load_clients
    from fedward.server.he_model import load_released_model, load_run_model
    from fedward.server.he_service import (
        EncryptedInferenceService,
        MiB,
        ServiceSettings,
        TLSFiles,
        start_server,
    )

    if (model is None) == (unreleased_run is None):
        raise typer.BadParameter(
            "give exactly one of --model RELEASE_DIR or --unreleased-run RUN_DIR"
        )
    if model is not None:
        he_model = load_released_model(model)
    else:
        assert unreleased_run is not None
        console.print(
            f"[bold yellow]warning:[/] serving {unreleased_run}, which has not passed the release "
            "gate: for simulation and tests only"
        )
        he_model = load_run_model(unreleased_run)
    if insecure and (tls_cert or tls_key or client_ca):
        raise typer.BadParameter(
            "--insecure turns TLS off: leave out --tls-cert, --tls-key, --client-ca"
        )
    if insecure:
        console.print(
            "[bold yellow]warning:[/] --insecure: no TLS, ciphertexts and tokens travel in the clear"
        )
        tls = None
    else:
        if tls_cert is None or tls_key is None:
            raise typer.BadParameter(
                "TLS needs --tls-cert and --tls-key (or --insecure for local tests)"
            )
        for path in (tls_cert, tls_key, *([client_ca] if client_ca else [])):
            if not path.is_file():
                raise FedwardError(f"{path}: file not found")
        tls = TLSFiles(tls_cert, tls_key, client_ca)
    if no_auth:
        console.print("[bold yellow]warning:[/] --no-auth: any caller may query the model")
        known = {}
    else:
        if clients is None:
            raise typer.BadParameter(
                "give --clients FILE (make one with `fedward he add-client`) or --no-auth"
            )
        known = load_clients(clients)
        if not known:
            raise FedwardError(f"{clients}: no clients; add one with `fedward he add-client`")
    settings = ServiceSettings(
        max_batch=max_batch,
        max_request_bytes=int(max_request_mb * MiB),
        session_ttl_s=session_ttl,
        logit_noise=logit_noise,
        workers=workers,
        require_token=not no_auth,
    )
    service = EncryptedInferenceService(he_model, Access.open(known, state), settings)
    server, port = start_server(service, listen, tls=tls)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host, registry=service.metrics.registry)
    host = listen.rsplit(":", 1)[0]
    p = service.params
    print(
        f"serving {he_model.description} ({he_model.model_id}) on {host}:{port} "
        f"{'with TLS' if tls else 'WITHOUT TLS'}; CKKS N={p.poly_modulus_degree} "
        f"{list(p.coeff_mod_bit_sizes)}, at most {service.max_batch} patients per request",
        flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()


def add_client(
    name: Annotated[str, typer.Argument(help="The client's name, as the logs will show it.")],
    clients: Annotated[Path, typer.Option(help="Clients file (TOML), created if missing.")],
    query_budget: Annotated[
        int, typer.Option(min=0, help="Lifetime predictions (patients) for this client.")
    ] = 100_000,
    unlimited: Annotated[
        bool, typer.Option("--unlimited", help="No lifetime budget (a rate limit still applies).")
    ] = False,
    requests_per_minute: Annotated[int, typer.Option(help="Rate limit.")] = 120,
) -> None:
    """Add a client and print its API token: it is shown once and stored only as a hash."""
    from fedward.server.he_access import add_client as add

    token = add(
        clients,
        name,
        query_budget=None if unlimited else query_budget,
        requests_per_minute=requests_per_minute,
    )
    console.print(f"client '{name}' added to {clients}; its token (shown once):")
    print(token, flush=True)


def register_he(app: typer.Typer) -> None:
    group = command_group(app, "he", HE_HELP)
    group.command("serve")(serve)
    group.command("add-client")(add_client)
