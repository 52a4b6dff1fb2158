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
from typing import Any, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log
from opacus.validators import ModuleValidator

from fedward.client.budget import BudgetRefusal, Composition, SiteBudget
from fedward.client.ledger import Ledger, LedgerError
from fedward.client.randomness import SEEDED as SEEDED_RANDOMNESS
from fedward.client.randomness import SYSTEM as SYSTEM_RANDOMNESS
from fedward.client.randomness import SystemNormal
from fedward.client.site import PreparedSite, Site, SiteEntry, prepare, resolve_site
from fedward.client.training import DPSettings, predict_scores, train_local
from fedward.client.withdrawal import refuse_if_withdrawn
from fedward.common.code_identity import code_hash
from fedward.common.config import BASELINE_FAMILIES, ModelConfig, RunConfig, validate_config
from fedward.common.egress import (
    REASON_SOURCE,
    WARNINGS_SOURCE,
    EgressMod,
    SiteView,
    rules_from_message,
)
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
from fedward.common.reply_fields import AUDIT_MODELS, NON_DP_OUTPUTS
from fedward.common.schema import DataSchema
from fedward.common.site_messages import ERROR_NAMES, SiteMessage, count_slot
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
                ).publicly("message-type-unknown"),
            )
        return super().__call__(message, context)


def site_view(msg: Message, context: Context) -> SiteView:
    """The egress guard's view of this site: its own config's name and minimum cell, no data."""
    cfg = msg.content.config_records.get(CONFIG) if msg.has_content() else None
    sims: Any = []
    if cfg is not None and isinstance(cfg.get(KEY_SIM_SITES), str):
        sims = json.loads(str(cfg[KEY_SIM_SITES]) or "[]")
    run = RunConfig.from_json(str(cfg[KEY_RUN])) if cfg is not None and KEY_RUN in cfg else None
    if run is None:
        return SiteView(site=f"node {context.node_id}", min_cell_size=10)
    entry = resolve_site(dict(context.node_config), run, list(sims))
    return SiteView(entry.name, entry.policy.min_cell_size, entry.dataset_id)


site_egress = EgressMod(resolve=site_view)
"""The egress guard with this site's own name and minimum cell size; outermost on every reply."""

app = _SiteApp(mods=[site_egress])

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
            raise PolicyError(
                self.site.name, f"unknown purpose '{purpose}' for this federation"
            ).publicly("policy-refused", policy="unknown purpose")
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
            raise PolicyError(self.site.name, "the coordinator sent no model weights").publicly(
                "policy-refused", policy="no weights sent"
            )
        try:
            model.load_state_dict(dict(self.weights))
        except RuntimeError as exc:
            # Torch names the layers and shapes that differ: no site data is in the text.
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:4]
            raise MessageError(
                ARRAYS,
                None,
                "the coordinator's weights do not fit the run's model: " + " ".join(lines),
            ).publicly("weights-mismatch") from None
        return model


def _state_dir(site: Site | SiteEntry, cfg: Mapping[str, Any]) -> Path:
    """A real site's ledger lives where its own config says; only simulated nodes take the run's.

    A SuperNode started with a site config never lets the coordinator move its ledger.
    """
    sim_root = str(cfg.get(KEY_SIM_STATE, "") or "")
    if site.simulated_node and sim_root:
        return Path(sim_root) / site.name
    if site.state_dir is None:
        raise PolicyError(
            site.name, "this site has no state folder for its privacy ledger"
        ).publicly("policy-refused", policy="no state folder")
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


def _check_ledger_head(entry: SiteEntry, cfg: Mapping[str, Any], ledger: Ledger) -> None:
    """Refuse when the ledger does not extend the head the coordinator saw last (a rollback)."""
    heads = config_json(cfg, KEY_LEDGER_HEADS, "{}")
    if not isinstance(heads, dict):
        raise MessageError(CONFIG, KEY_LEDGER_HEADS, "must be a JSON object {site: [seq, hash]}")
    seen = heads.get(entry.name)
    if not seen:
        return
    if not (
        isinstance(seen, list)
        and len(seen) == 2
        and isinstance(seen[0], int)
        and isinstance(seen[1], str)
    ):
        raise MessageError(
            CONFIG, KEY_LEDGER_HEADS, f"entry of site '{entry.name}' is not [seq, hash]"
        )
    seq, head = seen[0], seen[1]
    if ledger.hash_at(seq) != head:
        raise LedgerError(
            ledger.path,
            f"the ledger does not extend the head the coordinator last saw (entry {seq}): it was "
            "rolled back, replaced or deleted; a budget is never reset that way",
        ).publicly("ledger-rolled-back", seq=int(seq))


