"""The baselines report's collector: asking the sites for their baseline suites over the Grid,
decoding their flat reply fields, and (in simulation) the pooled reference.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from logging import WARNING
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedward.common.metrics import PANEL_KEYS
from fedward.common.preprocessing import SharedTransform
from fedward.common.protocol import (
    ARRAYS,
    ARRAYS_FEDERATED_LOGISTIC,
    BASELINE_PREFIX,
    CONFIG,
    FEDERATED_LOGISTIC,
    KEY_BASELINES,
    MSG_BASELINES,
    STATUS_OK,
)
from fedward.common.run_config import RunConfig
from fedward.server.companions import Companion
from fedward.server.federation import Federation, FederationResult

POOLED_REFERENCE_REF = "fedward.client.pooled_reference:pooled_reference"

FAMILY_NAMES = {
    "logistic_regression": "logistic regression",
    "random_forest": "random forest",
    "knn": "k-nearest neighbours",
    "naive_bayes": "naive Bayes",
    "svm": "SVM",
    "hist_gradient_boosting": "gradient boosting",
    FEDERATED_LOGISTIC: "federated logistic regression",
}


def site_baselines(
    grid: Grid, main: Federation, result: FederationResult, companions: Mapping[str, Companion]
) -> dict[str, dict[str, Any]]:
    """Each site that trained tunes and tests the suite; returns its reply's fields, by site.

    A site that refuses or fails is reported as such; the report still completes.
    """
    run = main.run
    spec = {
        "families": list(run.baselines.families),
        "budget": run.tuning.budget,
        "search": run.tuning.search,
    }
    config = ConfigRecord({**main.config(), KEY_BASELINES: json.dumps(spec)})
    nodes = [n for n, rec in result.tracker.sites.items() if rec.status == STATUS_OK]
    content: dict[str, Any] = {ARRAYS: result.final_arrays, CONFIG: config}
    fed_lr = companions.get(FEDERATED_LOGISTIC)
    if fed_lr is not None and fed_lr.arrays is not None:
        content[ARRAYS_FEDERATED_LOGISTIC] = fed_lr.arrays
    messages = [
        Message(RecordDict(dict(content)), dst_node_id=n, message_type=MSG_BASELINES) for n in nodes
    ]
    main.folder.event("baselines-started", sites=len(nodes), **spec)
    out = {
        site: {"status": STATUS_OK, **families_from_reply(info)}
        if info.get("status") == STATUS_OK
        else info
        for site, info in result.tracker.ask(
            grid, messages, "baselines", run.strategy.round_timeout
        ).items()
    }
    main.folder.event("baselines-finished", sites=sorted(out))
    return out


def families_from_reply(info: Mapping[str, Any]) -> dict[str, Any]:
    """``baseline_<family>_<key>`` reply fields -> ``{"families": {family: {...}}}``."""
    families: dict[str, dict[str, Any]] = {}
    names = sorted(FAMILY_NAMES, key=len, reverse=True)
    for key, value in info.items():
        if not key.startswith(BASELINE_PREFIX) or key == "baseline_families":
            continue
        rest = key[len(BASELINE_PREFIX) :]
        family = next((f for f in names if rest.startswith(f + "_")), None)
        if family is None:
            continue
        field = rest[len(family) + 1 :]
        entry = families.setdefault(family, {"panel": {}, "hist": {}, "diff": {}})
        if field in PANEL_KEYS:
            entry["panel"][field] = value
        elif field.startswith("hist_"):
            entry["hist"][field[len("hist_") :]] = value
        elif field.startswith("diff_auroc"):
            entry["diff"][field[len("diff_auroc") :].lstrip("_") or "difference"] = value
        elif field == "params":
            entry["params"] = json.loads(str(value))
        else:
            entry[field] = value
    for entry in families.values():
        for name in entry.pop("undefined_metrics", []) or []:
            entry["panel"].setdefault(str(name), None)
    return {"families": families, "n_train": info.get("n_train")}


def pooled_reference(
    run: RunConfig, sim_site_configs: list[str], transform: SharedTransform, n_sites: int
) -> dict[str, Any]:
    """Simulation only: the run's model and the suite trained on every simulated site's data pooled.

    The developer's machine holds all simulated data anyway; the code lives with the site's (it
    reads site data) and is loaded by reference, as Flower loads the ClientApp.
    """
    module, _, attr = POOLED_REFERENCE_REF.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    try:
        return dict(
            fn(
                run,
                sim_site_configs,
                transform.to_dict(),
                n_sites=n_sites,
                baseline_budget=run.tuning.budget,
                search=run.tuning.search,
                families=list(run.baselines.families),
            )
        )
    except Exception as exc:  # the reference is a nicety: the run's report must still complete
        log(WARNING, "pooled reference failed: %s", exc)
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
