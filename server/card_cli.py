"""`fedward card RUN_DIR`: (re)generate a finished run's model card from its run folder.

A card is regenerated after anything it reads changes (an audit re-run, an edited ethics register),
so that the card the release gate reads says what the folder says now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from fedward.common.errors import FedwardError

console = Console()


def card(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
) -> None:
    """Write model_card.json, model_card.md and model_card.html into the run folder."""
    try:
        from fedward.server.model_card import write_card  # matplotlib, torch: only when used

        paths = write_card(run_dir)
    except FedwardError as exc:  # an unfinished run folder, or an invalid [card] section
        raise typer.BadParameter(str(exc), param_hint="RUN_DIR") from exc
    written = json.loads(paths[0].read_text(encoding="utf-8"))
    for warning in written["warnings"]:
        console.print(f"[bold red]WARNING:[/] {escape(warning)}")
    verdicts = written["verdicts"]
    release = verdicts.get("release") or {}
    colour = "green" if verdicts["release_ready"] else "yellow"
    console.print(f"[{colour}]release: {escape(str(release.get('line', 'unknown')))}[/]")
    for problem in verdicts["problems"]:
        console.print(f"  not ready: {escape(problem)}")
    for path in paths:
        console.print(str(path), highlight=False, soft_wrap=True)
