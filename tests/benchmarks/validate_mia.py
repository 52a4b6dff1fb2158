"""Does the site's membership-inference audit find leakage where there is some, and only there?

One synthetic site (scikit-learn ``make_classification``: 6,000 rows, 100 standardised features,
10 informative, 20 % of labels randomised) split into 2,000 members (training rows), 2,000
non-members (the audit split) and 2,000 test rows (utility only). The same MLP (100-128-128-1,
Adam, lr 1e-3, expected batch 128) is trained through ``fedward.client.training.train_local``:

* non-DP, for 50 epochs: deliberately overfit (it reaches 100 % training accuracy);
* DP-SGD for 30 epochs at ε ∈ {0.5, 1, 2, 4, 8}, δ = 1e-5, clipping norm 1, the noise multiplier
  from ``fedward.client.accounting.plan_noise_multiplier`` (RDP accountant);
* "broken DP": the ε = 1 run's settings with the noise multiplier set to 0, while ε = 1 is claimed.

Each model is audited with ``fedward.client.mia.audit_site`` (loss attack, offline and online
LiRA with 4 reference models, one-run canary audit with the default count for this size, 2,000
canaries, 95 % confidence). The audit's own models (references, canary model) are trained
exactly like the audited model, at the same fixed sample rate, so the accountant's ε applies to
each of them. Reported per run: the
accountant's ε, the canary lower bound (and the largest bound those canaries can show), every
attack's AUC with its 95 % interval and TPR at 1 % FPR, and the model's test AUROC.

    python -m tests.benchmarks.validate_mia [--seed 0] [--epsilons 0.5 1 2 4 8] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import numpy as np
import torch
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score

from fedward.client.accounting import epsilon_of, plan_noise_multiplier
from fedward.client.mia import SiteAudit, audit_site
from fedward.client.mia_attacks import TrainFn
from fedward.client.training import DPSettings, predict_logits, train_local
from fedward.common.audit_keys import ATTACKS
from fedward.common.learning_config import ModelConfig, TrainingConfig
from fedward.common.models import build_model

N_ROWS, N_FEATURES, N_INFORMATIVE, FLIP_Y = 6000, 100, 10, 0.2
N_MEMBERS = N_NONMEMBERS = 2000
DELTA = 1e-5
CLIP = 1.0
BATCH = 128
SAMPLE_RATE = BATCH / N_MEMBERS
MODEL = ModelConfig(kind="mlp", hidden=[128, 128])
OVERFIT = TrainingConfig(local_epochs=50, batch_size=BATCH, learning_rate=1e-3, optimizer="adam")
DP_TRAINING = TrainingConfig(
    local_epochs=30, batch_size=BATCH, learning_rate=1e-3, optimizer="adam"
)
SHORT = {"loss": "loss", "lira_offline": "LiRA-off", "lira_online": "LiRA-on"}


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": metadata.version("torch"),
        "opacus": metadata.version("opacus"),
        "numpy": metadata.version("numpy"),
        "scipy": metadata.version("scipy"),
    }


def site_rows(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y = make_classification(
        n_samples=N_ROWS,
        n_features=N_FEATURES,
        n_informative=N_INFORMATIVE,
        n_redundant=0,
        flip_y=FLIP_Y,
        random_state=seed,
    )
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    a, b = N_MEMBERS, N_MEMBERS + N_NONMEMBERS
    return {"members": (x[:a], y[:a]), "nonmembers": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}


def train_fn(cfg: TrainingConfig, noise_multiplier: float | None) -> TrainFn:
    """The site's training: non-DP, or DP-SGD at the fixed sample rate the accountant saw."""

    def train(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        model = build_model(MODEL, x.shape[1], seed=seed)
        dp = None
        if noise_multiplier is not None:
            dp = DPSettings(
                noise_multiplier=noise_multiplier,
                max_grad_norm=CLIP,
                sample_rate=SAMPLE_RATE,
                noise_seed=seed + 1,
            )
        xt = torch.as_tensor(x, dtype=torch.float32)
        train_local(model, xt, torch.as_tensor(y, dtype=torch.float32), cfg=cfg, dp=dp, seed=seed)
        return lambda rows: predict_logits(model, torch.as_tensor(rows, dtype=torch.float32))

    return train


def runs(epsilons: Sequence[float]) -> list[dict[str, Any]]:
    """Name, training config, noise multiplier (None: non-DP) and claimed ε of every run."""
    steps = DP_TRAINING.local_epochs * max(1, round(1.0 / SAMPLE_RATE))
    out: list[dict[str, Any]] = [
        {"run": "non-DP (overfit)", "cfg": OVERFIT, "sigma": None, "claimed": None}
    ]
    for eps in epsilons:
        sigma = plan_noise_multiplier(eps, DELTA, SAMPLE_RATE, steps)
        claimed = epsilon_of([(sigma, SAMPLE_RATE, steps)], DELTA)
        out.append({"run": f"DP ε={eps:g}", "cfg": DP_TRAINING, "sigma": sigma, "claimed": claimed})
    sigma_1 = plan_noise_multiplier(1.0, DELTA, SAMPLE_RATE, steps)
    out.append(
        {
            "run": "broken DP (σ=0, claims ε=1)",
            "cfg": DP_TRAINING,
            "sigma": 0.0,
            "claimed": epsilon_of([(sigma_1, SAMPLE_RATE, steps)], DELTA),
        }
    )
    return out


def summarise(audit: SiteAudit) -> dict[str, Any]:
    attacks: dict[str, Any] = {}
    for name, roc in audit.attacks.items():
        attacks[name] = {
            "auc": roc.auc,
            "auc_lo": roc.auc_lo,
            "auc_hi": roc.auc_hi,
            "advantage": roc.advantage,
            **{
                f"tpr_at_fpr_{t.fpr:g}": {"tpr": t.tpr, "lo": t.lo, "hi": t.hi}
                for t in roc.tpr_at_fpr
            },
        }
    c = audit.canary
    canary = None
    if c is not None:
        canary = {
            "m": c.m,
            "k": c.k_plus,
            "guesses": c.guesses,
            "correct": c.correct,
            "epsilon_lb": c.epsilon_lb,
            "epsilon_max": c.epsilon_max,
            "exceeds_claim": c.exceeds_claim,
        }
    return {
        "attacks": attacks,
        "canary": canary,
        "notes": audit.notes,
        "seconds": dict(audit.seconds),
    }


def measure(
    run: dict[str, Any], rows: dict[str, Any], *, n_reference: int, seed: int
) -> dict[str, Any]:
    fn = train_fn(run["cfg"], run["sigma"])
    (xm, ym), (xn, yn), (xt, yt) = rows["members"], rows["nonmembers"], rows["test"]
    started = time.perf_counter()
    target = fn(xm, ym, seed)
    train_s = time.perf_counter() - started
    audit = audit_site(
        target,
        fn,
        xm,
        ym,
        xn,
        yn,
        n_reference=n_reference,
        epsilon_claimed=run["claimed"],
        delta=DELTA,
        seed=seed,
    )
    return {
        "run": run["run"],
        "noise_multiplier": run["sigma"],
        "epochs": run["cfg"].local_epochs,
        "epsilon_accountant": run["claimed"],
        "train_accuracy": float(((target(xm) > 0) == (ym == 1)).mean()),
        "test_auroc": float(roc_auc_score(yt, target(xt))),
        "train_s": round(train_s, 2),
        "audit_s": round(audit.seconds["total"], 2),
        **summarise(audit),
    }


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def print_table(results: list[dict[str, Any]]) -> None:
    head = f"{'run':<28} {'acct ε':>6} {'canary ε≥':>9} {'(max)':>6} {'test AUROC':>10}"
    head += "".join(f" {SHORT[a] + ' AUC [95% CI]':>24}" for a in ATTACKS)
    head += "".join(f" {SHORT[a] + ' TPR@1%':>15}" for a in ATTACKS)
    print(head)
    for r in results:
        c = r["canary"] or {}
        flag = " !" if c.get("exceeds_claim") else ""
        row = f"{r['run']:<28} {_f(r['epsilon_accountant']):>6} "
        row += f"{_f(c.get('epsilon_lb')) + flag:>9} {_f(c.get('epsilon_max')):>6} "
        row += f"{_f(r['test_auroc'], 3):>10}"
        for a in ATTACKS:
            s = r["attacks"].get(a)
            cell = "–" if s is None else f"{s['auc']:.3f} [{s['auc_lo']:.3f}, {s['auc_hi']:.3f}]"
            row += f" {cell:>24}"
        for a in ATTACKS:
            s = r["attacks"].get(a)
            t = None if s is None else s["tpr_at_fpr_0.01"]
            cell = (
                "–"
                if t is None or t["tpr"] is None
                else f"{100 * t['tpr']:.1f}% ≥{100 * t['lo']:.1f}"
            )
            row += f" {cell:>15}"
        print(row)
    print("\n! = the canary lower bound exceeds the accountant's ε (the DP claim is refuted).")
    print("TPR@1%: the attack's TPR at 1% FPR, then its 95% lower confidence limit. At (ε, δ)-DP")
    print(f"no attack exceeds e^ε·1% + δ (ε=1: {100 * (math.e * 0.01 + DELTA):.2f}%).")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.validate_mia", description=__doc__
    )
    parser.add_argument("--seed", type=int, default=0, help="Data, training and audit seed.")
    parser.add_argument(
        "--epsilons", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0], help="DP runs."
    )
    parser.add_argument("--n-reference", type=int, default=4, help="LiRA reference models.")
    parser.add_argument("--json", default=None, help="Write every result here.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    rows = site_rows(args.seed)
    results: dict[str, Any] = {
        "benchmark": "membership-inference audit validation",
        "settings": {
            "seed": args.seed,
            "rows": {"members": N_MEMBERS, "nonmembers": N_NONMEMBERS, "test": N_ROWS - 4000},
            "data": {
                "generator": "sklearn.datasets.make_classification",
                "n_features": N_FEATURES,
                "n_informative": N_INFORMATIVE,
                "flip_y": FLIP_Y,
            },
            "model": MODEL.model_dump(),
            "overfit_training": OVERFIT.model_dump(),
            "dp_training": DP_TRAINING.model_dump(),
            "sample_rate": SAMPLE_RATE,
            "max_grad_norm": CLIP,
            "delta": DELTA,
            "n_reference": args.n_reference,
            "accountant": "rdp",
        },
        "machine": machine_info(),
        "runs": [],
    }
    for run in runs(args.epsilons):
        result = measure(run, rows, n_reference=args.n_reference, seed=args.seed)
        results["runs"].append(result)
        print(
            f"{result['run']}: trained in {result['train_s']} s, audited in {result['audit_s']} s"
        )
    print()
    print_table(results["runs"])
    results["benchmark_s"] = round(time.perf_counter() - started, 1)
    print(f"\nwhole validation: {results['benchmark_s']:.1f} s ({results['machine']})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2, default=str)
    return results


if __name__ == "__main__":
    main()
