"""What does DP-SGD cost at a site, in training rows per second?

One small tabular model, fedward's MLP 30-64-1 (fedward's models have one logit and a BCE loss), on
synthetic rows (30 standard normal features, labels from a random linear rule), expected batch 256,
SGD, trained by five loops:

- ``fedward non-DP``: ``train_local(..., dp=None)`` (shuffled batches cut from tensors);
- ``fedward DP (ghost)``: ``train_local`` under DP, the default mode for this model (tensor-native
  Poisson sampling, Opacus's ghost clipping, noise, step);
- ``fedward DP (hooks)``: the same loop with ``clipping="hooks"`` (Opacus's per-sample gradients);
- ``plain Opacus DP``: ``PrivacyEngine().make_private`` in its default hook mode over a torch
  ``DataLoader`` of a ``TensorDataset`` (Poisson sampling, as make_private does by default), and
  the standard loop;
- ``plain torch non-DP``: the standard loop over a shuffled ``DataLoader``, no DP.

Each figure is the full loop: sampling, forward, backward, clipping, noise and step, plus wrapping
and unwrapping the model (``train_local`` does it every round; ``make_private`` is timed too).
Rows per second are the rows the loop processes (n per epoch without DP; steps x q·n, the expected
Poisson batches, under DP) over wall time. All five run with one intra-op thread (``train_local`` picks it
for small models on CPU; the plain loops get ``torch.set_num_threads(1)``) and a DataLoader
without workers. Each repetition runs every loop once, in a rotated order, so load from other
processes hits all alike; figures are medians over repetitions and the two target ratios are
taken within the same run. The machine is often shared: the load average and the CPU time other
processes took are recorded beside the figures, and every figure is also given per second of the
process's own CPU time, which other processes disturb far less.

    python -m tests.benchmarks.bench_dp_cost [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedward.client.training import Clipping, DPSettings, train_local
from fedward.common.learning_config import ModelConfig, TrainingConfig
from fedward.common.models import build_model
from tests.benchmarks.report import busy_cpu_s, own_cpu_s, print_rows, row

N_ROWS, N_FEATURES, HIDDEN, BATCH = 20_000, 30, 64, 256
NOISE_MULTIPLIER, MAX_GRAD_NORM, LEARNING_RATE = 1.0, 1.0, 0.1
THREADS = 1

# The targets, on 2 cores.
TARGET_DP_OVER_NON_DP = 1.3
TARGET_OVER_PLAIN_OPACUS = 3.0

VARIANTS = (
    "fedward non-DP",
    "fedward DP (ghost)",
    "fedward DP (hooks)",
    "plain Opacus DP",
    "plain torch non-DP",
)


def synthetic(n: int = N_ROWS, d: int = N_FEATURES, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    return x, (x @ w > 0).float()


def model() -> nn.Module:
    return build_model(ModelConfig(kind="mlp", hidden=[HIDDEN]), N_FEATURES, seed=0)


# ---- the five loops; each returns the rows it processed --------------------------------------


def fedward_loop(
    x: torch.Tensor, y: torch.Tensor, epochs: int, *, dp: bool, clipping: Clipping | None = None
) -> float:
    cfg = TrainingConfig(local_epochs=epochs, batch_size=BATCH, learning_rate=LEARNING_RATE)
    settings = (
        DPSettings.for_batch_size(
            BATCH,
            len(x),
            noise_multiplier=NOISE_MULTIPLIER,
            max_grad_norm=MAX_GRAD_NORM,
            noise_seed=0,
        )
        if dp
        else None
    )
    result = train_local(model(), x, y, cfg=cfg, dp=settings, seed=0, clipping=clipping)
    if settings is None:
        return float(epochs * len(x))
    return result.steps * settings.sample_rate * len(x)


def plain_opacus_loop(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    module = model()
    optimizer = torch.optim.SGD(module.parameters(), lr=LEARNING_RATE)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # secure-RNG and full-backward-hook notices
        module, optimizer, loader = PrivacyEngine().make_private(
            module=module,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=NOISE_MULTIPLIER,
            max_grad_norm=MAX_GRAD_NORM,
        )
        loss_fn = nn.BCEWithLogitsLoss()
        steps = 0
        for _ in range(epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                loss_fn(module(xb).reshape(-1), yb).backward()
                optimizer.step()
                steps += 1
    return steps * float(BATCH)  # expected Poisson batch q·n = BATCH


def plain_torch_loop(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    module = model()
    optimizer = torch.optim.SGD(module.parameters(), lr=LEARNING_RATE)
    loader = DataLoader(
        TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=torch.Generator()
    )
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(module(xb).reshape(-1), yb).backward()
            optimizer.step()
    return float(epochs * len(x))


def loops(x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[int], float]]:
    return {
        "fedward non-DP": lambda e: fedward_loop(x, y, e, dp=False),
        "fedward DP (ghost)": lambda e: fedward_loop(x, y, e, dp=True, clipping="ghost"),
        "fedward DP (hooks)": lambda e: fedward_loop(x, y, e, dp=True, clipping="hooks"),
        "plain Opacus DP": lambda e: plain_opacus_loop(x, y, e),
        "plain torch non-DP": lambda e: plain_torch_loop(x, y, e),
    }


# ---- measuring ----------------------------------------------------------------------------------


def collect(*, epochs: int, repeats: int) -> dict[str, Any]:
    """Rows per second of every loop, ``repeats`` interleaved times, and the ratios per repeat."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        x, y = synthetic()
        for fn in loops(x[:2048], y[:2048]).values():  # lazy imports, first-call paths
            fn(1)
        run = loops(x, y)
        started, busy0, own0 = time.perf_counter(), busy_cpu_s(), own_cpu_s()
        load_start = list(os.getloadavg())
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        cpu_rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for rep in range(repeats):
            order = VARIANTS[rep % len(VARIANTS) :] + VARIANTS[: rep % len(VARIANTS)]
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                rows = run[name](epochs)
                rates[name].append(rows / (time.perf_counter() - t0))
                cpu_rates[name].append(rows / (time.process_time() - c0))
        busy1 = busy_cpu_s()
    finally:
        torch.set_num_threads(before)
    wall = time.perf_counter() - started
    others = None if busy0 is None or busy1 is None else busy1 - busy0 - (own_cpu_s() - own0)

    def per_repeat(r: dict[str, list[float]], num: str, den: str) -> list[float]:
        return [a / b for a, b in zip(r[num], r[den], strict=True)]

    return {
        "samples_per_s": rates,
        "samples_per_s_median": {k: statistics.median(v) for k, v in rates.items()},
        # Rows per second of the process's own CPU time: with one thread and no loader workers,
        # close to wall time on an idle machine and far less sensitive to other processes.
        "samples_per_cpu_s": cpu_rates,
        "samples_per_cpu_s_median": {k: statistics.median(v) for k, v in cpu_rates.items()},
        "per_repeat_dp_over_non_dp_time": per_repeat(rates, "fedward non-DP", "fedward DP (ghost)"),
        "per_repeat_ghost_over_plain_opacus_throughput": per_repeat(
            rates, "fedward DP (ghost)", "plain Opacus DP"
        ),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": metadata.version("torch"),
            "opacus": metadata.version("opacus"),
            "load_average_at_start": load_start,
            "load_average_at_end": list(os.getloadavg()),
            "other_processes_cpu_s": None if others is None else round(max(others, 0.0), 1),
            "timed_wall_s": round(wall, 1),
        },
    }


