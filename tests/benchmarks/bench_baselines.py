"""How long does the baseline suite take at each site, and how good are the families it tunes?

Every site runs all six baseline families (``fedward.client.baselines``) with the same tuning budget
(20 configurations per family by default) on its own train/tune splits, after the run's frozen
shared transform from the schema, and scores the chosen model on its sealed test split with the
same metric panel as the deep model. Sites are opened exactly as the ClientApp opens them
(``open_site`` + ``prepare``) and run serially in one process, as a site process would (one thread).

Datasets: the four heart-disease hospitals (natural split) and breast cancer split into 5 IID sites.
Reported per dataset: wall time per site and in total, time per family summed over the sites, and
each family's test AUROC at each site.

    python -m tests.benchmarks.bench_baselines [--budget 20] [--search random] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np

from fedward.client.baselines import FAMILIES, run_suite
from fedward.client.site import open_site, prepare
from fedward.common.metrics import metric_panel
from fedward.common.preprocessing import SharedTransform
from fedward.common.run_config import RunConfig, run_schema

DATASETS: dict[str, dict[str, Any]] = {
    "heart-disease": {"dataset": "heart-disease", "partition": "natural", "n_sites": None},
    "breast-cancer": {"dataset": "breast-cancer", "partition": "iid", "n_sites": 5},
}
SHORT = {
    "logistic_regression": "LR",
    "random_forest": "RF",
    "knn": "kNN",
    "naive_bayes": "NB",
    "svm": "SVM",
    "hist_gradient_boosting": "HGB",
}


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "scikit-learn": metadata.version("scikit-learn"),
        "numpy": metadata.version("numpy"),
    }


def measure_dataset(name: str, *, budget: int, search: str, seed: int) -> dict[str, Any]:
    task = DATASETS[name]
    run = RunConfig.model_validate({"seed": seed, "task": task})
    schema = run_schema(run)
    transform = SharedTransform.from_schema(schema)
    n_sites = task["n_sites"] or 4
    sites: list[dict[str, Any]] = []
    for index in range(n_sites):
        node = {"partition-id": index, "num-partitions": n_sites}
        prepared = prepare(open_site(node, run, []), run, schema)
        x = {s: transform.transform(prepared.rows(s)[0]) for s in ("train", "tune", "test")}
        y = {s: np.asarray(prepared.rows(s)[1]) for s in ("train", "tune", "test")}
        started = time.perf_counter()
        results = run_suite(
            x["train"],
            y["train"],
            x["tune"],
            y["tune"],
            x["test"],
            budget=budget,
            search=search,
            seed=run.seed,
        )
        wall = time.perf_counter() - started
        families: dict[str, Any] = {}
        for r in results:
            entry = r.public()
            entry["test_auroc"] = None
            if r.test_scores is not None:
                panel = metric_panel(
                    y["test"], r.test_scores, n_bootstrap=0, confidence=0.95, seed=0
                )
                entry["test_auroc"] = panel["auroc"]
            families[r.family] = entry
        sites.append(
            {
                "site": prepared.site.name,
                "n": {s: int(y[s].size) for s in y},
                "wall_s": round(wall, 3),
                "families": families,
            }
        )
    per_family_s = {
        f: round(sum(s["families"][f]["fit_seconds"] for s in sites), 3) for f in FAMILIES
    }
    mean_auroc = {}
    for f in FAMILIES:
        values = [s["families"][f]["test_auroc"] for s in sites]
        defined = [v for v in values if v is not None]
        mean_auroc[f] = float(np.mean(defined)) if defined else None
    return {
        "dataset": name,
        "task": task,
        "sites": sites,
        "total_s": round(sum(s["wall_s"] for s in sites), 3),
        "per_family_s": per_family_s,
        "mean_test_auroc": mean_auroc,
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def print_dataset(result: dict[str, Any]) -> None:
    fams = list(FAMILIES)
    print(f"\n{result['dataset']}: {len(result['sites'])} sites")
    header = f"{'site':<15} {'train':>5} {'tune':>4} {'test':>4} {'wall s':>7}"
    print(header + "".join(f" {SHORT[f] + ' s':>7}" for f in fams))
    for s in result["sites"]:
        row = f"{s['site']:<15} {s['n']['train']:>5} {s['n']['tune']:>4} {s['n']['test']:>4} "
        row += f"{s['wall_s']:>7.2f}"
        row += "".join(f" {s['families'][f]['fit_seconds']:>7.2f}" for f in fams)
        print(row)
    print(
        f"{'total':<15} {'':>5} {'':>4} {'':>4} {result['total_s']:>7.2f}"
        + "".join(f" {result['per_family_s'][f]:>7.2f}" for f in fams)
    )
    print(f"\ntest AUROC ({result['dataset']})")
    print(f"{'site':<15}" + "".join(f" {SHORT[f]:>6}" for f in fams))
    for s in result["sites"]:
        print(
            f"{s['site']:<15}"
            + "".join(f" {_fmt(s['families'][f]['test_auroc']):>6}" for f in fams)
        )
    print(f"{'mean':<15}" + "".join(f" {_fmt(result['mean_test_auroc'][f]):>6}" for f in fams))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench_baselines", description=__doc__
    )
    parser.add_argument("--budget", type=int, default=20, help="Configurations per family.")
    parser.add_argument("--search", choices=("random", "grid"), default="random")
    parser.add_argument("--seed", type=int, default=42, help="The run seed (splits and search).")
    parser.add_argument("--json", default=None, help="Write every result here.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "baseline suite per site",
        "settings": {"budget": args.budget, "search": args.search, "seed": args.seed},
        "machine": machine_info(),
        "datasets": {},
    }
    for name in DATASETS:
        result = measure_dataset(name, budget=args.budget, search=args.search, seed=args.seed)
        results["datasets"][name] = result
        print_dataset(result)
    results["benchmark_s"] = round(time.perf_counter() - started, 1)
    print(f"\nwhole benchmark: {results['benchmark_s']:.1f} s ({results['machine']})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
