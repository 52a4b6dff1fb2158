"""The site's ClientApp: DP-SGD training, tune/test evaluation and DP preprocessing aggregates.

Every reply leaves through the egress guard (``fedward.common.egress``). A site that cannot take part
(bad data, a refused privacy request) answers with a structured refusal instead of crashing, so the
coordinator can report it and go on with the other sites.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable
from logging import WARNING
from typing import Any, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log
from opacus.validators import ModuleValidator

from fedward.client.accounting import (
    default_delta,
    epsilon_of,
    gaussian_release_sigma,
    plan_noise_multiplier,
)
from fedward.client.site import PreparedSite, open_site, prepare
from fedward.client.training import DPSettings, predict_scores, train_local
from fedward.common.config import RunConfig
from fedward.common.egress import egress_mod
from fedward.common.errors import FedwardError, PolicyError, SiteDataError
from fedward.common.metrics import metric_panel, score_histogram
from fedward.common.models import build_model, select_device
from fedward.common.preprocessing import SharedTransform, site_aggregates
from fedward.common.protocol import (
    ARRAYS,
    CONFIG,
    DP_STATE,
    KEY_RUN,
    KEY_SCHEMA,
    KEY_SIM_SITES,
    KEY_SPLIT,
    KEY_TRANSFORM,
    REPLY,
    SEALED_STATE,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_REFUSED,
)
from fedward.common.schema import DataSchema

app = ClientApp(mods=[egress_mod])


def _seed_for(seed: int, *parts: object) -> int:
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _run_from(msg: Message) -> tuple[RunConfig, DataSchema, list[str]]:
    cfg = msg.content[CONFIG]
    run = RunConfig.from_json(str(cfg[KEY_RUN]))
    schema = DataSchema.model_validate(json.loads(str(cfg[KEY_SCHEMA])))
    sim_sites = json.loads(str(cfg.get(KEY_SIM_SITES, "[]")) or "[]")
    return run, schema, list(sim_sites)


def _site_for(msg: Message, context: Context) -> tuple[RunConfig, PreparedSite]:
    run, schema, sim_sites = _run_from(msg)
    site = open_site(dict(context.node_config), run, sim_sites)
    return run, prepare(site, run, schema)


def _reply(
    msg: Message,
    site: str,
    status: str,
    *,
    arrays: ArrayRecord | None = None,
    metrics: dict[str, float] | None = None,
    info: dict[str, Any] | None = None,
    min_cell_size: int = 10,
) -> Message:
    content = RecordDict()
    if arrays is not None:
        content["arrays"] = arrays
    if metrics is not None:
        content["metrics"] = MetricRecord(metrics)  # type: ignore[arg-type]
    record: dict[str, Any] = {"site": site, "status": status, "min_cell_size": min_cell_size}
    record.update(info or {})
    content[REPLY] = ConfigRecord(record)
    return Message(content, reply_to=msg)


def _failure(msg: Message, context: Context, exc: Exception) -> Message:
    """A structured refusal: names the site, file and column so an operator can fix it."""
    site = getattr(exc, "site", None) or f"node {context.node_id}"
    if isinstance(exc, FedwardError):
        # A FedwardError's public text names site, file, column and field; row-level details stay here.
        reason = exc.public() if isinstance(exc, SiteDataError) else str(exc)
        status = STATUS_REFUSED
    else:
        # An unexpected exception's text may quote data: only its type leaves; the traceback is logged.
        reason = f"unexpected {type(exc).__name__} at the site; details are in the site's log"
        status = STATUS_ERROR
    log(WARNING, "fedward site %s: %s\n%s", site, exc, traceback.format_exc(limit=5))
    info: dict[str, Any] = {"reason": reason, "error_kind": type(exc).__name__}
    for key in ("file", "column", "field", "path"):
        value = getattr(exc, key, None)
        if value:
            info[key] = str(value)
    return _reply(msg, str(site), status, info=info)


def _guarded(
    handler: Callable[[Message, Context], Message],
) -> Callable[[Message, Context], Message]:
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception as exc:
            return _failure(msg, context, exc)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


# ---- privacy state for this run (Flower keeps context.state per node and run) -------------------


def _dp_history(context: Context) -> list[tuple[float, float, int]]:
    if DP_STATE not in context.state:
        return []
    rec = context.state.config_records[DP_STATE]
    sigmas = cast(list[float], rec["hist_sigma"])
    rates = cast(list[float], rec["hist_q"])
    steps = cast(list[int], rec["hist_steps"])
    return [(float(s), float(q), int(t)) for s, q, t in zip(sigmas, rates, steps, strict=True)]


def _save_dp_state(
    context: Context, plan: dict[str, Any], history: list[tuple[float, float, int]]
) -> None:
    rec = dict(plan)
    rec["hist_sigma"] = [float(h[0]) for h in history]
    rec["hist_q"] = [float(h[1]) for h in history]
    rec["hist_steps"] = [int(h[2]) for h in history]
    context.state[DP_STATE] = ConfigRecord(rec)


def _dp_plan(context: Context) -> dict[str, Any] | None:
    if DP_STATE not in context.state:
        return None
    rec = context.state[DP_STATE]
    if "noise_multiplier" not in rec:
        return None
    return {k: rec[k] for k in ("noise_multiplier", "sample_rate", "steps_per_round", "delta")}


def _plan_run(
    run: RunConfig, n_train: int, prior: list[tuple[float, float, int]]
) -> dict[str, Any]:
    """Size the noise once for the whole run, so that all rounds together meet the target epsilon."""
    q = min(1.0, run.training.batch_size / n_train)
    steps_per_round = run.training.local_epochs * max(1, round(1.0 / q))
    delta = run.privacy.delta if run.privacy.delta is not None else default_delta(n_train)
    sigma = plan_noise_multiplier(
        run.privacy.target_epsilon,
        delta,
        q,
        steps_per_round * run.rounds,
        prior=prior,
        accountant=run.privacy.accountant,
    )
    return {
        "noise_multiplier": float(sigma),
        "sample_rate": float(q),
        "steps_per_round": int(steps_per_round),
        "delta": float(delta),
    }


# ---- handlers ------------------------------------------------------------------------------------


def _min_cell(site_policy_min: int, context: Context) -> int:
    """The stricter of the site config's and the SuperNode operator's minimum cell size."""
    node_min = int(context.node_config.get("min-cell-size", 0))
    return max(site_policy_min, node_min)


def _features(
    prepared: PreparedSite, transform: SharedTransform, split: str
) -> tuple[torch.Tensor, np.ndarray]:
    frame, labels = prepared.rows(split)
    return torch.from_numpy(transform.transform(frame)), labels


def _require_dp_compatible(model: torch.nn.Module, site: str) -> None:
    """Opacus's validator: per-sample gradients need layers like GroupNorm, never BatchNorm."""
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise PolicyError(site, "model is not DP-SGD compatible: " + "; ".join(map(str, problems)))