def measure(*, quick: bool = False) -> dict[str, Any]:
    """The suite's entry: DP's cost in fedward's loop, and fedward's DP loop against Opacus's."""
    epochs, repeats = (1, 3) if quick else (5, 7)
    setup = {
        "rows": N_ROWS,
        "features": N_FEATURES,
        "model": f"MLP {N_FEATURES}-{HIDDEN}-1, ReLU, BCE with logits",
        "labels": "random linear rule on standard normal features",
        "expected_batch": BATCH,
        "sample_rate": BATCH / N_ROWS,
        "epochs_per_timing": epochs,
        "repeats": repeats,
        "noise_multiplier": NOISE_MULTIPLIER,
        "max_grad_norm": MAX_GRAD_NORM,
        "optimizer": f"SGD lr {LEARNING_RATE}",
        "intra_op_threads": THREADS,
        "dataloader_workers": 0,
        "statistic": "median over interleaved repeats",
    }
    results = collect(epochs=epochs, repeats=repeats)
    med = results["samples_per_s_median"]
    cpu = results["samples_per_cpu_s_median"]
    dp_ratio = med["fedward non-DP"] / med["fedward DP (ghost)"]
    vs_opacus = med["fedward DP (ghost)"] / med["plain Opacus DP"]
    ghost_vs_non_dp = "fedward DP (ghost) vs fedward non-DP"
    ghost_vs_opacus = "fedward DP (ghost) vs plain Opacus DP"
    rows = [
        row(
            ghost_vs_non_dp,
            "time per row, DP / non-DP",
            dp_ratio,
            "x",
            f"≤ {TARGET_DP_OVER_NON_DP}x",
            dp_ratio <= TARGET_DP_OVER_NON_DP,
        ),
        row(
            ghost_vs_opacus,
            "rows per second, fedward / Opacus",
            vs_opacus,
            "x",
            f"≥ {TARGET_OVER_PLAIN_OPACUS:g}x",
            vs_opacus >= TARGET_OVER_PLAIN_OPACUS,
        ),
        row(
            ghost_vs_non_dp,
            "CPU time per row, DP / non-DP",
            cpu["fedward non-DP"] / cpu["fedward DP (ghost)"],
            "x",
        ),
        row(
            ghost_vs_opacus,
            "rows per CPU second, fedward / Opacus",
            cpu["fedward DP (ghost)"] / cpu["plain Opacus DP"],
            "x",
        ),
        row(
            "fedward DP (hooks) vs fedward non-DP",
            "time per row, DP / non-DP",
            med["fedward non-DP"] / med["fedward DP (hooks)"],
            "x",
        ),
        row(
            "plain Opacus DP vs plain torch non-DP",
            "time per row, DP / non-DP",
            med["plain torch non-DP"] / med["plain Opacus DP"],
            "x",
        ),
    ]
    rows += [row(name, "training rows per second", med[name], "rows/s") for name in VARIANTS]
    return {"name": "dp_cost", "setup": setup, "results": results, "rows": rows}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench_dp_cost", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="Smoke run: 1 epoch, 3 repeats.")
    parser.add_argument("--json", default=None, help="Write setup, results and rows here.")
    args = parser.parse_args(argv)
    output = measure(quick=args.quick)
    print_rows(output["rows"])
    m = output["results"]["machine"]
    print(
        f"\n{m['cpus']} CPUs, load average {m['load_average_at_start'][0]:.1f} at start and "
        f"{m['load_average_at_end'][0]:.1f} at end; other processes took "
        f"{m['other_processes_cpu_s']} CPU s of the {m['timed_wall_s']} s timed"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(output, fh, indent=2)
    return output


if __name__ == "__main__":
    main()
