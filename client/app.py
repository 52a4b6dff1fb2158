"""The site's ClientApp: DP-SGD training, tune/test evaluation and DP preprocessing aggregates.

The site decides. Before anything leaves, it checks that the run config and its own code are
approved, that its privacy ledger is intact and has not been rolled back, and that the release fits
its budget; the release is then committed to the ledger *before* the reply is built. Every reply
passes the egress guard (``fedward.common.egress``). A site that cannot take part answers with a
structured refusal instead of crashing, so the coordinator can report it and go on.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging import WARNING
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log
from opacus.validators import ModuleValidator

from fedward.client.budget import BudgetRefusal, SiteBudget
from fedward.client.ledger import Ledger, LedgerError
from fedward.client.site import PreparedSite, Site, open_site, prepare
from fedward.client.training import DPSettings, predict_scores, train_local
from fedward.client.withdrawal import refuse_if_withdrawn
from fedward.common.code_identity import code_hash
from fedward.common.config import BASELINE_FAMILIES, ModelConfig, RunConfig, validate_config
from fedward.common.egress import egress_mod
from fedward.common.errors import FedwardError, MessageError, PolicyError, SiteDataError
from fedward.common.metrics import metric_panel, score_histogram
from fedward.common.models import build_model, select_device
from fedward.common.preprocessing import SharedTransform, site_aggregates
from fedward.common.protocol import (
    ARRAYS,
    ARRAYS_FEDERATED_LOGISTIC,
    BASELINE_PREFIX,
    CONFIG,
    FEDERATED_LOGISTIC,
    KEY_ATTEMPT,
    KEY_AUDIT_MODEL,
    KEY_BASELINES,
    KEY_LEDGER_HEADS,
    KEY_PARENT_RUN,
    KEY_PREPROCESSING_AGGREGATES,
    KEY_PURPOSE,
    KEY_RUN,
    KEY_RUN_ID,
    KEY_SCHEMA,
    KEY_SIM_SITES,
    KEY_SIM_STATE,
    KEY_SPLIT,
    KEY_TRANSFORM,
    MSG_AUDIT,
    MSG_BASELINES,
    MSG_PROFILE,
    PURPOSE_BASELINE,
    PURPOSE_CONTROL,
    PURPOSE_RUN,
    PURPOSE_TUNING,
    REPLY,
    SEALED_STATE,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_REFUSED,
)
from fedward.common.schema import DataSchema
from fedward.common.splits import SPLIT_NAMES


class _SiteApp(ClientApp):
    """Flower's ClientApp, answering a message type it has no handler for with a refusal.

    Flower raises for such a message; the SuperNode survives it, but the coordinator then only
    learns that the app raised. The site names what it was asked instead.
    """

    def __call__(self, message: Message, context: Context) -> Message:
        kind = message.metadata.message_type
        if kind.removesuffix(".default") not in HANDLED_MESSAGE_TYPES:
            known = ", ".join(HANDLED_MESSAGE_TYPES)
            return _failure(
                message,
                context,
                MessageError(
                    "message_type", None, f"'{kind}' is not one this site answers ({known})"
                ),
            )
        return super().__call__(message, context)


app = _SiteApp(mods=[egress_mod])

HANDLED_MESSAGE_TYPES = ("train", "evaluate", "query", MSG_BASELINES, MSG_AUDIT, MSG_PROFILE)
PRIVACY_UNIT = "record"  # sample-level DP-SGD: one row of one site's table
PURPOSES = (PURPOSE_RUN, PURPOSE_TUNING, PURPOSE_CONTROL, PURPOSE_BASELINE)


def _seed_for(seed: int, *parts: object) -> int:
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


# ---- one request: the run as asked, the site as it is, its ledger and budget --------------------


@dataclass
class Request:
    """Everything one message asks of the site; built from plain parts so that other app shapes
    (the SecAgg+ mode's legacy client) can reuse the same checks and training."""

    cfg: Mapping[str, Any]
    weights: Mapping[str, torch.Tensor] | None
    context: Context
    run: RunConfig
    prepared: PreparedSite
    run_id: str
    ledger: Ledger

    @property
    def site(self) -> Site:
        return self.prepared.site

    @property
    def server_round(self) -> int:
        value = self.cfg.get("server-round", 0)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise MessageError(CONFIG, "server-round", f"must be a round number, got {value!r}")
        return int(value)

    @property
    def dataset(self) -> str:
        return self.site.dataset_id

    @property
    def purpose(self) -> str:
        purpose = str(self.cfg.get(KEY_PURPOSE, PURPOSE_RUN) or PURPOSE_RUN)
        if purpose not in PURPOSES:
            raise PolicyError(self.site.name, f"unknown purpose '{purpose}' for this federation")
        return purpose

    @property
    def min_cell(self) -> int:
        """The stricter of the site config's and the SuperNode operator's minimum cell size."""
        node_min = int(self.context.node_config.get("min-cell-size", 0))
        return max(self.site.policy.min_cell_size, node_min)

    def budget(self) -> SiteBudget:
        return SiteBudget(
            self.ledger,
            self.site.policy,
            site=self.site.name,
            dataset=self.dataset,
            n_rows=self.site.table.n_rows,
            accountant=self.site.policy.accountant,
            simulated=self.site.simulated_node,
        )

    def transform(self) -> SharedTransform:
        data = config_json(self.cfg, KEY_TRANSFORM)
        try:
            return SharedTransform.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MessageError(
                CONFIG, KEY_TRANSFORM, f"not a fedward preprocessing transform ({exc!r})"
            ) from None

    def features(self, transform: SharedTransform, split: str) -> tuple[torch.Tensor, np.ndarray]:
        frame, labels = self.prepared.rows(split)
        return torch.from_numpy(transform.transform(frame)), labels

    def model(self, transform: SharedTransform) -> torch.nn.Module:
        model = build_model(
            self.run.model, transform.n_outputs, self.site.schema.image_shape, seed=self.run.seed
        )
        if self.weights is None:
            raise PolicyError(self.site.name, "the coordinator sent no model weights")
        try:
            model.load_state_dict(dict(self.weights))
        except RuntimeError as exc:
            # Torch names the layers and shapes that differ: no site data is in the text.
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:4]
            raise MessageError(
                ARRAYS,
                None,
                "the coordinator's weights do not fit the run's model: " + " ".join(lines),
            ) from None
        return model


