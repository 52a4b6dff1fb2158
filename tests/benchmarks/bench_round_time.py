"""Round time of a deployed federation: stock Flower against fedward's fast path, in one run.

Each mode starts a real ``flower-superlink`` (insecure, loopback, state in ``--database``) and four
SuperNodes on the bundled heart-disease hospitals, then launches a DP logistic-regression run with
``flwr run`` (no baselines, no audit: only the rounds). A round's time is measured from the
coordinator's own progress events, from the first round's start to the last round's evaluation,
divided by the number of rounds: training and evaluation messages of every site included.

Modes, all on the same machine in the same invocation so the ratios survive a noisy machine:

- ``stock``: ``flower-supernode`` as Flower ships it;
- ``supported``: ``fedward-supernode`` (zygote-forked ClientApps, SuperExec's documented task poll
  interval) and the coordinator's reply-polling grid: public extension points only;
- ``shortcuts``: the same plus ``--flower-shortcuts`` (the SuperNode's internal waits shortened,
  :mod:`fedward.common.flower_compat`).

The coordinator's reply-polling grid is part of every ServerApp, so ``stock`` runs it with
``FEDWARD_REPLY_POLL_INTERVAL=3`` (Flower's own fixed wait).

    python -m tests.benchmarks.bench_round_time [--rounds 5] [--modes stock,supported,shortcuts]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedward.common.datasets.bundled import write_site_files
from tests.e2e.processes import (
    BIN,
    FAST_SUPERNODE,
    STOCK_SUPERNODE,
    ProcessGroup,
    connection_home,
    free_port,
    start_insecure_federation,
)

REPO = Path(__file__).resolve().parents[2]
MODES = ("stock", "supported", "shortcuts")
RUN_CONFIG = """\
name = "round-time"
[model]
kind = "logistic"
[baselines]
enabled = false
[audit]
enabled = false
"""


def supernode_command(mode: str) -> list[str]:
    if mode == "stock":
        return STOCK_SUPERNODE
    if mode == "supported":
        return [str(BIN / "fedward-supernode"), "--"]
    if mode == "shortcuts":
        return FAST_SUPERNODE
    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


def round_time(progress: Path, rounds: int) -> dict[str, Any]:
    events = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
    starts = {e["round"]: e["t"] for e in events if e["event"] == "round-started"}
    evaluated = [
        e["t"]
        for e in events
        if e["event"] == "evaluated" and e.get("split") == "tune" and e.get("round") == rounds
    ]
    if 1 not in starts or not evaluated:
        raise RuntimeError(f"{progress}: the run did not finish {rounds} rounds")
    rounds_s = []
    for r in range(1, rounds + 1):
        end = starts.get(r + 1, evaluated[-1])
        rounds_s.append(round(end - starts[r], 3))
    return {
        "per_round_s": round((evaluated[-1] - starts[1]) / rounds, 3),
        "rounds_s": rounds_s,
    }


def wait_finished(out: Path, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run_dir in out.glob("*-round-time-*"):
            progress = run_dir / "progress.jsonl"
            text = progress.read_text() if progress.is_file() else ""
            if '"run-finished"' in text or '"run-stopped"' in text:
                return run_dir
        time.sleep(1)
    raise TimeoutError(f"no finished run under {out} after {timeout} s")


def run_mode(mode: str, rounds: int, tmp: Path) -> dict[str, Any]:
    port = free_port()
    _, env = connection_home(tmp, "bench", port)
    if mode == "stock":
        env["FEDWARD_REPLY_POLL_INTERVAL"] = "3"
    run_config = tmp / "run.toml"
    run_config.write_text(RUN_CONFIG)
    sites = write_site_files("heart-disease", tmp / "sites", seed=3)
    group = ProcessGroup()
    started = time.time()
    try:
        start_insecure_federation(group, tmp, env, port, sites, supernode_command(mode))
        out = tmp / "runs"
        done = subprocess.run(
            [
                str(BIN / "flwr"),
                "run",
                str(REPO),
                "bench",
                "--run-config",
                f"output-dir='{out}' rounds={rounds} run-config='{run_config}'",
            ],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{mode}: flwr run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        # `flwr run` without --stream returns once the run is submitted (streaming its logs would
        # cost the SuperLink CPU the rounds need): wait for the coordinator's own last event.
        run_dir = wait_finished(out, timeout=3600)
        result = round_time(run_dir / "progress.jsonl", rounds)
        # The same work in every mode: the final model's pooled test AUROC, as a sanity check.
        test = json.loads((run_dir / "metrics.json").read_text())["test"]
        result["test_auroc"] = round(float(test["pooled"]["auroc"]), 4)
    finally:
        group.stop()
    return {"mode": mode, **result, "wall_s": round(time.time() - started, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    # `timeout` and CI stop with SIGTERM: unwind, so every process started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"fedward-round-{mode}-") as tmp:
            result = run_mode(mode, args.rounds, Path(tmp))
        results.append(result)
        print(json.dumps(result), flush=True)
    base = next((r["per_round_s"] for r in results if r["mode"] == "stock"), None)
    print(f"\n{'mode':<10} {'s/round':>8} {'vs stock':>9}  rounds (s)")
    for r in results:
        ratio = f"{base / r['per_round_s']:.1f}x" if base else "-"
        print(f"{r['mode']:<10} {r['per_round_s']:>8.2f} {ratio:>9}  {r['rounds_s']}")
    report = {
        "benchmark": "round_time",
        "rounds": args.rounds,
        "sites": 4,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "python": sys.version.split()[0],
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
