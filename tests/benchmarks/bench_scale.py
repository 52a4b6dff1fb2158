"""Scale: a federation of 10, 30 and 100 simulated sites, and the memory each extra site costs.

Every run is ``fedward simulate --dataset synthetic --sites N --partition dirichlet --rounds 5``
(DP-SGD at the default ε, logistic regression, baselines and the membership audit off, so only the
federation is measured) as a subprocess in its own session. The synthetic table has 40,000 rows at
every N, so the total training work stays the same and what grows with N is the per-site cost; its
Dirichlet partition gives every site at least 200 rows and both classes.

Memory is the whole process tree: the simulate process and every process Ray starts for it (GCS,
raylet, dashboard and log monitors, the worker actors), found by session id and by parent, sampled
every 0.2 s from ``/proc``. The peak of the summed PSS (proportional set size: a page shared by k
processes counts 1/k to each, so Ray's shared libraries and object store are not counted once per
worker) is the figure reported, with the summed RSS (which does count shared pages repeatedly)
beside it. Growth per extra site is the least-squares slope of peak PSS against N, and the
two-point slope between the smallest and largest N. Any process of the tree still alive when the
command has returned is stopped and reported.

    python -m tests.benchmarks.bench_scale [--sites 10,30,100] [--rounds 5] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import psutil

from tests.benchmarks.bench_foundation import (
    CONTENDED_SHARE,
    REPO_ROOT,
    ForeignCpu,
    _round_timing,
    fedward_executable,
)
from tests.benchmarks.report import print_rows, row

SITES = (10, 30, 100)
ROUNDS = 5
QUICK_SITES = (4, 8)
QUICK_ROUNDS = 2
SEED = 42
# The target: each extra site costs less than this much memory at the peak.
TARGET_MB_PER_SITE = 50.0
SAMPLE_S = 0.2
# Finding new members means reading every process's stat; memory is read more often than that.
SCAN_S = 1.0
# A run that has not finished after this long is stopped and reported as not completed.
RUN_TIMEOUT_S = 3600.0
# Ray's services get this long to stop on their own after the simulate process has exited.
EXIT_GRACE_S = 15.0

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# ---- the process tree and its memory ----------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent, session, start time in clock ticks) of a process, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; the fields follow the last ')'.
    rest = raw[raw.rindex(b")") + 2 :].split()
    return int(rest[1]), int(rest[3]), int(rest[19])


def _memory_kb(pid: int) -> tuple[int, int] | None:
    """(PSS, RSS) in kB; RSS from statm for both where smaps_rollup cannot be read."""
    try:
        pss = rss = None
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
        if pss is not None and rss is not None:
            return pss, rss
    except (OSError, ValueError):
        pass
    try:
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KB
    except (OSError, ValueError, IndexError):
        return None
    return resident, resident


def _kind(pid: int) -> str:
    """Which part of the federation a process is, from its command line."""
    try:
        cmd = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return "gone"
    if "default_worker.py" in cmd:
        return "ray workers (site actors)"
    if "flwr-simulation" in cmd:
        return "flwr-simulation (coordinator)"
    if "flower-superlink" in cmd or "flower-superexec" in cmd or "flwr run" in cmd:
        return "superlink, superexec, flwr run"
    if "fedward" in cmd and "simulate" in cmd:
        return "simulate (command)"
    return "ray services"


@dataclass
class _Member:
    start: int
    kind: str
    peak_pss_kb: int = 0


@dataclass
class TreeMemory:
    """Samples the summed memory of a process tree until stopped; see the module docstring.

    Members are the root's session (the root is started with a session of its own, which Ray's
    processes inherit) and the root's descendants; a member is known by pid and start time, so a
    reused pid is never mistaken for it.
    """

    root: int
    interval: float = SAMPLE_S
    peak_pss_kb: int = 0
    peak_rss_kb: int = 0
    peak_processes: int = 0
    peak_at_s: float = 0.0
    breakdown_at_peak_kb: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[float, float, int]] = field(default_factory=list)
    members: dict[int, _Member] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def __enter__(self) -> TreeMemory:
        self._started = time.monotonic()
        info = _stat(self.root)
        if info is not None:
            self.members[self.root] = _Member(start=info[2], kind=_kind(self.root))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _scan(self) -> None:
        """Add processes of the root's session, and descendants of known members."""
        parents: dict[int, tuple[int, int, int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                info = _stat(int(entry))
                if info is not None:
                    parents[int(entry)] = info
        known = {
            pid for pid, m in self.members.items() if parents.get(pid, (0, 0, -1))[2] == m.start
        }
        grew = True
        while grew:
            grew = False
            for pid, (ppid, sid, _) in parents.items():
                if pid not in known and (sid == self.root or ppid in known):
                    known.add(pid)
                    grew = True
        for pid in known:
            info = parents.get(pid)
            if info is None:
                continue
            member = self.members.get(pid)
            if member is None or member.start != info[2]:
                self.members[pid] = _Member(start=info[2], kind=_kind(pid))

    def _sample(self) -> None:
        pss = rss = count = 0
        by_kind: dict[str, int] = {}
        for pid, member in list(self.members.items()):
            info = _stat(pid)
            if info is None or info[2] != member.start:
                continue
            memory = _memory_kb(pid)
            if memory is None:
                continue
            pss += memory[0]
            rss += memory[1]
            count += 1
            member.peak_pss_kb = max(member.peak_pss_kb, memory[0])
            by_kind[member.kind] = by_kind.get(member.kind, 0) + memory[0]
        now = round(time.monotonic() - self._started, 2)
        if pss > self.peak_pss_kb:
            self.peak_pss_kb, self.peak_at_s, self.breakdown_at_peak_kb = pss, now, by_kind
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_processes = max(self.peak_processes, count)
        self.timeline.append((now, round(pss / 1024, 1), count))

    def _run(self) -> None:
        last_scan = -SCAN_S
        while True:
            if time.monotonic() - last_scan >= SCAN_S:
                self._scan()
                last_scan = time.monotonic()
            self._sample()
            if self._stop.wait(self.interval):
                return

    def survivors(self) -> list[int]:
        """Members still alive (same pid and start time)."""
        self._scan()
        alive = []
        for pid, member in self.members.items():
            info = _stat(pid)
            if info is not None and info[2] == member.start and pid != os.getpid():
                alive.append(pid)
        return sorted(alive)

    def wait_for_exit(self, grace_s: float) -> list[int]:
        """Members still alive after ``grace_s``: Ray's services stop a moment after the driver."""
        deadline = time.monotonic() + grace_s
        while (alive := self.survivors()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return alive


def stop_processes(pids: Sequence[int], grace_s: float = 10.0) -> list[int]:
    """SIGTERM these (our own) processes, SIGKILL what is left after ``grace_s``; returns killed."""
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            procs.append(proc)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in alive]


# ---- one federation ----------------------------------------------------------------------------


def _completion(run_out: Path) -> dict[str, Any]:
    """Rounds in metrics.json, and how many sites trained in the worst round."""
    folders = sorted(p.parent for p in run_out.glob("*/metrics.json"))
    if len(folders) != 1:
        return {"rounds_completed": 0, "min_sites_trained": 0, "run_folder": None}
    folder = folders[0]
    metrics = json.loads((folder / "metrics.json").read_text())
    train = metrics.get("train") or []
    trained = [len(r.get("sites") or {}) for r in train]
    return {
        "rounds_completed": len({int(r["round"]) for r in train}),
        "min_sites_trained": min(trained) if trained else 0,
        "federation_s": float(metrics["elapsed_s"]) if "elapsed_s" in metrics else None,
        "run_folder": str(folder),
        **_round_timing(folder / "progress.jsonl"),
    }


def run_federation(n_sites: int, *, rounds: int, seed: int, out: Path) -> dict[str, Any]:
    """One ``fedward simulate`` of ``n_sites`` synthetic sites; completion, times and memory."""
    run_out = out / f"scale-{n_sites}"
    run_out.mkdir(parents=True, exist_ok=True)
    cmd = [
        fedward_executable(),
        "simulate",
        "--dataset",
        "synthetic",
        "--sites",
        str(n_sites),
        "--partition",
        "dirichlet",
        "--rounds",
        str(rounds),
        "--seed",
        str(seed),
        "--no-baselines",
        "--no-audit",
        "--out",
        str(run_out),
    ]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    log = run_out / "console.log"
    timed_out = False
    with log.open("w", encoding="utf-8") as fh, ForeignCpu() as foreign:
        started = time.perf_counter()
        # A session of its own: every process Ray starts for this run can be found by it.
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        memory = TreeMemory(proc.pid)
        try:
            with memory:
                try:
                    returncode = proc.wait(timeout=RUN_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    proc.send_signal(signal.SIGTERM)
                    returncode = proc.wait()
            wall = time.perf_counter() - started
        finally:
            # Interrupted or not, nothing this run started may outlive it.
            leftover = memory.wait_for_exit(EXIT_GRACE_S)
            killed = (
                stop_processes([proc.pid, *leftover]) if leftover or proc.poll() is None else []
            )
    done = _completion(run_out)
    completed = (
        returncode == 0
        and not timed_out
        and done["rounds_completed"] == rounds
        and done["min_sites_trained"] == n_sites
    )
    result: dict[str, Any] = {
        "sites": n_sites,
        "command": shlex.join(["fedward", *cmd[1:]]),
        "returncode": returncode,
        "timed_out": timed_out,
        "completed": completed,
        "wall_s": round(wall, 2),
        **done,
        "peak_mb": round(memory.peak_pss_kb / 1024, 1),
        "peak_rss_mb": round(memory.peak_rss_kb / 1024, 1),
        "peak_at_s": memory.peak_at_s,
        "peak_breakdown_mb": {
            k: round(v / 1024, 1) for k, v in sorted(memory.breakdown_at_peak_kb.items())
        },
        "peak_processes": memory.peak_processes,
        "processes_seen": len(memory.members),
        "per_process_peak_mb": [
            {"kind": m.kind, "pid": pid, "peak_mb": round(m.peak_pss_kb / 1024, 1)}
            for pid, m in sorted(memory.members.items(), key=lambda kv: -kv[1].peak_pss_kb)[:12]
        ],
        # PSS every few seconds: enough to see whether memory climbs round after round.
        "timeline_mb": [(t, mb, n) for t, mb, n in memory.timeline[:: max(1, int(2 / SAMPLE_S))]],
        "left_running_after_exit": leftover,
        "killed": killed,
        "foreign_cpu_share": round(foreign.share, 3),
        "contended": foreign.share > CONTENDED_SHARE,
    }
    if not completed:
        result["log_tail"] = log.read_text(encoding="utf-8", errors="replace")[-4000:]
    return result


# ---- the benchmark -----------------------------------------------------------------------------


def growth(results: dict[int, dict[str, Any]]) -> dict[str, float | None]:
    """MB per extra site: least-squares slope over every N, and between the smallest and largest."""
    points = sorted((n, r["peak_mb"]) for n, r in results.items())
    if len(points) < 2:
        return {"slope_mb_per_site": None, "endpoints_mb_per_site": None, "intercept_mb": None}
    n = np.array([p[0] for p in points], dtype=float)
    mb = np.array([p[1] for p in points], dtype=float)
    slope, intercept = np.polyfit(n, mb, 1)
    return {
        "slope_mb_per_site": round(float(slope), 2),
        "endpoints_mb_per_site": round(float((mb[-1] - mb[0]) / (n[-1] - n[0])), 2),
        "intercept_mb": round(float(intercept), 1),
    }


def rows(
    results: dict[int, dict[str, Any]], rounds: int, fit: dict[str, Any]
) -> list[dict[str, Any]]:
    comparison = f"synthetic, Dirichlet sites, {rounds} DP rounds"
    out: list[dict[str, Any]] = []
    for n, r in sorted(results.items()):
        busy = " (machine busy)" if r["contended"] else ""
        out.append(row(comparison, f"peak memory (PSS, whole tree), {n} sites", r["peak_mb"], "MB"))
        out.append(row(comparison, f"wall time, {n} sites" + busy, r["wall_s"], "s"))
        if r.get("federation_s") is not None:
            out.append(
                row(comparison, f"federation time, {n} sites" + busy, r["federation_s"], "s")
            )
    largest = max(results)
    r = results[largest]
    out.append(
        row(
            comparison,
            f"{largest} sites: rounds completed with every site trained",
            r["rounds_completed"] if r["min_sites_trained"] == largest else 0,
            "rounds",
            f"completes ({rounds} of {rounds})",
            bool(r["completed"]),
        )
    )
    slope = fit["slope_mb_per_site"]
    if slope is not None:
        target = f"< {TARGET_MB_PER_SITE:g} MB"
        ns = sorted(results)
        out.append(
            row(
                comparison,
                f"memory per extra site (least-squares slope, N = {', '.join(map(str, ns))})",
                slope,
                "MB",
                target,
                slope < TARGET_MB_PER_SITE,
            )
        )
        endpoints = fit["endpoints_mb_per_site"]
        out.append(
            row(
                comparison,
                f"memory per extra site ({ns[0]} → {ns[-1]} sites)",
                endpoints,
                "MB",
                target,
                endpoints < TARGET_MB_PER_SITE,
            )
        )
    return out


def measure(
    *,
    quick: bool = False,
    sites: Sequence[int] | None = None,
    rounds: int | None = None,
    seed: int = SEED,
    out: Path | None = None,
) -> dict[str, Any]:
    """Run each federation size in turn; peaks, times, completion and growth per extra site."""
    counts = tuple(sites) if sites else (QUICK_SITES if quick else SITES)
    n_rounds = rounds if rounds is not None else (QUICK_ROUNDS if quick else ROUNDS)
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fedward-bench-scale-") as tmp:
        folder = out or Path(tmp)
        for n in counts:
            results[n] = run_federation(n, rounds=n_rounds, seed=seed, out=folder)
    fit = growth(results)
    return {
        "name": "scale",
        "setup": {
            "dataset": "synthetic",
            "partition": "dirichlet",
            "sites": list(counts),
            "rounds": n_rounds,
            "seed": seed,
            "dp": True,
            "model": "logistic",
            "baselines": False,
            "audit": False,
            "memory": f"summed PSS of the process tree, sampled every {SAMPLE_S:g} s",
            "cores": os.cpu_count(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "results": {**{str(n): r for n, r in results.items()}, "growth": fit},
        "rows": rows(results, n_rounds, fit),
    }


def _parse_sites(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from exc
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"site counts must be positive: {text}")
    return counts


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sites",
        type=_parse_sites,
        default=None,
        help=f"Comma-separated site counts (default {','.join(map(str, SITES))}).",
    )
    parser.add_argument("--rounds", type=int, default=None, help=f"Default {ROUNDS}.")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{','.join(map(str, QUICK_SITES))} sites, {QUICK_ROUNDS} rounds: a smoke run.",
    )
    parser.add_argument("--out", type=Path, default=None, help="Keep the run folders here.")
    parser.add_argument("--json", type=Path, default=None, help="Write every result here.")
    args = parser.parse_args(argv)
    result = measure(
        quick=args.quick, sites=args.sites, rounds=args.rounds, seed=args.seed, out=args.out
    )
    print_rows(result["rows"])
    for n, r in result["results"].items():
        if n != "growth" and not r["completed"]:
            print(
                f"\n{n} sites did not complete (exit {r['returncode']}):\n{r.get('log_tail', '')}"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(
        0 if all(r["completed"] for n, r in outcome["results"].items() if n != "growth") else 1
    )
