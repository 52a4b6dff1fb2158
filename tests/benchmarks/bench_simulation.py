"""Simulation overhead: `fedward simulate` against a plain Flower + Opacus app, in the same run.

Both federate the four heart-disease hospitals with DP for the same number of rounds in Flower's
simulation engine, with the same model (logistic regression on 24 inputs), learning rate, batch
size and clipping norm: fedward as the `fedward simulate` command (baselines and audit off, so that
only the federation is compared), the plain app as `tests/benchmarks/plain_flower_opacus.py`, the
shape of Flower's own Opacus example (a DataLoader and `make_private_with_epsilon` at every site in
every round). Each runs as a subprocess; the figure compared is the time inside the ServerApp (the
federation), with the wall time from outside beside it (Python and Ray start-up included). The
pooled centralised training of the same model on the union of the training splits, DP, for as many
epochs as there are rounds, is timed in this process beside them.

    python -m tests.benchmarks.bench_simulation [--rounds 20] [--seed 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_foundation import (
    fedward_federation,
    plain_flower_opacus,
    pooled_reference,
)
from tests.benchmarks.report import print_rows, row

ROUNDS = 20
QUICK_ROUNDS = 2
# The target: fedward's federation in at most half the plain app's time.
TARGET_RATIO = 2.0


def measure(
    *, quick: bool = False, rounds: int | None = None, seed: int = 0, out: Path | None = None
) -> dict[str, Any]:
    """Time one fedward DP federation and one plain Flower + Opacus federation, back to back."""
    n_rounds = rounds if rounds is not None else (QUICK_ROUNDS if quick else ROUNDS)
    with tempfile.TemporaryDirectory(prefix="fedward-bench-sim-") as tmp:
        folder = out or Path(tmp)
        fedward = fedward_federation(seed, dp=True, out=folder, idle_wait_s=0.0, rounds=n_rounds)
        plain = plain_flower_opacus(seed, out=folder, idle_wait_s=0.0, rounds=n_rounds)
    pooled = pooled_reference(seed, dp=True, rounds=n_rounds)
    ratio = plain["elapsed_s"] / fedward["elapsed_s"]
    wall_ratio = plain["wall_s"] / fedward["wall_s"]
    contended = fedward["contended"] or plain["contended"]
    note = " (machine busy)" if contended else ""
    comparison = f"simulation, 4 hospitals, {n_rounds} DP rounds"
    rows = [
        row(comparison, "fedward federation time", fedward["elapsed_s"], "s"),
        row(comparison, "plain Flower + Opacus federation time", plain["elapsed_s"], "s"),
        row(
            comparison,
            "plain / fedward, federation time" + note,
            ratio,
            "x",
            f"≥ {TARGET_RATIO:g}x (at most half the time)",
            ratio >= TARGET_RATIO,
        ),
        row(comparison, "plain / fedward, wall time with start-up" + note, wall_ratio, "x"),
        row(
            comparison,
            f"pooled centralised DP training, {pooled['epochs']} epochs",
            pooled["train_s"],
            "s",
        ),
    ]
    return {
        "name": "simulation",
        "setup": {"rounds": n_rounds, "seed": seed, "dataset": "heart-disease", "dp": True},
        "results": {"fedward": fedward, "plain_flower_opacus": plain, "pooled_dp": pooled},
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help=f"Default {ROUNDS}.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = measure(quick=args.quick, rounds=args.rounds, seed=args.seed)
    print_rows(result["rows"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
