"""How long `fedward --help` and the site commands take to answer, and what they import.

A site operator types `fedward site check` first; it must answer in under a second, so torch,
Flower, Ray, scikit-learn, SciPy, pandas and matplotlib are imported only by the commands that use
them. Each command runs as its own process (the console script, as a user runs it), several times;
the median wall time is reported with the heavy modules each one loaded (from ``-X importtime``).

    python -m tests.benchmarks.bench_cli_startup [--repeats 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_foundation import machine_info
from tests.benchmarks.report import row

BIN = Path(sys.executable).parent
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("site", "--help"),
    ("site", "check", "--help"),
    ("site", "init", "--help"),
)
HEAVY = ("torch", "flwr", "ray", "sklearn", "scipy", "pandas", "matplotlib", "opacus", "tenseal")
TARGET_S = 1.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", COLUMNS="100")
    return env


def wall_times(args: tuple[str, ...], repeats: int) -> list[float]:
    """Seconds from exec to exit of the `fedward` console script, one process per repeat."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [str(BIN / "fedward"), *args], env=_env(), capture_output=True, check=True, timeout=60
        )
        times.append(time.perf_counter() - started)
    return times


def heavy_imports(args: tuple[str, ...]) -> list[str]:
    """The heavy top-level packages the command imports (``python -X importtime``)."""
    code = "import sys; from fedward.common.cli import main; sys.argv[0] = 'fedward'; main()"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *args],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    loaded = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            loaded.add(name.split(".")[0])
    return sorted(loaded & set(HEAVY))


def measure(*, quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    n = repeats or (3 if quick else 7)
    commands: dict[str, Any] = {}
    rows = []
    for args in COMMANDS:
        name = "fedward " + " ".join(args)
        times = wall_times(args, n)
        median = statistics.median(times)
        heavy = heavy_imports(args)
        commands[name] = {
            "median_s": round(median, 3),
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "heavy_imports": heavy,
        }
        rows.append(
            row("CLI startup", f"{name}: median wall time", median, "s", "< 1 s", median < TARGET_S)
        )
        rows.append(
            row("CLI startup", f"{name}: heavy packages imported", len(heavy), "", "0", not heavy)
        )
    return {"setup": {"repeats": n, "machine": machine_info()}, "commands": commands, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(repeats=args.repeats)
    for name, res in result["commands"].items():
        heavy = ", ".join(res["heavy_imports"]) or "none"
        print(
            f"{name:32s} median {res['median_s']:.2f} s (min {res['min_s']:.2f}, "
            f"max {res['max_s']:.2f}); heavy imports: {heavy}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
