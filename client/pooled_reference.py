"""The pooled (centralised) reference of a simulation: what the federation would reach if one party
held every site's rows. Simulation only.

A federation's result means little without its ceiling: the same model, transform, splits and
training code on the union of the sites' training splits, for as many epochs as the federation has
rounds × local epochs, and the baseline suite tuned on the pooled splits. Pooling rows is allowed
here only because in a simulation the developer's machine already holds every simulated site's
data; a deployed site never pools, so nothing in the ClientApp or the coordinator calls this.

Each site is opened and split exactly as its ClientApp would (``open_site`` + ``prepare``, with each
site's own split seed), so the pooled test split is the union of the sites' sealed test splits.
Under DP the noise is planned for the run's target ε on the pooled training rows; no ledger is
written because nothing is released from a site.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedward.client.accounting import default_delta, epsilon_of, plan_noise_multiplier
from fedward.client.baselines import FAMILIES, derive_seed, run_suite
from fedward.client.site import PreparedSite, open_site, prepare
from fedward.client.training import DPSettings, dp_steps, predict_scores, train_local
from fedward.common.metrics import metric_panel, paired_auroc_difference
from fedward.common.models import build_model, select_device
from fedward.common.preprocessing import SharedTransform
from fedward.common.run_config import RunConfig, run_schema

SPLITS = ("train", "tune", "test")


def open_simulated_sites(
    run: RunConfig, sim_site_configs: list[str], *, n_sites: int
) -> list[PreparedSite]:
    """Every simulated site, opened and split as its ClientApp opens and splits it."""
    schema = run_schema(run)
    return [
        prepare(
            open_site({"partition-id": i, "num-partitions": n_sites}, run, sim_site_configs),
            run,
            schema,
        )
        for i in range(n_sites)
    ]


def _pooled(
    sites: Sequence[PreparedSite], transform: SharedTransform
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in SPLITS:
        xs, ys = [], []
        for prepared in sites:
            frame, labels = prepared.rows(split)
            xs.append(transform.transform(frame))
            ys.append(np.asarray(labels, dtype=np.int64))
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    return out


def pooled_reference(
    run: RunConfig,
    sim_site_configs: list[str],
    transform_json: dict[str, Any],
    *,
    n_sites: int,
    baseline_budget: int,
    search: str,
    families: Sequence[str] = FAMILIES,
) -> dict[str, Any]:
    """Train the run's model and tune the baseline suite on the pooled splits; JSON-able panels.

    ``transform_json`` is the run's frozen ``SharedTransform.to_dict()``. Each baseline family's
    entry carries its paired bootstrap AUROC difference to the deep model on the pooled test split.
    """
    sites = open_simulated_sites(run, sim_site_configs, n_sites=n_sites)
    transform = SharedTransform.from_dict(transform_json)
    data = _pooled(sites, transform)
    (x_train, y_train), (x_tune, y_tune), (x_test, y_test) = (data[s] for s in SPLITS)
    n_train = int(y_train.size)
    ev = run.evaluation

    def panel(scores: np.ndarray, *parts: object) -> dict[str, float | None]:
        return metric_panel(
            y_test,
            scores,
            n_bootstrap=ev.bootstrap,
            confidence=ev.confidence,
            seed=derive_seed(run.seed, "pooled", *parts, "bootstrap"),
        )

    # (a) the run's model, trained centrally for the federation's total number of epochs.
    epochs = run.rounds * run.training.local_epochs
    cfg = run.training.model_copy(update={"local_epochs": epochs})
    model = build_model(
        run.model, transform.n_outputs, sites[0].site.schema.image_shape, seed=run.seed
    )
    privacy: dict[str, Any] = {
        "dp": bool(run.privacy.dp),
        **dict.fromkeys(
            ("epsilon", "delta", "noise_multiplier", "sample_rate", "dp_steps", "max_grad_norm")
        ),
    }
    dp: DPSettings | None = None
    if run.privacy.dp:
        q = min(1.0, cfg.batch_size / n_train)
        steps = dp_steps(q, epochs)
        delta = run.privacy.delta if run.privacy.delta is not None else default_delta(n_train)
        sigma = plan_noise_multiplier(
            run.privacy.target_epsilon, delta, q, steps, accountant=run.privacy.accountant
        )
        dp = DPSettings(
            noise_multiplier=sigma,
            max_grad_norm=run.privacy.max_grad_norm,
            sample_rate=q,
            noise_seed=derive_seed(run.seed, "pooled", "noise"),  # simulation: repeatable
        )
        privacy.update(
            epsilon=epsilon_of([(sigma, q, steps)], delta, run.privacy.accountant),
            delta=delta,
            noise_multiplier=sigma,
            sample_rate=q,
            dp_steps=steps,
            max_grad_norm=run.privacy.max_grad_norm,
        )
    started = time.perf_counter()
    result = train_local(
        model,
        torch.from_numpy(x_train),
        torch.from_numpy(y_train.astype(np.float32)),
        cfg=cfg,
        dp=dp,
        seed=derive_seed(run.seed, "pooled", "train"),
        device=select_device(),
    )
    train_seconds = time.perf_counter() - started
    model_scores = predict_scores(model, torch.from_numpy(x_test))

    # (b) the baseline suite on the same pooled splits, with the same budget per family.
    started = time.perf_counter()
    results = run_suite(
        x_train,
        y_train,
        x_tune,
        y_tune,
        x_test,
        families=families,
        budget=baseline_budget,
        search=search,
        seed=run.seed,
    )
    suite_seconds = time.perf_counter() - started
    baselines: dict[str, Any] = {}
    for r in results:
        entry: dict[str, Any] = r.public()
        entry["test"] = None
        entry["auroc_minus_model"] = None
        if r.test_scores is not None:
            entry["test"] = panel(r.test_scores, r.family)
            entry["auroc_minus_model"] = paired_auroc_difference(
                y_test,
                r.test_scores,
                model_scores,
                n_bootstrap=ev.bootstrap,
                confidence=ev.confidence,
                seed=derive_seed(run.seed, "pooled", r.family, "difference"),
            )
        baselines[r.family] = entry
    return {
        "simulation_only": True,
        "sites": [p.site.name for p in sites],
        "n_train": n_train,
        "n_tune": int(y_tune.size),
        "n_test": int(y_test.size),
        "model": {
            "kind": run.model.kind,
            "epochs": epochs,
            "steps": int(result.steps),
            "train_seconds": round(train_seconds, 3),
            **privacy,
            "test": panel(model_scores, "model"),
        },
        "baselines": {
            "budget": baseline_budget,
            "search": search,
            "seconds": round(suite_seconds, 3),
            "families": baselines,
        },
    }