def _check_approval(
    entry: SiteEntry, run: RunConfig, cfg: Mapping[str, Any], ledger: Ledger
) -> None:
    """Only run configs and code the site's operator approved, unless the policy auto-approves.

    A companion federation (tuning trial, federated baseline, control) is accepted when the run
    config it came from is approved and the site derives this very config from it.
    """
    if entry.policy.auto_approve:
        return
    run_hash = run.config_hash()
    where = entry.config_file or "the site config"
    if not ledger.is_approved("run-config", run_hash):
        parent_text = str(cfg.get(KEY_PARENT_RUN, "") or "")
        parent = RunConfig.from_json(parent_text) if parent_text else None
        if parent is None or not ledger.is_approved("run-config", parent.config_hash()):
            raise PolicyError(
                entry.name,
                f"run config {run_hash[:12]}… is not approved; the operator approves it with "
                f"`fedward site approve RUN.toml --site-config {where}`",
                file=entry.config_file,
            ).publicly("run-not-approved", config_hash=run_hash[:12])
        from fedward.common.run_plan import planned_configs  # scipy/sklearn: only this path

        if run_hash not in planned_configs(parent):
            raise PolicyError(
                entry.name,
                f"run config {run_hash[:12]}… is not one of the federations the approved run "
                f"config {parent.config_hash()[:12]}… asks for; refused",
                file=entry.config_file,
            ).publicly(
                "run-not-planned", config_hash=run_hash[:12], parent_hash=parent.config_hash()[:12]
            )
    code = code_hash()
    if not ledger.is_approved("code", code):
        raise PolicyError(
            entry.name,
            f"the fedward code this site runs ({code[:12]}…) is not approved; "
            "`fedward site approve` records it together with the run config",
            file=entry.config_file,
        ).publicly("code-not-approved", code_hash=code[:12])


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
    """Resolve the site from its config, check ledger, withdrawal and approval, and only then
    open its data: a request the site refuses learns nothing about the data."""
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
    entry = resolve_site(dict(context.node_config), run, sim_sites)
    run_id = str(cfg.get(KEY_RUN_ID, "") or f"flwr-{context.run_id}")
    try:
        ledger = Ledger(_state_dir(entry, cfg))
        ledger.require_valid()
        _check_ledger_head(entry, cfg, ledger)
    except LedgerError as exc:
        exc.site = entry.name  # so the coordinator's records name the site, not a node id
        raise
    # A run the site withdrew from is refused like an unapproved one, whatever its approval says.
    refuse_if_withdrawn(
        ledger.dir, site=entry.name, run_id=run_id, run=run, cfg=cfg, config_file=entry.config_file
    )
    _check_approval(entry, run, cfg, ledger)
    prepared = prepare(entry.load(), run, schema)
    return Request(cfg, weights, context, run, prepared, run_id, ledger)


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
    notices = record.pop("notices", None)
    if notices is not None:
        messages = [_cell_safe(n, min_cell_size) for n in notices]
        record["warnings"] = [m.text for m in messages]
        record[WARNINGS_SOURCE] = [m.to_json() for m in messages]
    content[REPLY] = ConfigRecord(record)
    return Message(content, reply_to=msg)


def _cell_safe(notice: SiteMessage, min_cell: int) -> SiteMessage:
    """A warning's count under the minimum cell becomes "fewer than N"."""
    count = notice.slots.get("count")
    if notice.code == "warn-out-of-range" and not count_slot(int(count or 0), min_cell):
        return SiteMessage(
            "warn-out-of-range-few", {"column": notice.slots["column"], "min_cell": min_cell}
        )
    return notice


