"""The site's evaluation handlers: the run's model on the tune or the sealed test split, and the
scikit-learn baselines against it.

One panel code path (``scorer_panel``) for the run's model and every baseline, so their figures are
comparable; every rate whose implied counts fall under the minimum cell is left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Context, Message

from fedward.client.reply_encoding import SiteReply
from fedward.client.reply_fields import NON_DP_OUTPUTS
from fedward.client.request import Request, config_json, read_sealed_once, request_from_message
from fedward.client.seeds import derive_seed
from fedward.client.training import predict_scores
from fedward.common.errors import MessageError, PolicyError, SiteDataError
from fedward.common.evaluation_config import BASELINE_FAMILIES
from fedward.common.learning_config import ModelConfig
from fedward.common.metrics import metric_panel
from fedward.common.models import build_model
from fedward.common.protocol import (
    ARRAYS_FEDERATED_LOGISTIC,
    BASELINE_PREFIX,
    CONFIG,
    FEDERATED_LOGISTIC,
    KEY_BASELINES,
    KEY_SPLIT,
)
from fedward.common.score_histograms import score_histogram
from fedward.common.site_messages import count_slot


def suppress_implied_counts(
    panel: dict[str, Any], y: np.ndarray, scores: np.ndarray, min_cell: int
) -> None:
    """Leave out every rate whose counts would fall under the minimum cell.

    Prevalence x n gives the class counts, accuracy x n the errors, and accuracy with balanced
    accuracy the whole confusion matrix: each is sent only when every count it implies is 0 or
    at least ``min_cell`` (the egress guard checks the same on the way out).
    """
    n = len(y)
    n_pos = int(y.sum())
    if not (count_slot(n_pos, min_cell) and count_slot(n - n_pos, min_cell)):
        panel["prevalence"] = None
    errors = int(((scores >= 0.5) != (y == 1)).sum())
    if not (count_slot(errors, min_cell) and count_slot(n - errors, min_cell)):
        panel["accuracy"] = None  # x n it would name the errors (or the correct rows)
    pred = scores >= 0.5
    tp = int((pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    cells = (tp, n_pos - tp, tn, n - n_pos - tn)
    if panel.get("accuracy") is not None and not all(count_slot(c, min_cell) for c in cells):
        # With accuracy, n and prevalence, balanced accuracy solves the confusion matrix.
        panel["balanced_accuracy"] = None
    if n < min_cell:
        for key in list(panel):
            if key != "n":
                panel[key] = None


def scorer_panel(
    req: Request, y: np.ndarray, scores: np.ndarray, tag: str
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """The metric panel, its undefined metrics and the coarsened score histogram of one scorer.

    One code path for the run's model and every baseline, so their figures are comparable.
    """
    ev = req.run.evaluation
    panel = metric_panel(
        y,
        scores,
        n_bootstrap=ev.bootstrap,
        confidence=ev.confidence,
        seed=derive_seed(req.run.seed, req.site.name, tag, "bootstrap"),
    )
    suppress_implied_counts(panel, y, scores, req.min_cell)
    undefined = sorted(k for k, v in panel.items() if v is None)
    hist = score_histogram(y, scores, ev.histogram_bins).coarsen(req.min_cell).to_record()
    return panel, undefined, hist


def evaluate(msg: Message, context: Context) -> SiteReply:
    """Metric panel and a coarsened score histogram on the tune split, or once on the sealed test split."""
    req = request_from_message(msg, context)
    site = req.site
    split = str(req.cfg.get(KEY_SPLIT, "tune"))
    if split not in ("tune", "test"):
        raise SiteDataError(site.name, f"evaluation of split '{split}' is not allowed").publicly(
            "split-not-allowed"
        )
    if split == "test":
        read_sealed_once(req, context, "test")

    transform = req.transform()
    model = req.model(transform)
    x, y = req.features(transform, split)
    scores = predict_scores(model, x)
    min_cell = req.min_cell
    panel, undefined, hist = scorer_panel(req, y, scores, split)
    metrics = {k: float(v) for k, v in panel.items() if v is not None and k != "n"}
    metrics["num-examples"] = float(len(y))
    info: dict[str, Any] = {
        "split": split,
        "undefined_metrics": undefined,
        "non_dp_outputs": [
            NON_DP_OUTPUTS[f"panel-{split}"],
            NON_DP_OUTPUTS[f"histogram-{split}"],
            NON_DP_OUTPUTS[f"rows-{split}"],
        ],
    }
    info.update({f"hist_{k}": v for k, v in hist.items()})
    return SiteReply(site.name, info, min_cell, metrics=metrics)


def difference_fields(key: str, diff: Mapping[str, float | None]) -> dict[str, float]:
    return {
        f"{key}diff_auroc{'' if name == 'difference' else '_' + name}": float(value)
        for name, value in diff.items()
        if value is not None
    }


def baselines(msg: Message, context: Context) -> SiteReply:
    """Tune and test the scikit-learn suite here, and compare it with the final model it is sent.

    Every family gets the same search budget on the tune split and is tested once on the sealed
    test split, through the same panel code as the run's model. Fitted models never leave the
    site (kNN, SVM and forests hold rows); only metrics, chosen settings and the paired difference
    to the run's model do, through the egress guard.
    """
    from fedward.client.baselines import run_suite  # scikit-learn: only this message needs it
    from fedward.common.metrics import paired_auroc_difference

    req = request_from_message(msg, context)
    site, run = req.site, req.run
    spec = config_json(req.cfg, KEY_BASELINES, "{}")
    if not isinstance(spec, dict):
        raise MessageError(CONFIG, KEY_BASELINES, "must be a JSON object")
    families = [str(f) for f in spec.get("families", run.baselines.families)]
    unknown = sorted(set(families) - set(BASELINE_FAMILIES))
    if unknown:
        raise PolicyError(site.name, f"unknown baseline families: {', '.join(unknown)}").publicly(
            "policy-refused", policy="unknown baseline family"
        )
    # The request must be what the (approved) run config asks for, no more.
    if not run.baselines.enabled:
        raise PolicyError(site.name, "the run config has baselines switched off").publicly(
            "policy-refused", policy="baselines switched off"
        )
    outside = sorted(set(families) - set(run.baselines.families))
    budget = int(spec.get("budget", run.tuning.budget))
    if outside or budget > run.tuning.budget:
        raise PolicyError(
            site.name,
            "the baselines request asks for more than the run config: "
            + (f"families {', '.join(outside)}" if outside else f"a budget of {budget}"),
        ).publicly("policy-refused", policy="baselines request exceeds the run config")
    read_sealed_once(req, context, "baselines")
    transform = req.transform()
    x_train, y_train = req.features(transform, "train")
    x_tune, y_tune = req.features(transform, "tune")
    x_test, y_test = req.features(transform, "test")
    own = predict_scores(req.model(transform), x_test)
    results = run_suite(
        x_train.numpy(),
        y_train,
        x_tune.numpy(),
        y_tune,
        x_test.numpy(),
        families=families,
        budget=budget,
        search=str(spec.get("search", run.tuning.search)),
        seed=derive_seed(run.seed, site.name, "baselines"),
    )
    ev = run.evaluation
    info: dict[str, Any] = {
        "n_train": len(y_train),
        "baseline_families": families,
        "non_dp_outputs": [
            NON_DP_OUTPUTS["baseline-panels"],
            NON_DP_OUTPUTS["baseline-search"],
            NON_DP_OUTPUTS["baseline-differences"],
        ],
    }
    for result in results:
        key = f"{BASELINE_PREFIX}{result.family}_"
        public = result.public()
        info[key + "status"] = public["status"]
        info[key + "memorises_rows"] = bool(public["memorises_rows"])
        info[key + "n_configurations"] = int(public["n_configurations"])
        info[key + "failed_configurations"] = int(public["n_failed"])
        info[key + "fit_seconds"] = float(public["fit_seconds"])
        if public.get("reason"):
            info[key + "reason"] = str(public["reason"])
        if result.status != "ok" or result.test_scores is None:
            continue
        info[key + "params"] = json.dumps(public["params"], sort_keys=True)
        info[key + "selection"] = str(public.get("selection", "tune AUROC"))
        if public.get("tune_auroc") is not None:
            info[key + "tune_auroc"] = float(public["tune_auroc"])
        panel, undefined, hist = scorer_panel(
            req, y_test, result.test_scores, f"baseline:{result.family}"
        )
        info.update({key + k: float(v) for k, v in panel.items() if v is not None})
        info[key + "undefined_metrics"] = undefined
        info.update({f"{key}hist_{k}": v for k, v in hist.items()})
        diff = paired_auroc_difference(
            y_test,
            own,
            result.test_scores,
            n_bootstrap=ev.bootstrap,
            confidence=ev.confidence,
            seed=derive_seed(run.seed, site.name, result.family, "paired"),
        )
        # The run's model minus this baseline, on the same rows: [lo, hi] is a paired bootstrap CI.
        info.update(difference_fields(key, diff))
    if ARRAYS_FEDERATED_LOGISTIC in msg.content.array_records:
        # The federated logistic baseline is a shared model: compare it on the same rows too.
        lr = build_model(ModelConfig(kind="logistic"), transform.n_outputs, None, seed=run.seed)
        lr.load_state_dict(
            msg.content.array_records[ARRAYS_FEDERATED_LOGISTIC].to_torch_state_dict()
        )
        diff = paired_auroc_difference(
            y_test,
            own,
            predict_scores(lr, x_test),
            n_bootstrap=ev.bootstrap,
            confidence=ev.confidence,
            seed=derive_seed(run.seed, site.name, FEDERATED_LOGISTIC, "paired"),
        )
        info.update(difference_fields(f"{BASELINE_PREFIX}{FEDERATED_LOGISTIC}_", diff))
    return SiteReply(site.name, info, req.min_cell)
