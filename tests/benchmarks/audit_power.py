"""How much can a site's canary audit certify, and what does more canaries cost?

The one-run canary audit (Steinke, Nasr & Jagielski 2023) proves a lower bound on ε from how many
canary memberships it guesses right. Its power is limited by the site's size: the number of
canaries m, the guesses it may make, and δ (which is large at small sites and enters the bound
as 2mδ). This measures, per site, with the site's own split and δ:

* ``half pool`` — canaries are flipped copies of real rows, at most half of the site's rows;
* ``default`` — the audit's default: the count ``default_canary_count`` chooses, real canaries
  topped up with synthetic ones (at most one per training row).

and, for each, three training procedures the site might audit: the default DP run (logistic
regression, DP-SGD at ε = 1 over 20 rounds, the planner's σ), the same without DP, and a
deliberately overfit model without DP (MLP 256-256, Adam, batch 16, many epochs). Reported: m
(synthetic canaries and displaced training rows among them), guesses, correct guesses, the ε
lower bound at 95 % confidence, the largest ε the audit could certify (its minimum detectable
leak), the bound and the ceiling the earlier guess rule (k IN and k OUT, fixed grid) gives on the
same canary model's scores, and the seconds the canary model took. Each cell is repeated over
``--repeats`` audit seeds (canary draws and canary models).

Sites: the four bundled heart-disease hospitals and one 5,000-row site of the bundled synthetic
table (its 40,000 rows split into 8 iid sites).

    python -m tests.benchmarks.audit_power [--seed 0] [--repeats 3] [--json FILE] [--sites ...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from unittest import mock

import numpy as np
import torch

from fedward.client import canaries
from fedward.client.accounting import default_delta, epsilon_of, plan_noise_multiplier
from fedward.client.canaries import canary_audit, canary_sources, default_canary_count
from fedward.client.canary_bound import one_run_epsilon_lower_bound
from fedward.client.mia_attacks import TrainFn
from fedward.client.splits import split_for_run
from fedward.client.training import DPSettings, predict_logits, train_local
from fedward.common.datasets.bundled import bundled_federation, load_bundled_site
from fedward.common.learning_config import ModelConfig, TrainingConfig
from fedward.common.preprocessing import SharedTransform
from fedward.common.run_config import RunConfig
from tests.benchmarks.validate_mia import machine_info

CONFIDENCE = 0.95
TARGET_EPSILON = 1.0
EARLIER_GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.25, 0.5)
"""The guess grid before small-site pruning, for the "earlier ceiling" column."""
OVERFIT_MODEL = ModelConfig(kind="mlp", hidden=[256, 256])
OVERFIT_STEPS = 6000
"""The overfit recipe trains for about this many optimiser steps: its epochs follow from the
site's size (20 to 600, the issue's recipe being 60 rounds of 10 epochs)."""
SITES = ("cleveland", "hungary", "switzerland", "va-long-beach", "synthetic-5000")


@dataclass(frozen=True)
class Site:
    name: str
    x_members: np.ndarray
    y_members: np.ndarray
    x_nonmembers: np.ndarray
    y_nonmembers: np.ndarray
    n_rows: int


def load_site(name: str, run: RunConfig) -> Site:
    """Members (training split) and non-members (audit split), as the ClientApp splits them."""
    kwargs: dict[str, Any]
    if name == "synthetic-5000":
        dataset, site, kwargs = "synthetic", "site-1", {"n_sites": 8, "partition": "iid"}
        schema = bundled_federation(dataset, n_sites=8, partition="iid", seed=run.seed).schema
    else:
        dataset, site, kwargs = "heart-disease", name, {}
        schema = bundled_federation(dataset, seed=run.seed).schema
    table = load_bundled_site(dataset, site, seed=run.seed, **kwargs)
    splits = split_for_run(
        table.labels, groups=table.groups, config=run.splits, seed=run.seed, site=site
    )
    transform = SharedTransform.from_schema(schema)

    def rows(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(transform.transform(table.frame.iloc[index]), dtype=np.float64)
        return x, np.asarray(table.labels[index], dtype=np.int64)

    (xm, ym), (xn, yn) = rows(splits.train), rows(splits.audit)
    return Site(name, xm, ym, xn, yn, int(table.n_rows))


@dataclass(frozen=True)
class Procedure:
    """A training procedure the site audits: the canary model is trained exactly this way."""

    name: str
    model: ModelConfig
    training: TrainingConfig
    rounds: int
    noise_multiplier: float | None
    sample_rate: float
    claimed: float | None


def procedures(run: RunConfig, site: Site, delta: float) -> list[Procedure]:
    n = site.y_members.size
    q = min(1.0, run.training.batch_size / n)
    steps = run.rounds * run.training.local_epochs * max(1, round(1.0 / q))
    sigma = plan_noise_multiplier(TARGET_EPSILON, delta, q, steps)
    claimed = epsilon_of([(sigma, q, steps)], delta)
    epochs = min(600, max(20, round(OVERFIT_STEPS / max(1, n // 16))))
    rounds = -(-epochs // 100)  # train_local takes at most 100 epochs per call
    overfit = TrainingConfig(
        local_epochs=-(-epochs // rounds), batch_size=16, learning_rate=1e-3, optimizer="adam"
    )
    overfit_epochs = rounds * overfit.local_epochs
    return [
        Procedure("DP ε=1", run.model, run.training, run.rounds, sigma, q, claimed),
        Procedure("non-DP", run.model, run.training, run.rounds, None, q, None),
        Procedure(f"overfit ({overfit_epochs} ep.)", OVERFIT_MODEL, overfit, rounds, None, q, None),
    ]


def train_fn(proc: Procedure) -> TrainFn:
    """Trains as the site trains: ``rounds`` calls of ``train_local``, DP at the run's fixed q."""

    def train(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        from fedward.common.models import build_model

        model = build_model(proc.model, x.shape[1], seed=seed)
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        for r in range(proc.rounds):
            dp = None
            if proc.noise_multiplier is not None:
                dp = DPSettings(
                    noise_multiplier=proc.noise_multiplier,
                    max_grad_norm=1.0,
                    sample_rate=proc.sample_rate,
                    noise_seed=seed * 1009 + r,
                )
            train_local(model, xt, yt, cfg=proc.training, dp=dp, seed=seed + r)
        return lambda rows: predict_logits(model, torch.as_tensor(rows, dtype=torch.float32))

    return train


def _earlier_grid(m: int) -> list[int]:
    return sorted({max(1, min(m // 2, round(f * m))) for f in EARLIER_GUESS_FRACTIONS})


@lru_cache(maxsize=256)
def earlier_ceiling(m: int, delta: float) -> float:
    """The largest ε the earlier guess rule could show: k IN and k OUT, unpruned grid."""
    grid = _earlier_grid(m)
    alpha = (1.0 - CONFIDENCE) / len(grid)
    return max(one_run_epsilon_lower_bound(m, 2 * k, 2 * k, delta, alpha) for k in grid)


def earlier_bound(scores: np.ndarray, included: np.ndarray, delta: float) -> float:
    """The bound the earlier guess rule gives on the same canaries and the same canary model."""
    m = scores.size
    grid = _earlier_grid(m)
    alpha = (1.0 - CONFIDENCE) / len(grid)
    ranked = included[np.argsort(-scores, kind="stable")]
    return max(
        one_run_epsilon_lower_bound(
            m, 2 * k, int(ranked[:k].sum() + (~ranked[m - k :]).sum()), delta, alpha
        )
        for k in grid
    )


def measure(site: Site, proc: Procedure, variant: str, delta: float, seed: int) -> dict[str, Any]:
    n_mem, n_non = site.y_members.size, site.y_nonmembers.size
    earlier = variant == "half pool"
    if earlier:  # real rows only, at most half of the pool: the audit before synthetic canaries
        m = canary_sources(n_mem, n_non, synthetic=False).total
    else:
        m = default_canary_count(n_mem, n_non, delta, CONFIDENCE)
    src = canary_sources(n_mem, n_non, m, synthetic=not earlier)
    seen: dict[str, np.ndarray] = {}
    original = canaries.one_run_audit

    def record(scores: np.ndarray, included: np.ndarray, **kwargs: Any) -> Any:
        seen["scores"], seen["included"] = np.asarray(scores), np.asarray(included, dtype=bool)
        return original(scores, included, **kwargs)

    started = time.perf_counter()
    # Keep the scores for the earlier rule.
    with mock.patch.object(canaries, "one_run_audit", record):
        audit = canary_audit(
            train_fn(proc),
            site.x_members,
            site.y_members,
            site.x_nonmembers,
            site.y_nonmembers,
            n_canaries=m,
            delta=delta,
            confidence=CONFIDENCE,
            epsilon_claimed=proc.claimed,
            seed=seed,
            synthetic=not earlier,
        )
    seconds = round(time.perf_counter() - started, 2)
    return {
        "site": site.name,
        "rows": site.n_rows,
        "members": n_mem,
        "nonmembers": n_non,
        "delta": delta,
        "procedure": proc.name,
        "epsilon_claimed": proc.claimed,
        "variant": variant,
        "m": audit.m,
        "synthetic": audit.n_synthetic,
        "displaced_members": src.from_members,
        "guesses": audit.guesses,
        "correct": audit.correct,
        "grid": list(audit.grid),
        "epsilon_lb": audit.epsilon_lb,
        "epsilon_max": audit.epsilon_max,
        "earlier_epsilon_lb": earlier_bound(seen["scores"], seen["included"], delta),
        "earlier_epsilon_max": earlier_ceiling(audit.m, delta),
        "seconds": seconds,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'site':<15} {'rows':>5} {'δ':>7} {'procedure':<18} {'canaries':<10} "
        f"{'m (syn/disp)':>13} {'guesses':>7} {'correct':>7} {'ε ≥':>5} {'max ε':>5} "
        f"{'earlier ε ≥':>11} {'earlier max':>11} {'s':>6}"
    )
    print(head)
    for r in results:
        m = f"{r['m']} ({r['synthetic']}/{r['displaced_members']})"
        print(
            f"{r['site']:<15} {r['rows']:>5} {r['delta']:>7.0e} {r['procedure']:<18} "
            f"{r['variant']:<10} {m:>13} {r['guesses']:>7} {r['correct']:>7} "
            f"{r['epsilon_lb']:>5.2f} {r['epsilon_max']:>5.2f} "
            f"{r['earlier_epsilon_lb']:>11.2f} {r['earlier_epsilon_max']:>11.2f} {r['seconds']:>6.1f}"
        )


def print_summary(results: list[dict[str, Any]]) -> None:
    """Mean correct share and ε lower bound (min–max) over the audit seeds of each cell."""
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["site"], r["procedure"], r["variant"]), []).append(r)
    print(
        f"{'site':<15} {'procedure':<18} {'canaries':<10} {'right':>6} "
        f"{'ε ≥ mean (min–max)':>20} {'earlier rule':>20}"
    )
    for (site, proc, variant), rs in cells.items():
        right = np.mean([r["correct"] / r["guesses"] for r in rs])
        lbs = [r["epsilon_lb"] for r in rs]
        lb = f"{np.mean(lbs):.2f} ({min(lbs):.2f}–{max(lbs):.2f})"
        olds = [r["earlier_epsilon_lb"] for r in rs]
        old = f"{np.mean(olds):.2f} ({min(olds):.2f}–{max(olds):.2f})"
        print(f"{site:<15} {proc:<18} {variant:<10} {right:>6.0%} {lb:>20} {old:>20}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.audit_power", description=__doc__
    )
    parser.add_argument("--seed", type=int, default=0, help="Split and training seed.")
    parser.add_argument(
        "--repeats", type=int, default=3, help="Audit seeds (canary draws and canary models)."
    )
    parser.add_argument("--sites", nargs="+", default=list(SITES), choices=SITES)
    parser.add_argument("--json", default=None, help="Write every result here.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    run = RunConfig(seed=args.seed)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for name in args.sites:
        site = load_site(name, run)
        delta = default_delta(site.n_rows)  # the site's lifetime δ, as the ledger sets it
        for proc in procedures(run, site, delta):
            for variant in ("half pool", "default"):
                for repeat in range(args.repeats):
                    r = measure(site, proc, variant, delta, args.seed + repeat)
                    r["repeat"] = repeat
                    results.append(r)
                print(
                    f"{name} / {proc.name} / {variant}: m={r['m']} ({r['synthetic']} synthetic), "
                    f"ε ≥ {[round(x['epsilon_lb'], 2) for x in results[-args.repeats :]]} "
                    f"(max {r['epsilon_max']:.2f})",
                    flush=True,
                )
    print("\nFirst audit seed:")
    print_table([r for r in results if r["repeat"] == 0])
    print(f"\nOver {args.repeats} audit seeds:")
    print_summary(results)
    total = round(time.perf_counter() - started, 1)
    out = {
        "benchmark": "canary audit power",
        "seed": args.seed,
        "confidence": CONFIDENCE,
        "machine": machine_info(),
        "seconds": total,
        "results": results,
    }
    print(f"\nwhole measurement: {total:.1f} s ({out['machine']})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2, default=str)
    return out


if __name__ == "__main__":
    main()