def _public_message(exc: Exception, site: str, msg: Message) -> SiteMessage:
    """The templated sentence a refusal carries; the full text stays in the site's log."""
    if not isinstance(exc, FedwardError):
        name = type(exc).__name__
        return SiteMessage(
            "unexpected", {"site": site, "error": name if name in ERROR_NAMES else "Exception"}
        )
    message = exc.public_message(site)
    column = message.slots.get("column")
    if column is not None and column not in rules_from_message(msg, site=site).columns:
        # A column the run's schema does not declare may be a header cell: name none.
        return SiteMessage("data-invalid", {"site": site})
    return message


def _failure(msg: Message, context: Context, exc: Exception) -> Message:
    """A structured refusal: a templated sentence, never an exception's text, path or cell."""
    site = str(getattr(exc, "site", None) or f"node {context.node_id}")
    status = STATUS_REFUSED if isinstance(exc, FedwardError) else STATUS_ERROR
    # The whole story, paths and cells included, stays in the site's own log.
    log(WARNING, "fedward site %s: %s\n%s", site, exc, traceback.format_exc(limit=5))
    message = _public_message(exc, site, msg)
    info: dict[str, Any] = {
        "reason": message.text,
        REASON_SOURCE: message.to_json(),
        "error_kind": type(exc).__name__ if type(exc).__name__ in ERROR_NAMES else "Exception",
    }
    remaining = getattr(exc, "remaining_epsilon", None)
    if remaining is not None:
        info["epsilon_remaining"] = float(remaining)
    return _reply(msg, site, status, info=info)


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
        "epsilon_model": budget.model_epsilon(req.run_id, run_delta),
        "ledger_seq": seq,
        "ledger_head": head,
        "dataset": req.dataset,
        "privacy_unit": PRIVACY_UNIT,
        "multi_row_patients": req.site.multi_row_patients,
        "accountant": req.site.policy.accountant,
        "dp": True,
    }


def _composition(req: Request) -> Composition | None:
    """The runs this run's model composes with: the tuning trials that chose its settings.

    A trial belongs to its search when the approved parent run config derives it; a final run
    names its search's trials from its own config. Either way the site derives the set itself.
    """
    run = req.run
    if req.purpose not in (PURPOSE_RUN, PURPOSE_TUNING):
        return None
    if req.purpose == PURPOSE_RUN:
        parent: RunConfig | None = run
    else:
        parent_text = str(req.cfg.get(KEY_PARENT_RUN, "") or "")
        parent = RunConfig.from_json(parent_text) if parent_text else None
    if parent is None or not parent.tuning.deep:
        return None
    from fedward.common.run_plan import search_hashes, tuning_settings  # scipy: only for a search

    hashes = search_hashes(parent)
    if req.purpose == PURPOSE_RUN:
        return Composition(hashes)
    if run.config_hash() not in hashes:
        return None
    return Composition(hashes, search_size=len(tuning_settings(parent)))


def _check_replay(req: Request, attempt: str) -> None:
    """A coordinator may retry a round (new attempt), never replay an attempt or an older round."""
    for e in req.ledger.entries(req.dataset):
        if e.run_id != req.run_id or e.kind != "dp-sgd":
            continue
        if e.attempt == attempt:
            raise BudgetRefusal(
                req.site.name,
                f"attempt {attempt} of round {e.round} was already trained: replay refused",
            ).publicly("budget-refused-plain", rule="replay refused")
        if e.round > req.server_round:
            raise BudgetRefusal(
                req.site.name,
                f"round {req.server_round} is older than round {e.round} already trained in run "
                f"{req.run_id}: replay refused",
            ).publicly("budget-refused-plain", rule="replay refused")


