"""`fedward he predict`: a clinic's encrypted predictions for a CSV of patients."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fedward.common.cli import HE_HELP, command_group
from fedward.common.errors import FedwardError

console = Console(stderr=True)
TOKEN_ENV = "FEDWARD_HE_TOKEN"


def _count_rows(path: Path) -> int | None:
    try:
        with path.open("rb") as fh:
            return max(sum(1 for _ in fh) - 1, 0)
    except OSError:
        return None


def predict(
    server: Annotated[str, typer.Option(help="The service's HOST:PORT.")],
    data: Annotated[Path, typer.Option(help="CSV of patients, with the model's input columns.")],
    out: Annotated[Path, typer.Option(help="CSV to write: id, probability, predicted_class.")],
    ca_cert: Annotated[
        Path | None, typer.Option(help="CA certificate that signed the server's (PEM).")
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help=f"File holding the API token (or set {TOKEN_ENV})."),
    ] = None,
    client_cert: Annotated[
        Path | None, typer.Option(help="Client certificate for mutual TLS.")
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option(help="Client private key for mutual TLS.")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="No TLS (local tests only).")
    ] = False,
    id_column: Annotated[
        str | None, typer.Option(help="Column copied to the output to identify each patient.")
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Probability at or above which class is 1.")
    ] = 0.5,
    round_digits: Annotated[
        int | None, typer.Option("--round", help="Round probabilities to this many decimals.")
    ] = None,
    batch: Annotated[
        int | None, typer.Option(help="Patients per request (default: the server's maximum).")
    ] = None,
) -> None:
    """Encrypt the patients here, get encrypted logits back, decrypt here: the server sees neither
    patients nor predictions, and the secret key never leaves this machine."""
    from fedward.client.he_predict import EncryptedPredictor, channel

    token = os.environ.get(TOKEN_ENV)
    if token_file is not None:
        if not token_file.is_file():
            raise FedwardError(f"{token_file}: token file not found")
        token = token_file.read_text().strip()
    if not data.is_file():
        raise FedwardError(f"{data}: file not found")
    if (client_cert is None) != (client_key is None):
        raise typer.BadParameter("mutual TLS needs both --client-cert and --client-key")
    if insecure:
        console.print(
            "[bold yellow]warning:[/] --insecure: no TLS, the token and ciphertexts travel in "
            "the clear"
        )
    chan = channel(
        server,
        ca_certificate=ca_cert,
        insecure=insecure,
        client_certificate=(client_cert, client_key) if client_cert and client_key else None,
    )
    total = _count_rows(data)
    with chan, EncryptedPredictor(chan, token=token) as predictor:
        info = predictor.info
        console.print(
            f"model {info.description} ({info.model_id}"
            f"{'' if info.released else ', NOT released'}); "
            f"{len(info.feature_names)} encrypted features per patient"
        )
        with Progress(
            TextColumn("encrypted predictions"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("predict", total=total)
            n = predictor.predict_csv(
                data,
                out,
                id_column=id_column,
                threshold=threshold,
                round_digits=round_digits,
                chunk_rows=batch,
                progress=lambda k: bar.advance(task, k),
            )
        left = predictor.info.budget_remaining
        console.print(
            f"{n} predictions written to {out}; sent {predictor.bytes_sent / 1e6:.1f} MB, "
            f"received {predictor.bytes_received / 1e6:.1f} MB"
            + ("" if left is None else f"; query budget left: {left}")
        )


def register_he(app: typer.Typer) -> None:
    command_group(app, "he", HE_HELP).command("predict")(predict)
