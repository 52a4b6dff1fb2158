"""What every benchmark of the suite reports in the same way: its rows, and the machine's other load.

A row is ``{comparison, measure, value, unit, target, met}``: ``target`` is the issue's target as
text (None for a figure reported beside), ``met`` whether the measured value meets it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROW_KEYS = ("comparison", "measure", "value", "unit", "target", "met")


def row(
    comparison: str,
    measure: str,
    value: float,
    unit: str,
    target: str | None = None,
    met: bool | None = None,
) -> dict[str, Any]:
    return {
        "comparison": comparison,
        "measure": measure,
        "value": float(value),
        "unit": unit,
        "target": target,
        "met": met,
    }


def format_value(r: dict[str, Any]) -> str:
    value = float(r["value"])
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if r["unit"] != "x" else f"{value:.2f}"
    return f"{text} {r['unit']}".strip()


def met_text(r: dict[str, Any]) -> str:
    return {True: "met", False: "NOT met", None: ""}[r["met"]]


def print_rows(rows: Sequence[dict[str, Any]]) -> None:
    """A plain table of the rows, for a benchmark run on its own."""
    for r in rows:
        target = f"  target {r['target']}: {met_text(r)}" if r["target"] else ""
        print(f"{r['comparison']:<40} {r['measure']:<60} {format_value(r):>18}{target}")


def busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has been busy since boot (Linux): with one's own CPU time,
    it tells how much of a run other processes took on a shared machine."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system