def _state_dir(site: Site, cfg: Mapping[str, Any]) -> Path:
    """A real site's ledger lives where its own config says; only simulated nodes take the run's.

    A SuperNode started with a site config never lets the coordinator move its ledger.
    """
    sim_root = str(cfg.get(KEY_SIM_STATE, "") or "")
    if site.simulated_node and sim_root:
        return Path(sim_root) / site.name
    if site.state_dir is None:
        raise PolicyError(site.name, "this site has no state folder for its privacy ledger")
    return Path(site.state_dir)


def config_json(cfg: Mapping[str, Any], key: str, default: str | None = None) -> Any:
    """A JSON value of the coordinator's ConfigRecord; a missing key or bad JSON names the key."""
    text = cfg.get(key, default)
    if text is None:
        raise MessageError(CONFIG, key, "missing")
    if not isinstance(text, str):
        raise MessageError(CONFIG, key, f"must be JSON text, got {type(text).__name__}")
    try:
        return json.loads(text or default or "null")
    except json.JSONDecodeError as exc:
        raise MessageError(CONFIG, key, f"not valid JSON ({exc})") from None


def _check_ledger_head(req: Request) -> None:
    """Refuse when the ledger does not extend the head the coordinator saw last (a rollback)."""
    heads = config_json(req.cfg, KEY_LEDGER_HEADS, "{}")
    if not isinstance(heads, dict):
        raise MessageError(CONFIG, KEY_LEDGER_HEADS, "must be a JSON object {site: [seq, hash]}")
    seen = heads.get(req.site.name)
    if not seen:
        return
    if not (
        isinstance(seen, list)
        and len(seen) == 2
        and isinstance(seen[0], int)
        and isinstance(seen[1], str)
    ):
        raise MessageError(
            CONFIG, KEY_LEDGER_HEADS, f"entry of site '{req.site.name}' is not [seq, hash]"
        )
    seq, head = seen[0], seen[1]
    if req.ledger.hash_at(seq) != head:
        raise LedgerError(
            req.ledger.path,
            f"the ledger does not extend the head the coordinator last saw (entry {seq}): it was "
            "rolled back, replaced or deleted; a budget is never reset that way",
        )


