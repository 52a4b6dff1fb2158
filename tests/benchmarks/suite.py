"""The performance suite: every comparison in one process tree, one table, one JSON file.

Each benchmark module has ``measure(quick=...)`` returning rows of
``{comparison, measure, value, unit, target, met}``; the suite runs them one after another in this
process (their federations and services as its children), records how much CPU other processes
took meanwhile (a ratio from a busy machine is flagged, not hidden), prints one table and writes
every raw result to JSON. A benchmark that fails is reported with its error and the others still
run; the exit status is then 1.

    python -m tests.benchmarks --json bench.json [--only dp_cost,scale] [--quick] [--markdown FILE]

``--quick`` runs each benchmark small (a smoke run, not figures to quote).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tests.benchmarks.bench_foundation import ForeignCpu, machine_info, source_state
from tests.benchmarks.report import ROW_KEYS, format_value, met_text

# name -> module with ``measure(*, quick: bool) -> dict``; run in this order.
BENCHMARKS: dict[str, str] = {
    "dp_cost": "tests.benchmarks.bench_dp_cost",
    "simulation": "tests.benchmarks.bench_simulation",
    "scale": "tests.benchmarks.bench_scale",
    "communication": "tests.benchmarks.bench_communication",
    "he": "tests.benchmarks.bench_he",
    "cli_startup": "tests.benchmarks.bench_cli_startup",
}
# Other processes above this share of the machine's CPU during a benchmark: its figures are flagged.
BUSY_SHARE = 0.10

console = Console(stderr=True)


def run_one(name: str, *, quick: bool) -> dict[str, Any]:
    """One benchmark, with its time, the other processes' CPU share meanwhile, and any error."""
    started = time.perf_counter()
    with ForeignCpu() as foreign:
        try:
            module = importlib.import_module(BENCHMARKS[name])
            result: dict[str, Any] = module.measure(quick=quick)
            error = None
        except Exception:  # one broken benchmark must not lose the others
            result, error = {"rows": []}, traceback.format_exc()
    for row in result["rows"]:
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"benchmark {name}: a row lacks {missing}: {row}")
    result.update(
        benchmark_s=round(time.perf_counter() - started, 1),
        other_processes_cpu_share=round(foreign.share, 3),
        busy=foreign.share > BUSY_SHARE,
        error=error,
    )
    return result


def table(results: dict[str, dict[str, Any]]) -> Table:
    out = Table(title="fedward performance suite")
    for column in ("benchmark", "comparison", "measure", "value", "target", "result"):
        out.add_column(column)
    for name, result in results.items():
        if result["error"]:
            out.add_row(name, "", "[red]failed[/] (see the JSON)", "", "", "")
        for row in result["rows"]:
            busy = " (busy machine)" if result["busy"] else ""
            out.add_row(
                name,
                row["comparison"],
                row["measure"],
                format_value(row),
                row["target"] or "",
                met_text(row) + (busy if row["met"] is not None else ""),
            )
    return out


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| benchmark | comparison | measure | value | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        if result["error"]:
            lines.append(f"| {name} | | failed | | | |")
        for row in result["rows"]:
            cells = (
                name,
                row["comparison"],
                row["measure"],
                format_value(row),
                row["target"] or "",
            )
            lines.append("| " + " | ".join(cells) + f" | {met_text(row)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"Comma-separated, from: {', '.join(BENCHMARKS)} (default: all).",
    )
    parser.add_argument("--quick", action="store_true", help="Small runs: a smoke test.")
    parser.add_argument("--json", type=Path, default=None, help="Write every result here.")
    parser.add_argument("--markdown", type=Path, default=None, help="Write the table here.")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    output: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "tests.benchmarks", *(argv or sys.argv[1:])]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "source": source_state(),
        "quick": args.quick,
        "benchmarks": {},
    }
    for name in names:
        console.print(f"[dim]{datetime.now(UTC):%H:%M:%S}[/] {name} …")
        output["benchmarks"][name] = result = run_one(name, quick=args.quick)
        if result["error"]:
            console.print(f"[red]{name} failed[/]\n{result['error']}")
        else:
            console.print(f"    {result['benchmark_s']:.0f} s")
    output["rows"] = [
        {"benchmark": name, **row}
        for name, result in output["benchmarks"].items()
        for row in result["rows"]
    ]
    Console(width=200).print(table(output["benchmarks"]))
    if args.json:
        args.json.write_text(json.dumps(output, indent=2, default=str), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(markdown(output["benchmarks"]), encoding="utf-8")
    return 1 if any(r["error"] for r in output["benchmarks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