@app.train()
@_guarded
def train(msg: Message, context: Context) -> Message:
    """One round of local training; DP-SGD unless the run and the site's policy both allow not."""
    run, prepared = _site_for(msg, context)
    site = prepared.site
    cfg = msg.content[CONFIG]
    transform = SharedTransform.from_dict(json.loads(str(cfg[KEY_TRANSFORM])))
    server_round = int(cfg.get("server-round", 0))  # type: ignore[arg-type]
    min_cell = _min_cell(site.policy.min_cell_size, context)

    if not run.privacy.dp and not site.policy.allow_non_dp:
        raise PolicyError(
            site.name,
            "the run asks for training without DP, which this site's policy never allows "
            "(policy.allow_non_dp = false)",
            file=site.config_file,
        )

    x, y = _features(prepared, transform, "train")
    n_train = len(y)
    device = select_device()
    model = build_model(
        run.model, transform.n_outputs, prepared.site.schema.image_shape, seed=run.seed
    )
    model.load_state_dict(msg.content.array_records[ARRAYS].to_torch_state_dict())
    if run.privacy.dp:
        _require_dp_compatible(model, site.name)

    history = _dp_history(context)
    info: dict[str, Any] = {}
    if run.privacy.dp:
        plan = _dp_plan(context)
        if plan is None:
            plan = _plan_run(run, n_train, prior=history)
        dp = DPSettings(
            noise_multiplier=float(plan["noise_multiplier"]),
            max_grad_norm=run.privacy.max_grad_norm,
            sample_rate=float(plan["sample_rate"]),
            # Whoever knows the noise seed can subtract the noise: seeded only in simulation, for
            # repeatable experiments; a real site draws fresh randomness from the OS.
            noise_seed=_seed_for(run.seed, site.name, server_round, "noise")
            if site.simulated
            else None,
        )
    else:
        plan, dp = None, None

    result = train_local(
        model,
        x,
        torch.from_numpy(y.astype(np.float32)),
        cfg=run.training,
        dp=dp,
        seed=_seed_for(run.seed, site.name, server_round, "train"),
        device=device,
        proximal_mu=float(cfg.get("proximal-mu", 0.0)),  # type: ignore[arg-type]
    )

    metrics: dict[str, float] = {
        "num-examples": float(n_train),
        "train_loss": float(result.train_loss),
    }
    non_dp = ["train_loss", "num-examples (training rows)", "warnings and refusal reasons"]
    if run.privacy.delta is None:
        non_dp.append("delta (the default is derived from the training row count)")
    if plan is not None and dp is not None:
        # Recorded before the update leaves the site; the whole history composes into epsilon.
        history = [*history, (dp.noise_multiplier, dp.sample_rate, int(result.steps))]
        _save_dp_state(context, plan, history)
        eps = epsilon_of(history, float(plan["delta"]), run.privacy.accountant)
        metrics["epsilon"] = float(eps)
        info.update(
            {
                "epsilon": float(eps),
                "delta": float(plan["delta"]),
                "noise_multiplier": dp.noise_multiplier,
                "sample_rate": dp.sample_rate,
                "steps": int(result.steps),
                "max_grad_norm": run.privacy.max_grad_norm,
                "accountant": run.privacy.accountant,
                "dp": True,
            }
        )
    else:
        metrics["epsilon"] = float("inf")
        info.update({"dp": False, "steps": int(result.steps)})
    info["non_dp_outputs"] = non_dp
    info["warnings"] = list(site.table.warnings)
    info["n_train"] = n_train
    return _reply(
        msg,
        site.name,
        STATUS_OK,
        arrays=ArrayRecord(model.state_dict()),
        metrics=metrics,
        info=info,
        min_cell_size=min_cell,
    )


