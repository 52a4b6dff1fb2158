"""What every `fedward site` command shares: the console it prints on, the ``--site-config``
option, the error a command raises for a person to read, and the cells of its tables.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from fedward.common.errors import FedwardError

console = Console(soft_wrap=True)

SiteConfigOption = Annotated[
    Path,
    typer.Option(
        "--site-config",
        help="The site config TOML (its state_dir holds the privacy ledger).",
        metavar="SITE.toml",
    ),
]


class SiteCommandError(FedwardError):
    """A site command cannot do what was asked; the message names the file or option at fault."""


def operator_name() -> str:
    """Who runs the command, for an approval or a withdrawal made without --by."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"uid {os.getuid()}"


def by_option(act: str) -> Any:
    """``--by`` of a command a person answers for (``act``: "approves", "withdraws")."""
    return typer.Option("--by", help=f"Who {act}; default: the OS user name.")


def person(by: str | None, act: str) -> str:
    """The person ``--by`` names, else the OS user; refused when blank (``act`` as above)."""
    who = (by if by is not None else operator_name()).strip()
    if not who:
        raise SiteCommandError(f"--by is empty: name the person who {act}")
    return who


def time_cell(iso: str) -> str:
    """An entry's UTC timestamp to the second, for tables (exports keep the full value)."""
    return iso[:19].replace("T", " ")


def num_cell(value: float | None, spec: str = ".4g") -> str:
    """A figure for a table: – when there is none."""
    return "–" if value is None else format(value, spec)


def print_whole(table: Table) -> None:
    """Print a table at its natural width: an auditor's view never truncates a value (a narrow
    terminal wraps the lines instead)."""
    natural = Measurement.get(console, console.options.update(width=10**4), table).maximum
    if natural <= console.width:
        console.print(table)
    else:
        Console(width=natural, soft_wrap=True).print(table)