def _check_approval(req: Request) -> None:
    """Only run configs and code the site's operator approved, unless the policy auto-approves.

    A companion federation (tuning trial, federated baseline, control) is accepted when the run
    config it came from is approved and the site derives this very config from it.
    """
    if req.site.policy.auto_approve:
        return
    run_hash = req.run.config_hash()
    where = req.site.config_file or "the site config"
    if not req.ledger.is_approved("run-config", run_hash):
        parent_text = str(req.cfg.get(KEY_PARENT_RUN, "") or "")
        parent = RunConfig.from_json(parent_text) if parent_text else None
        if parent is None or not req.ledger.is_approved("run-config", parent.config_hash()):
            raise PolicyError(
                req.site.name,
                f"run config {run_hash[:12]}… is not approved; the operator approves it with "
                f"`fedward site approve RUN.toml --site-config {where}`",
                file=req.site.config_file,
            )
        from fedward.common.run_plan import planned_configs  # scipy/sklearn: only this path

        if run_hash not in planned_configs(parent):
            raise PolicyError(
                req.site.name,
                f"run config {run_hash[:12]}… is not one of the federations the approved run "
                f"config {parent.config_hash()[:12]}… asks for; refused",
                file=req.site.config_file,
            )
    code = code_hash()
    if not req.ledger.is_approved("code", code):
        raise PolicyError(
            req.site.name,
            f"the fedward code this site runs ({code[:12]}…) is not approved; "
            "`fedward site approve` records it together with the run config",
            file=req.site.config_file,
        )


def _request(msg: Message, context: Context) -> Request:
    weights = None
    if ARRAYS in msg.content.array_records:
        weights = msg.content.array_records[ARRAYS].to_torch_state_dict()
    if CONFIG not in msg.content.config_records:
        raise MessageError(CONFIG, None, "missing: the coordinator sent no ConfigRecord 'config'")
    return build_request(dict(msg.content.config_records[CONFIG]), weights, context)


def build_request(
    cfg: Mapping[str, Any], weights: Mapping[str, torch.Tensor] | None, context: Context
) -> Request:
    """Resolve the site, then check approval, ledger integrity and ledger head before anything else."""
    text = cfg.get(KEY_RUN)
    if not isinstance(text, str):
        reason = "missing" if text is None else f"must be JSON text, got {type(text).__name__}"
        raise MessageError(CONFIG, KEY_RUN, reason)
    run = RunConfig.from_json(text)
    schema = validate_config(
        DataSchema, config_json(cfg, KEY_SCHEMA), "<data schema from coordinator>"
    )
    sim_sites = config_json(cfg, KEY_SIM_SITES, "[]")
    if not isinstance(sim_sites, list) or not all(isinstance(s, str) for s in sim_sites):
        raise MessageError(CONFIG, KEY_SIM_SITES, "must be a JSON list of site config paths")
    site = open_site(dict(context.node_config), run, sim_sites)
    prepared = prepare(site, run, schema)
    run_id = str(cfg.get(KEY_RUN_ID, "") or f"flwr-{context.run_id}")
    try:
        ledger = Ledger(_state_dir(site, cfg))
        req = Request(cfg, weights, context, run, prepared, run_id, ledger)
        ledger.require_valid()
        _check_ledger_head(req)
    except LedgerError as exc:
        exc.site = site.name  # so the coordinator's records name the site, not a node id
        raise
    # A run the site withdrew from is refused like an unapproved one, whatever its approval says.
    refuse_if_withdrawn(
        ledger.dir, site=site.name, run_id=run_id, run=run, cfg=cfg, config_file=site.config_file
    )
    _check_approval(req)
    return req


# ---- replies ------------------------------------------------------------------------------------


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
        content[ARRAYS] = arrays
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
    remaining = getattr(exc, "remaining_epsilon", None)
    if remaining is not None:
        info["epsilon_remaining"] = float(remaining)
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


