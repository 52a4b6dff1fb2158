"""Where a round's CPU goes: a whole federation profiled with pyinstrument, in one process.

The real coordinator and the real ClientApp behind an in-process grid, four heart-disease sites
with their own site files and ledgers on disk (as deployed sites have), DP logistic regression,
baselines and audit off. In a deployment every message is handled by a fresh ClientApp process
(forked from a launcher that has imported torch, Opacus and fedward, but computed nothing), so by
default every in-process cache of fedward's is emptied before each message: the profile then shows
what a deployed site pays per message, not what a warm simulation actor pays. ``--warm`` keeps the
caches (the simulation engine's case).

    python -m tests.benchmarks.profile_site [--rounds 5] [--warm] [--html profile.html]

Prints the time per message type at the sites, the coordinator's share, and pyinstrument's call
tree of the whole run.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from flwr.app import Context, Message
from flwr.serverapp import Grid
from pyinstrument import Profiler

from fedward.client.app import app
from fedward.common.datasets.bundled import write_site_files
from fedward.common.run_config import RunConfig
from fedward.server.app import coordinate
from fedward.server.coordinator_settings import CoordinatorSettings
from tests.server.loopback import LoopbackGrid, server_context


def fedward_caches() -> list[Any]:
    """Every ``functools.lru_cache`` of a fedward module: what a fresh process starts without."""
    with warnings.catch_warnings():  # touching some torch objects warns of deprecations
        warnings.simplefilter("ignore")
        return [
            obj
            for obj in gc.get_objects()
            if isinstance(obj, functools._lru_cache_wrapper)
            and getattr(obj, "__module__", "").startswith("fedward.")
        ]


class TimedApp:
    """The site's ClientApp, timed per message type, optionally cold for every message."""

    def __init__(self, *, cold: bool) -> None:
        self.cold = cold
        self.seconds: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        # Found once (a scan of every object costs more than a message); modules imported later
        # by a handler are caught by the second scan, after the first message.
        self._caches = fedward_caches()
        self._rescanned = False

    def __call__(self, msg: Message, context: Context) -> Message:
        if self.cold:
            for cache in self._caches:
                cache.cache_clear()
        started = time.perf_counter()
        reply = app(msg, context)
        if not self._rescanned:
            self._caches, self._rescanned = fedward_caches(), True
        kind = msg.metadata.message_type
        self.seconds[kind] += time.perf_counter() - started
        self.count[kind] += 1
        return reply


def profile(rounds: int, *, cold: bool, folder: Path) -> tuple[Profiler, TimedApp, float]:
    run = RunConfig.model_validate(
        {"rounds": rounds, "baselines": {"enabled": False}, "audit": {"enabled": False}}
    )
    site_configs = write_site_files("heart-disease", folder / "sites", seed=3)
    timed = TimedApp(cold=cold)
    grid = LoopbackGrid(timed, len(site_configs))
    for node, cfg in zip(grid.nodes, site_configs, strict=True):
        grid.contexts[node].node_config = {"site-config": str(cfg)}
    settings = CoordinatorSettings(
        run=run,
        run_dir=str(folder / "run"),
        coordinator_state_dir=str(folder / "coordinator"),
    )
    logging.getLogger("flwr").setLevel(logging.WARNING)
    profiler = Profiler(interval=0.001)
    started = time.perf_counter()
    with profiler:
        # The loopback grid implements only what the coordinator calls of Flower's abstract Grid.
        coordinate(cast(Grid, grid), server_context(), settings)
    return profiler, timed, time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warm", action="store_true", help="Keep caches between messages.")
    parser.add_argument("--html", type=Path, default=None, help="Write pyinstrument's HTML here.")
    parser.add_argument("--json", type=Path, default=None, help="Write the per-message times.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fedward-profile-") as tmp:
        profiler, timed, total = profile(args.rounds, cold=not args.warm, folder=Path(tmp))
    sites = sum(timed.seconds.values())
    summary = {
        "rounds": args.rounds,
        "cold": not args.warm,
        "total_s": round(total, 3),
        "sites_s": round(sites, 3),
        "coordinator_s": round(total - sites, 3),
        "per_message_s": {
            k: round(timed.seconds[k] / timed.count[k], 4) for k in sorted(timed.seconds)
        },
        "messages": dict(timed.count),
    }
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    print(json.dumps(summary, indent=2))
    if args.html:
        args.html.write_text(profiler.output_html(), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


if __name__ == "__main__":
    main()
