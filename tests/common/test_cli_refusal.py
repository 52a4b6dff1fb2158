"""`exit_1_on`: a command that changes nothing on an expected error says so in one red line and
exits 1; any other error passes through untouched."""

from __future__ import annotations

import io

import pytest
import typer
from rich.console import Console

from fedward.common.cli import exit_1_on


class Refused(Exception):
    pass


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, color_system=None), out


def test_the_expected_error_prints_its_label_and_message_and_exits_1() -> None:
    console, out = _console()
    with pytest.raises(typer.Exit) as done, exit_1_on(Refused, "NOT ROTATED", console):
        raise Refused("the ledger does not verify [seq 3]")
    assert done.value.exit_code == 1
    assert done.value.__suppress_context__
    assert out.getvalue() == "NOT ROTATED: the ledger does not verify [seq 3]\n"


def test_no_error_prints_nothing_and_lets_the_command_go_on() -> None:
    console, out = _console()
    with exit_1_on(Refused, "not added", console):
        value = 42
    assert value == 42
    assert out.getvalue() == ""


def test_another_error_is_not_caught() -> None:
    console, out = _console()
    with pytest.raises(KeyError), exit_1_on(Refused, "not removed", console):
        raise KeyError("x")
    assert out.getvalue() == ""