@app.evaluate()
@_guarded
def evaluate(msg: Message, context: Context) -> Message:
    """Metric panel and a coarsened score histogram on the tune split, or once on the sealed test split."""
    run, prepared = _site_for(msg, context)
    site = prepared.site
    cfg = msg.content[CONFIG]
    split = str(cfg.get(KEY_SPLIT, "tune"))
    if split not in ("tune", "test"):
        raise SiteDataError(site.name, f"evaluation of split '{split}' is not allowed")
    if split == "test":
        sealed = context.state.get(SEALED_STATE)
        if sealed is not None and bool(sealed.get("test_read", False)):
            raise SiteDataError(
                site.name, "the sealed test split was already read once in this run"
            )
        context.state[SEALED_STATE] = ConfigRecord({"test_read": True})

    transform = SharedTransform.from_dict(json.loads(str(cfg[KEY_TRANSFORM])))
    model = build_model(run.model, transform.n_outputs, site.schema.image_shape, seed=run.seed)
    model.load_state_dict(msg.content.array_records[ARRAYS].to_torch_state_dict())
    x, y = _features(prepared, transform, split)
    scores = predict_scores(model, x)
    min_cell = _min_cell(site.policy.min_cell_size, context)
    ev = run.evaluation
    panel = metric_panel(
        y,
        scores,
        n_bootstrap=ev.bootstrap,
        confidence=ev.confidence,
        seed=_seed_for(run.seed, site.name, split, "bootstrap"),
    )
    n_pos = int(y.sum())
    n_neg = int(len(y) - n_pos)
    if min(n_pos, n_neg) < min_cell:
        # The prevalence would reveal a class count under the minimum cell size.
        panel["prevalence"] = None
    metrics = {k: float(v) for k, v in panel.items() if v is not None and k != "n"}
    metrics["num-examples"] = float(len(y))
    undefined = sorted(k for k, v in panel.items() if v is None)
    hist = score_histogram(y, scores, ev.histogram_bins).coarsen(min_cell).to_record()
    info: dict[str, Any] = {
        "split": split,
        "undefined_metrics": undefined,
        "non_dp_outputs": [
            f"metric panel ({split})",
            f"score histogram ({split})",
            f"num-examples ({split} rows)",
        ],
    }
    info.update({f"hist_{k}": v for k, v in hist.items()})
    return _reply(msg, site.name, STATUS_OK, metrics=metrics, info=info, min_cell_size=min_cell)


@app.query()
@_guarded
def query(msg: Message, context: Context) -> Message:
    """Preprocessing aggregates of the training split, released through the Gaussian mechanism.

    Sums are clipped to the schema's declared ranges and categories (never derived from the data), and
    the release is recorded in this run's DP history at sample rate 1, so training's noise is sized
    for what is left of the target epsilon.
    """
    run, prepared = _site_for(msg, context)
    site = prepared.site
    frame, _ = prepared.rows("train")
    n_train = len(frame)
    delta = run.privacy.delta if run.privacy.delta is not None else default_delta(n_train)
    eps_pre = run.privacy.target_epsilon * run.preprocessing.epsilon_share
    sigma = gaussian_release_sigma(eps_pre, delta, run.privacy.accountant)
    # As for DP-SGD's noise: seeded only in simulation; a real site draws from the OS.
    rng = np.random.default_rng(
        _seed_for(run.seed, site.name, "preprocessing") if site.simulated else None
    )
    aggregates = site_aggregates(frame, site.schema, noise_multiplier=sigma, rng=rng)
    history = [*_dp_history(context), (float(sigma), 1.0, 1)]
    _save_dp_state(context, {}, history)
    eps = epsilon_of(history, delta, run.privacy.accountant)
    info = {
        "preprocessing_aggregates": json.dumps(aggregates),
        "epsilon": float(eps),
        "delta": float(delta),
        "noise_multiplier": float(sigma),
        "dp": True,
        "non_dp_outputs": []
        if run.privacy.delta is not None
        else ["delta (the default is derived from the training row count)"],
    }
    return _reply(
        msg,
        site.name,
        STATUS_OK,
        info=info,
        min_cell_size=_min_cell(site.policy.min_cell_size, context),
    )