def _require_dp_compatible(model: torch.nn.Module, site: str) -> None:
    """Opacus's validator: per-sample gradients need layers like GroupNorm, never BatchNorm."""
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise PolicyError(
            site, "model is not DP-SGD compatible: " + "; ".join(map(str, problems))
        ).publicly("policy-refused", policy="model not DP-SGD compatible")


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
        ).publicly("non-dp-refused")
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
            composition=_composition(req),
        )
        spend = (plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
        budget.check_spend(req.run_id, plan.run_delta, plan.run_epsilon_cap, spend)
        # Whoever knows the noise seed can subtract the noise: seeded only in simulation, for
        # repeatable experiments; a real site draws sampling and noise from the OS CSPRNG.
        noise_seed = (
            _seed_for(run.seed, site.name, req.server_round, "noise")
            if site.simulated_node
            else None
        )
        randomness = SEEDED_RANDOMNESS if noise_seed is not None else SYSTEM_RANDOMNESS
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
            note=json.dumps({"randomness": randomness}),
        )
        dp = DPSettings(
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=run.privacy.max_grad_norm,
            sample_rate=plan.sample_rate,
            noise_seed=noise_seed,
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
    if dp is not None and result.randomness != randomness:
        raise PolicyError(
            site.name,
            f"training drew from {result.randomness}, the ledger recorded {randomness}",
        )
    metrics: dict[str, float] = {
        "num-examples": float(n_train),
        "epsilon": float(info.get("epsilon", float("inf"))),
    }
    non_dp = [NON_DP_OUTPUTS["train-rows"], NON_DP_OUTPUTS["refusals"]]
    if dp is None:
        info.update({"dp": False, "steps": int(result.steps)})
        # Without DP the loss is one more non-DP output; under DP it would escape ε every round.
        metrics["train_loss"] = float(result.train_loss)
        non_dp.insert(0, NON_DP_OUTPUTS["train-loss"])
    if run.privacy.delta is None and dp is not None:
        non_dp.append(NON_DP_OUTPUTS["delta-default"])
    info["non_dp_outputs"] = non_dp
    info["notices"] = list(site.table.notices)
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
        ).publicly("sealed-read", what=what)
    read[key] = True
    context.state[SEALED_STATE] = ConfigRecord(read)


def _suppress_implied_counts(
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
    _suppress_implied_counts(panel, y, scores, req.min_cell)
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
        raise SiteDataError(site.name, f"evaluation of split '{split}' is not allowed").publicly(
            "split-not-allowed"
        )
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
            NON_DP_OUTPUTS[f"panel-{split}"],
            NON_DP_OUTPUTS[f"histogram-{split}"],
            NON_DP_OUTPUTS[f"rows-{split}"],
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
    if str(req.cfg.get(KEY_AUDIT_MODEL, "run") or "run") not in AUDIT_MODELS:
        raise MessageError(CONFIG, KEY_AUDIT_MODEL, "not one of the models a site audits")
    # A companion's config resets its [audit] section: the approved parent's settings govern.
    parent_text = str(req.cfg.get(KEY_PARENT_RUN, "") or "")
    settings = RunConfig.from_json(parent_text).audit if parent_text else run.audit
    if not settings.enabled:
        raise PolicyError(
            site.name, "the run config has the membership audit switched off"
        ).publicly("policy-refused", policy="membership audit switched off")
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
        ).publicly("policy-refused", policy="no privacy plan for this run")
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
    info["non_dp_outputs"] = [NON_DP_OUTPUTS[f"audit-{name}"]]
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
        "non_dp_outputs": [NON_DP_OUTPUTS["profile"]],
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
        ).publicly("budget-refused-plain", rule="preprocessing already released")
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
        note=json.dumps(
            {
                "release": "preprocessing aggregates",
                "randomness": SEEDED_RANDOMNESS if site.simulated_node else SYSTEM_RANDOMNESS,
            }
        ),
    )
    # As for DP-SGD's noise: seeded only in simulation; a real site draws from the OS CSPRNG.
    rng = cast(
        np.random.Generator,
        np.random.default_rng(_seed_for(run.seed, site.name, "preprocessing"))
        if site.simulated_node
        else SystemNormal(),
    )
    aggregates = site_aggregates(frame, site.schema, noise_multiplier=sigma, rng=rng)
    info = _privacy_info(req, budget, delta)
    info.update(
        {
            KEY_PREPROCESSING_AGGREGATES: json.dumps(aggregates),
            "noise_multiplier": float(sigma),
            "non_dp_outputs": []
            if run.privacy.delta is not None
            else [NON_DP_OUTPUTS["delta-default"]],
        }
    )
    return _reply(msg, site.name, STATUS_OK, info=info, min_cell_size=req.min_cell)