def _privacy_info(req: Request, budget: SiteBudget, run_delta: float) -> dict[str, Any]:
    status = budget.status(req.run_id, run_delta)
    seq, head = req.ledger.head()
    return {
        "epsilon": status.run_epsilon,
        "delta": status.run_delta,
        "epsilon_lifetime": status.lifetime_epsilon,
        "delta_lifetime": status.lifetime_delta,
        "epsilon_budget": status.total_epsilon,
        "epsilon_remaining": status.remaining_epsilon,
        "epsilon_tuning": budget.tuning_epsilon(),
        "ledger_seq": seq,
        "ledger_head": head,
        "dataset": req.dataset,
        "privacy_unit": PRIVACY_UNIT,
        "multi_row_patients": req.site.multi_row_patients,
        "accountant": req.site.policy.accountant,
        "dp": True,
    }


def _check_replay(req: Request, attempt: str) -> None:
    """A coordinator may retry a round (new attempt), never replay an attempt or an older round."""
    for e in req.ledger.entries(req.dataset):
        if e.run_id != req.run_id or e.kind != "dp-sgd":
            continue
        if e.attempt == attempt:
            raise BudgetRefusal(
                req.site.name,
                f"attempt {attempt} of round {e.round} was already trained: replay refused",
            )
        if e.round > req.server_round:
            raise BudgetRefusal(
                req.site.name,
                f"round {req.server_round} is older than round {e.round} already trained in run "
                f"{req.run_id}: replay refused",
            )


def _require_dp_compatible(model: torch.nn.Module, site: str) -> None:
    """Opacus's validator: per-sample gradients need layers like GroupNorm, never BatchNorm."""
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise PolicyError(site, "model is not DP-SGD compatible: " + "; ".join(map(str, problems)))


# ---- handlers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalUpdate:
    model: torch.nn.Module
    metrics: dict[str, float]
    info: dict[str, Any]


def local_update(req: Request) -> LocalUpdate:
    """One round of local training; DP-SGD unless the run and the site's policy both allow not.

    Under DP the round's spend is planned, checked against the budget and committed to the ledger
    before training starts, so no path releases an update whose spend is not recorded.
    """
    site, run = req.site, req.run
    if not run.privacy.dp and not site.policy.allow_non_dp:
        raise PolicyError(
            site.name,
            "the run asks for training without DP, which this site's policy never allows "
            "(policy.allow_non_dp = false)",
            file=site.config_file,
        )
    transform = req.transform()
    x, y = req.features(transform, "train")
    if run.training.shuffle_labels:
        # The label-shuffle control: same rows, same class balance, no signal left to learn.
        y = np.random.default_rng(_seed_for(run.seed, site.name, "label-shuffle")).permutation(y)
    n_train = len(y)
    model = req.model(transform)
    info: dict[str, Any] = {"purpose": req.purpose}
    dp: DPSettings | None = None
    if run.privacy.dp:
        _require_dp_compatible(model, site.name)
        budget = req.budget()
        attempt = str(req.cfg.get(KEY_ATTEMPT, "") or f"{req.run_id}:{req.server_round}")
        _check_replay(req, attempt)
        plan = budget.plan_run(
            run,
            run_id=req.run_id,
            n_train=n_train,
            config_hash=run.config_hash(),
            purpose=req.purpose,
        )
        spend = (plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
        budget.check_spend(req.run_id, plan.run_delta, plan.run_epsilon_cap, spend)
        # Committed before training: if the process dies after this, the spend still counts.
        req.ledger.append(
            dataset=req.dataset,
            run_id=req.run_id,
            round=req.server_round,
            attempt=attempt,
            kind="dp-sgd",
            noise_multiplier=plan.noise_multiplier,
            sample_rate=plan.sample_rate,
            steps=plan.steps_per_round,
            delta=plan.run_delta,
            max_grad_norm=run.privacy.max_grad_norm,
            config_hash=run.config_hash(),
        )
        dp = DPSettings(
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=run.privacy.max_grad_norm,
            sample_rate=plan.sample_rate,
            # Whoever knows the noise seed can subtract the noise: seeded only in simulation, for
            # repeatable experiments; a real site draws fresh randomness from the OS.
            noise_seed=_seed_for(run.seed, site.name, req.server_round, "noise")
            if site.simulated_node
            else None,
        )
        info.update(_privacy_info(req, budget, plan.run_delta))
        info.update(
            {
                "noise_multiplier": plan.noise_multiplier,
                "sample_rate": plan.sample_rate,
                "steps": plan.steps_per_round,
                "max_grad_norm": run.privacy.max_grad_norm,
                "attempt": attempt,
            }
        )
    result = train_local(
        model,
        x,
        torch.from_numpy(y.astype(np.float32)),
        cfg=run.training,
        dp=dp,
        seed=_seed_for(run.seed, site.name, req.server_round, "train"),
        device=select_device(),
        proximal_mu=float(req.cfg.get("proximal-mu", 0.0)),
    )
    if dp is not None and result.steps != info["steps"]:
        raise PolicyError(
            site.name, f"training took {result.steps} steps, the ledger recorded {info['steps']}"
        )
    metrics: dict[str, float] = {
        "num-examples": float(n_train),
        "train_loss": float(result.train_loss),
        "epsilon": float(info.get("epsilon", float("inf"))),
    }
    if dp is None:
        info.update({"dp": False, "steps": int(result.steps)})
    non_dp = ["train_loss", "num-examples (training rows)", "warnings and refusal reasons"]
    if run.privacy.delta is None and dp is not None:
        non_dp.append("delta (the default is derived from the dataset's row count)")
    info["non_dp_outputs"] = non_dp
    info["warnings"] = list(site.table.warnings)
    info["n_train"] = n_train
    return LocalUpdate(model, metrics, info)


@app.train()
@_guarded
def train(msg: Message, context: Context) -> Message:
    """One round of local training (see ``local_update``)."""
    req = _request(msg, context)
    update = local_update(req)
    return _reply(
        msg,
        req.site.name,
        STATUS_OK,
        arrays=ArrayRecord(update.model.state_dict()),
        metrics=update.metrics,
        info=update.info,
        min_cell_size=req.min_cell,
    )


def _read_sealed_once(req: Request, context: Context, what: str) -> None:
    """The sealed test split is read once per run and purpose: by the final evaluation only."""
    key = f"{req.run_id}:{what}"
    sealed = context.state.config_records.get(SEALED_STATE)
    read = dict(sealed) if sealed is not None else {}
    if bool(read.get(key, False)):
        raise SiteDataError(
            req.site.name, f"the sealed test split was already read once for {what} in this run"
        )
    read[key] = True
    context.state[SEALED_STATE] = ConfigRecord(read)


def _panel(
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
        seed=_seed_for(req.run.seed, req.site.name, tag, "bootstrap"),
    )
    n_pos = int(y.sum())
    if min(n_pos, len(y) - n_pos) < req.min_cell:
        # The prevalence would reveal a class count under the minimum cell size.
        panel["prevalence"] = None
    undefined = sorted(k for k, v in panel.items() if v is None)
    hist = score_histogram(y, scores, ev.histogram_bins).coarsen(req.min_cell).to_record()
    return panel, undefined, hist


@app.evaluate()
@_guarded
def evaluate(msg: Message, context: Context) -> Message:
    """Metric panel and a coarsened score histogram on the tune split, or once on the sealed test split."""
    req = _request(msg, context)
    site = req.site
    split = str(req.cfg.get(KEY_SPLIT, "tune"))
    if split not in ("tune", "test"):
        raise SiteDataError(site.name, f"evaluation of split '{split}' is not allowed")
    if split == "test":
        _read_sealed_once(req, context, "test")

    transform = req.transform()
    model = req.model(transform)
    x, y = req.features(transform, split)
    scores = predict_scores(model, x)
    min_cell = req.min_cell
    panel, undefined, hist = _panel(req, y, scores, split)
    metrics = {k: float(v) for k, v in panel.items() if v is not None and k != "n"}
    metrics["num-examples"] = float(len(y))
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


def _difference_fields(key: str, diff: Mapping[str, float | None]) -> dict[str, float]:
    return {
        f"{key}diff_auroc{'' if name == 'difference' else '_' + name}": float(value)
        for name, value in diff.items()
        if value is not None
    }


@app.evaluate(MSG_BASELINES.split(".", 1)[1])
@_guarded
def baselines(msg: Message, context: Context) -> Message:
    """Tune and test the scikit-learn suite here, and compare it with the final model it is sent.

    Every family gets the same search budget on the tune split and is tested once on the sealed
    test split, through the same panel code as the run's model. Fitted models never leave the
    site (kNN, SVM and forests hold rows); only metrics, chosen settings and the paired difference
    to the run's model do, through the egress guard.
    """
    from fedward.client.baselines import run_suite  # scikit-learn: only this message needs it
    from fedward.common.metrics import paired_auroc_difference

    req = _request(msg, context)
    site, run = req.site, req.run
    spec = config_json(req.cfg, KEY_BASELINES, "{}")
    if not isinstance(spec, dict):
        raise MessageError(CONFIG, KEY_BASELINES, "must be a JSON object")
    families = [str(f) for f in spec.get("families", run.baselines.families)]
    unknown = sorted(set(families) - set(BASELINE_FAMILIES))
    if unknown:
        raise PolicyError(site.name, f"unknown baseline families: {', '.join(unknown)}")
    # The request must be what the (approved) run config asks for, no more.
    if not run.baselines.enabled:
        raise PolicyError(site.name, "the run config has baselines switched off")
    outside = sorted(set(families) - set(run.baselines.families))
    budget = int(spec.get("budget", run.tuning.budget))
    if outside or budget > run.tuning.budget:
        raise PolicyError(
            site.name,
            "the baselines request asks for more than the run config: "
            + (f"families {', '.join(outside)}" if outside else f"a budget of {budget}"),
        )
    _read_sealed_once(req, context, "baselines")
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
        seed=_seed_for(run.seed, site.name, "baselines"),
    )
    ev = run.evaluation
    info: dict[str, Any] = {
        "n_train": len(y_train),
        "baseline_families": families,
        "non_dp_outputs": [
            "baseline metric panels and score histograms (test)",
            "baseline tune AUROC, chosen hyperparameters and fit times",
            "paired AUROC difference between the run's model and each baseline (test)",
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
        panel, undefined, hist = _panel(
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
            seed=_seed_for(run.seed, site.name, result.family, "paired"),
        )
        # The run's model minus this baseline, on the same rows: [lo, hi] is a paired bootstrap CI.
        info.update(_difference_fields(key, diff))
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
            seed=_seed_for(run.seed, site.name, FEDERATED_LOGISTIC, "paired"),
        )
        info.update(_difference_fields(f"{BASELINE_PREFIX}{FEDERATED_LOGISTIC}_", diff))
    return _reply(msg, site.name, STATUS_OK, info=info, min_cell_size=req.min_cell)


@app.evaluate(MSG_AUDIT.split(".", 1)[1])
@_guarded
def audit(msg: Message, context: Context) -> Message:
    """Attack the model it is sent with this site's members and non-members; release aggregates.

    The audit's own models (LiRA references, the canary model) are trained here as this site
    trained for the run and never leave; they spend no release budget. The sealed test split is
    not read.
    """
    from fedward.client.site_audit import AuditMechanism, record_latest, run_audit

    req = _request(msg, context)
    site, run = req.site, req.run
    # A companion's config resets its [audit] section: the approved parent's settings govern.
    parent_text = str(req.cfg.get(KEY_PARENT_RUN, "") or "")
    settings = RunConfig.from_json(parent_text).audit if parent_text else run.audit
    if not settings.enabled:
        raise PolicyError(site.name, "the run config has the membership audit switched off")
    transform = req.transform()
    model = req.model(transform)
    x_m, y_m = req.features(transform, "train")
    x_n, y_n = req.features(transform, "audit")
    budget = req.budget()
    plan = budget.existing_plan(req.run_id) if run.privacy.dp else None
    if run.privacy.dp and plan is None:
        raise PolicyError(
            site.name,
            f"run {req.run_id} has no privacy plan in this site's ledger: nothing to audit",
        )
    mechanism = AuditMechanism(
        run, transform.n_outputs, site.schema.image_shape, plan, settings=settings
    )
    name = str(req.cfg.get(KEY_AUDIT_MODEL, "run") or "run")
    public = run_audit(
        model,
        mechanism,
        (x_m.numpy(), y_m),
        (x_n.numpy(), y_n),
        delta=plan.run_delta if plan is not None else budget.run_delta(run),
        min_cell=req.min_cell,
        seed=_seed_for(run.seed, site.name, name, "audit"),
    )
    record_latest(_state_dir(site, req.cfg), req.run_id, name, public)
    # A figure the site's size cannot support is absent (the notes say why), never a null.
    info: dict[str, Any] = {k: v for k, v in public.items() if v is not None}
    info["audit_model"] = name
    info["non_dp_outputs"] = [
        f"membership audit figures ({name} model): AUC, TPR at fixed FPR, advantage, "
        "empirical ε lower bound, ROC as binned counts"
    ]
    return _reply(msg, site.name, STATUS_OK, info=info, min_cell_size=req.min_cell)


@app.query(MSG_PROFILE.split(".", 1)[1])
@_guarded
def profile(msg: Message, context: Context) -> Message:
    """The training split's profile for the model card: sizes, prevalence, missingness, summaries."""
    from fedward.client.profile import site_profile

    req = _request(msg, context)
    site = req.site
    frame, labels = req.prepared.rows("train")
    sizes = {name: len(getattr(req.prepared.splits, name)) for name in SPLIT_NAMES}
    summary = site_profile(frame, labels, sizes, site.schema, req.min_cell)
    info: dict[str, Any] = {
        "training_profile": json.dumps(summary, sort_keys=True),
        "non_dp_outputs": [
            "training-data profile: split sizes, prevalence, missingness, feature means and "
            "standard deviations, category counts (small cells suppressed)"
        ],
    }
    return _reply(msg, site.name, STATUS_OK, info=info, min_cell_size=req.min_cell)


@app.query()
@_guarded
def query(msg: Message, context: Context) -> Message:
    """Preprocessing aggregates of the training split, released through the Gaussian mechanism.

    Sums are clipped to the schema's declared ranges and categories (never derived from the data);
    the release is a ledger entry at sample rate 1, committed before it leaves, so training's noise
    is then sized for what is left of the run's ε.
    """
    req = _request(msg, context)
    site, run = req.site, req.run
    frame, _ = req.prepared.rows("train")
    budget = req.budget()
    delta = budget.run_delta(run)
    sigma = budget.preprocessing_sigma(run)
    spend = (float(sigma), 1.0, 1)
    budget.check_spend(req.run_id, delta, budget.run_epsilon_cap(run), spend)
    if any(
        e.run_id == req.run_id and e.kind == "gaussian-release"
        for e in req.ledger.entries(req.dataset)
    ):
        raise BudgetRefusal(
            site.name, f"run {req.run_id} already released its preprocessing aggregates"
        )
    req.ledger.append(
        dataset=req.dataset,
        run_id=req.run_id,
        round=0,
        attempt="preprocessing",
        kind="gaussian-release",
        noise_multiplier=sigma,
        sample_rate=1.0,
        steps=1,
        delta=delta,
        config_hash=run.config_hash(),
        note="preprocessing aggregates",
    )
    # As for DP-SGD's noise: seeded only in simulation; a real site draws from the OS.
    rng = np.random.default_rng(
        _seed_for(run.seed, site.name, "preprocessing") if site.simulated_node else None
    )
    aggregates = site_aggregates(frame, site.schema, noise_multiplier=sigma, rng=rng)
    info = _privacy_info(req, budget, delta)
    info.update(
        {
            KEY_PREPROCESSING_AGGREGATES: json.dumps(aggregates),
            "noise_multiplier": float(sigma),
            "non_dp_outputs": []
            if run.privacy.delta is not None
            else ["delta (the default is derived from the dataset's row count)"],
        }
    )
    return _reply(msg, site.name, STATUS_OK, info=info, min_cell_size=req.min_cell)
