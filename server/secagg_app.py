"""The coordinator's SecAgg+ mode: Flower's legacy server workflow with ``SecAggPlusWorkflow``.

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead"; SecAgg: Bonawitz et al. 2017) runs in Flower 1.41 only in the legacy
workflow: ``ServerApp`` + ``LegacyContext`` + ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow)``
with a legacy strategy, and ``secaggplus_mod`` around a legacy client at the sites
(``fedward.client.secagg_app``). fedward reuses Flower's protocol as it is.

What changes for the coordinator: each site's model arrives masked and only their sum can be
unmasked, so there is no per-update validation, no per-site view of an update and no robust
aggregation (only mean-based strategies are accepted by the run config). What stays: every site
enforces its own DP budget and ledger and trains with DP-SGD; refusals arrive as error replies that
name the site and the reason (SecAgg+ treats them as drop-outs); the coordinator's ledger heads
are sent and checked; checkpoints, tune metrics every round and one final read of the sealed test
split, from the sites' metric panels and coarsened histograms as in the Message-API mode.

Selecting this mode: ``strategy.secure_aggregation = true`` in the run config, then
``fedward simulate`` runs this ServerApp with the SecAgg+ ClientApp. ``flwr run`` ships one
``[tool.flwr.app.components]`` pair per app package, ``fedward.server.app:app`` with
``fedward.client.app:app``, which never speak SecAgg+: a run config asking for it is refused there
(``fedward.server.app.coordinate``). This version is simulation-only for SecAgg+.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import WARNING
from pathlib import Path
from typing import Any, cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.app.message_type import MessageType
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.logger import log
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAdam as LegacyFedAdam
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.strategy import FedProx as LegacyFedProx
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid, ServerApp

from fedward.common.config import RunConfig, StrategyConfig, run_schema
from fedward.common.metrics import CoarseHistogram
from fedward.common.models import build_model, set_deterministic
from fedward.common.preprocessing import SharedTransform
from fedward.common.protocol import (
    KEY_ATTEMPT,
    KEY_LEDGER_HEADS,
    KEY_RUN,
    KEY_RUN_ID,
    KEY_SCHEMA,
    KEY_SIM_SITES,
    KEY_SIM_STATE,
    KEY_SPLIT,
    KEY_TRANSFORM,
    PRIVACY_FLOATS,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_REFUSED,
)
from fedward.common.secagg_wire import widen_masked_vectors
from fedward.server.app import (
    CoordinatorSettings,
    _wait_for_nodes,
    privacy_summary,
    run_record,
    settings_from_context,
)
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.reply_polling_grid import reply_polling_grid
from fedward.server.run_folder import RunFolder
from fedward.server.site_tracking import SiteRecord, record_evaluation

_PRIVACY_FLOATS = PRIVACY_FLOATS


def _pooled_train_loss(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """The training-row weighted mean of the sites' train losses (sent in the clear)."""
    pairs = [(n, float(cast(float, m["train_loss"]))) for n, m in metrics if "train_loss" in m]
    total = sum(n for n, _ in pairs)
    return {"train_loss": sum(n * loss for n, loss in pairs) / total} if total else {}


def legacy_strategy(
    cfg: StrategyConfig,
    initial: Parameters,
    fit_config: Callable[[int], dict[str, Scalar]],
    evaluate_config: Callable[[int], dict[str, Scalar]],
) -> LegacyFedAvg:
    """Flower's legacy strategy of the run config's name (SecAgg+ needs the legacy API)."""
    common: dict[str, Any] = {
        "fraction_fit": cfg.fraction_train,
        "fraction_evaluate": 1.0,
        "min_fit_clients": cfg.min_sites,
        "min_evaluate_clients": cfg.min_sites,
        "min_available_clients": cfg.min_sites,
        "on_fit_config_fn": fit_config,
        "on_evaluate_config_fn": evaluate_config,
        "initial_parameters": initial,
        "accept_failures": True,
        "fit_metrics_aggregation_fn": _pooled_train_loss,
    }
    if cfg.name == "fedavg":
        return LegacyFedAvg(**common)
    if cfg.name == "fedprox":
        return LegacyFedProx(proximal_mu=cfg.proximal_mu, **common)
    if cfg.name == "fedadam":
        return LegacyFedAdam(eta=cfg.server_learning_rate, **common)
    raise ValueError(
        f"strategy '{cfg.name}' cannot run under SecAgg+: it needs each site's update, and the "
        "coordinator sees only their sum"
    )


@dataclass
class SecAggRound:
    """What SecAgg+ did in one round, as far as the coordinator can know it."""

    round: int
    sampled: int = 0
    num_shares: int = 0
    threshold: int = 0
    masked: int = 0
    unmasked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "sites_sampled": self.sampled,
            "num_shares": self.num_shares,
            "reconstruction_threshold": self.threshold,
            "sites_in_sum": self.masked if self.unmasked else 0,
            "completed": self.unmasked,
        }


class _WideningGrid:
    """The grid, with the sites' uint32 masked vectors widened to the int64 Flower's workflow
    adds (``fedward.common.secagg_wire``); everything else is the grid's own."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            if not reply.has_error():
                widen_masked_vectors(reply.content)
        return replies


class RecordedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, unchanged, noting per round the shares, threshold and sum size."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rounds: list[SecAggRound] = []

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = super().setup_stage(grid, context, state)
        if not state.sampled_node_ids:
            return ok  # the strategy sampled no site (the run stopped): no SecAgg+ round
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        self.rounds.append(
            SecAggRound(
                round=int(cast(int, cfg[WorkflowKey.CURRENT_ROUND])),
                sampled=len(state.sampled_node_ids),
                num_shares=state.num_shares,
                threshold=state.threshold,
            )
        )
        return ok

    def collect_masked_vectors_stage(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        wide = cast(Grid, _WideningGrid(grid))
        ok = super().collect_masked_vectors_stage(wide, context, state)
        if self.rounds:
            self.rounds[-1].masked = len(state.active_node_ids)
        return ok

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = super().unmask_stage(grid, context, state)
        if self.rounds:
            self.rounds[-1].unmasked = ok
        return ok


def _error_info(failure: BaseException | tuple[ClientProxy, Any]) -> dict[str, Any]:
    """A site's structured refusal from an error reply (``fedward.client.secagg_app``)."""
    if isinstance(failure, tuple):
        return {"node_id": failure[0].node_id, "status": STATUS_ERROR, "reason": "status not OK"}
    error = failure.args[0] if failure.args else None
    reason = str(getattr(error, "reason", failure))
    try:
        info = json.loads(reason)
    except json.JSONDecodeError:
        return {"status": "failed", "reason": reason[:500]}
    return info if isinstance(info, dict) else {"status": "failed", "reason": reason[:500]}


def _json_list(value: Any) -> list[str]:
    try:
        items = json.loads(str(value))
    except json.JSONDecodeError:
        return []
    return [str(x) for x in items] if isinstance(items, list) else []


@dataclass
class SecAggTracking(LegacyStrategy):
    """Around Flower's legacy strategy: sites' plaintext reports, refusals, checkpoints, metrics.

    It sees what the SecAgg+ workflow hands a legacy strategy: per site, only the training-row
    count and the scalar metrics; the arrays in every result are the already-unmasked mean.
    """

    strategy: LegacyFedAvg
    folder: RunFolder
    keys: list[str]
    dtypes: list[torch.dtype]
    min_sites: int
    histogram_bins: int
    round_timeout: float
    heads: LedgerHeads
    sites: dict[int, SiteRecord] = field(default_factory=dict)
    excluded: set[int] = field(default_factory=set)
    history: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"train": [], "tune": [], "test": []}
    )
    weights_over_max: list[str] = field(default_factory=list)
    max_weight: float = float("inf")
    stopped: str | None = None
    aggregated_rounds: set[int] = field(default_factory=set)

    # ---- sites ------------------------------------------------------------------------------------

    def _site(self, node_id: int) -> SiteRecord:
        if node_id not in self.sites:
            self.sites[node_id] = SiteRecord(node_id=node_id)
        return self.sites[node_id]

    def _site_named(self, name: str) -> SiteRecord | None:
        return next((r for r in self.sites.values() if r.name == name), None)

    def _failures(
        self, server_round: int, failures: list[BaseException | tuple[ClientProxy, Any]], phase: str
    ) -> None:
        for failure in failures:
            info = _error_info(failure)
            node = info.get("node_id")
            name = str(info["site"]) if "site" in info else None
            rec = (
                self._site(int(node))
                if isinstance(node, int)
                else (self._site_named(name) if name else None)
            )
            if rec is None:
                rec = self._site(-1 - len([n for n in self.sites if n < 0]))
                rec.name = f"unidentified site {-rec.node_id} (its error reply names no site)"
            if name and not name.startswith("node "):
                rec.name = name
            status = str(info.get("status", "failed"))
            rec.status = status
            rec.reason = f"{phase}, round {server_round}: {info.get('reason', 'no reason given')}"
            rec.details = {
                k: v
                for k, v in info.items()
                if k not in ("site", "status", "reason", "node_id", "min_cell_size")
            }
            rec.refusals.append(
                {"round": server_round, "phase": phase, "status": status, "reason": rec.reason}
            )
            if "epsilon_remaining" in info:
                rec.epsilon_remaining = float(info["epsilon_remaining"])
            if status == STATUS_REFUSED and isinstance(node, int):
                self.excluded.add(node)
            event = status if status in (STATUS_REFUSED, STATUS_ERROR) else "failed"
            self.folder.event(
                f"site-{event}", round=server_round, site=rec.label, reason=rec.reason, phase=phase
            )
            log(WARNING, "site %s %s in %s: %s", rec.label, status, phase, rec.reason)

    def to_arrays(self, ndarrays: NDArrays) -> ArrayRecord:
        state = OrderedDict(
            (k, torch.from_numpy(np.array(a, copy=True)).to(dt))
            for k, a, dt in zip(self.keys, ndarrays, self.dtypes, strict=True)
        )
        return ArrayRecord(state)

    def in_model_dtypes(self, parameters: Parameters) -> Parameters:
        """The unmasked mean back in the model's dtypes (dequantisation gives float64)."""
        arrays = parameters_to_ndarrays(parameters)
        return ndarrays_to_parameters(
            [
                np.asarray(a).astype(torch.empty(0, dtype=dt).numpy().dtype)
                for a, dt in zip(arrays, self.dtypes, strict=True)
            ]
        )

    # ---- legacy Strategy --------------------------------------------------------------------------

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        available = [
            p.node_id for p in client_manager.all().values() if p.node_id not in self.excluded
        ]
        if self.stopped is None and len(available) < self.min_sites:
            left = ", ".join(
                f"{r.label} ({r.status}: {r.reason})"
                for r in self.sites.values()
                if r.node_id in self.excluded
            )
            self.stopped = (
                f"round {server_round}: only {len(available)} site(s) can still take part, fewer "
                f"than the run's minimum of {self.min_sites}; left out: {left or 'none'}"
            )
            self.folder.event("round-skipped", round=server_round, reason=self.stopped)
        if self.stopped is not None:
            return []
        attempt = uuid.uuid4().hex
        self.folder.event("round-started", round=server_round, attempt=attempt)
        pairs = self.strategy.configure_fit(server_round, parameters, client_manager)
        out = []
        for proxy, ins in pairs:
            if proxy.node_id in self.excluded:
                continue
            config = dict(ins.config)
            config[KEY_ATTEMPT] = attempt
            config[KEY_LEDGER_HEADS] = self.heads.to_json()
            out.append((proxy, FitIns(ins.parameters, config)))
            self._site(proxy.node_id)
        return out

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        self._failures(server_round, list(failures), "train")
        per_site: dict[str, dict[str, Any]] = {}
        kept: list[tuple[ClientProxy, FitRes]] = []
        for proxy, res in results:
            rec = self._site(proxy.node_id)
            m = res.metrics
            rec.name = str(m.get("site", rec.name or f"node {proxy.node_id}"))
            if "ledger_seq" in m:
                problem = self.heads.observe(
                    rec.label, int(cast(float, m["ledger_seq"])), str(m.get("ledger_head", ""))
                )
                if problem is not None:
                    # Its model is already inside the unmasked sum; it is left out from now on.
                    rec.status = STATUS_REFUSED
                    rec.reason = f"ledger check failed: {problem}"
                    self.excluded.add(proxy.node_id)
                    rec.warnings.append(
                        f"round {server_round}: its masked model was already in the sum when "
                        "the ledger check failed (SecAgg+ cannot take one site out of a sum)"
                    )
                    self.folder.event(
                        "site-refused", round=server_round, site=rec.label, reason=rec.reason
                    )
                    continue
            rec.status = STATUS_OK
            rec.reason = None
            rec.rounds_ok += 1
            rec.trained_rounds.append(server_round)
            for key in _PRIVACY_FLOATS:
                if key in m:
                    setattr(rec, key, float(cast(float, m[key])))
            for key in ("dataset", "privacy_unit"):
                if key in m:
                    setattr(rec, key, str(m[key]))
            rec.non_dp_outputs.update(_json_list(m.get("non_dp_outputs", "[]")))
            rec.non_dp_outputs.add("num-examples (training rows, SecAgg+'s weight, in the clear)")
            for w in _json_list(m.get("warnings", "[]")):
                if w not in rec.warnings:
                    rec.warnings.append(w)
            if res.num_examples > self.max_weight:
                self.weights_over_max.append(rec.label)
            per_site[rec.label] = {
                "train_loss": m.get("train_loss"),
                "epsilon": rec.epsilon,
                "num_examples": res.num_examples,
            }
            self.folder.event(
                "site-trained",
                round=server_round,
                site=rec.label,
                epsilon=rec.epsilon,
                train_loss=m.get("train_loss"),
            )
            kept.append((proxy, res))
        self.heads.save()
        if len(kept) < self.min_sites:
            reason = f"{len(kept)} site(s) in the sum, fewer than the minimum of {self.min_sites}"
            self.folder.event("round-skipped", round=server_round, reason=reason)
            self.history["train"].append(
                {"round": server_round, "sites": per_site, "aggregated": False, "reason": reason}
            )
            return None, {}
        params, metrics = self.strategy.aggregate_fit(server_round, kept, [])
        if params is not None:
            params = self.in_model_dtypes(params)
            self.folder.save_checkpoint(
                server_round, self.to_arrays(parameters_to_ndarrays(params))
            )
            self.aggregated_rounds.add(server_round)
        pooled = {k: float(cast(float, v)) for k, v in metrics.items()} or None
        self.history["train"].append(
            {
                "round": server_round,
                "sites": per_site,
                "aggregated": params is not None,
                "pooled": pooled,
                "secure_aggregation": "the coordinator saw only the sum of these sites' models",
            }
        )
        return params, cast(dict[str, Scalar], dict(metrics))

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        recorded = any(r["round"] == server_round for r in self.history["train"])
        if self.stopped is None and server_round not in self.aggregated_rounds and not recorded:
            self.history["train"].append(
                {
                    "round": server_round,
                    "sites": {},
                    "aggregated": False,
                    "reason": "SecAgg+ halted: too few sites for the reconstruction threshold",
                }
            )
            self.folder.event(
                "round-skipped",
                round=server_round,
                reason="SecAgg+ halted before unmasking (too few sites for the threshold)",
            )
        if self.stopped is not None:
            return []
        pairs = self.strategy.configure_evaluate(server_round, parameters, client_manager)
        return [(p, ins) for p, ins in pairs if p.node_id not in self.excluded]

    def evaluation(
        self,
        server_round: int,
        results: list[tuple[int, EvaluateRes]],
        failures: list[BaseException | tuple[ClientProxy, Any]],
        split: str,
    ) -> dict[str, Any]:
        """Per-site panels and the pooled panel from the sites' coarsened score histograms."""
        self._failures(server_round, failures, f"evaluate ({split})")
        per_site: dict[str, Any] = {}
        hists: dict[str, CoarseHistogram] = {}
        for node_id, res in results:
            rec = self._site(node_id)
            m = dict(res.metrics)
            rec.name = str(m.pop("site", rec.name or f"node {node_id}"))
            m.pop("split", None)
            hist = json.loads(str(m.pop("histogram", "{}")))
            undefined = _json_list(m.pop("undefined_metrics", "[]"))
            rec.non_dp_outputs.update(_json_list(m.pop("non_dp_outputs", "[]")))
            panel: dict[str, Any] = {k: float(cast(float, v)) for k, v in m.items()}
            panel["n"] = int(res.num_examples)
            for name in undefined:
                panel.setdefault(name, None)
            per_site[rec.label] = panel
            rec.metrics[f"{split}:{server_round}"] = panel
            if hist:
                hists[rec.label] = CoarseHistogram.from_record(hist)
        return record_evaluation(
            self.history, self.folder, server_round, split, per_site, hists, self.histogram_bins
        )

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        entry = self.evaluation(
            server_round, [(p.node_id, r) for p, r in results], list(failures), "tune"
        )
        self.folder.event("round-finished", round=server_round)
        pooled = entry["pooled"] or {}
        numbers = {k: float(v) for k, v in pooled.items() if isinstance(v, int | float)}
        return numbers.get("brier"), cast(dict[str, Scalar], numbers)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return None  # no data at the coordinator

    def final_test(
        self, grid: Grid, parameters: Parameters, config: dict[str, Scalar], server_round: int
    ) -> dict[str, Any]:
        """Read each remaining site's sealed test split once, with the final model."""
        cfg = {**config, KEY_SPLIT: "test", "server-round": server_round}
        nodes = [n for n in grid.get_node_ids() if n not in self.excluded]
        content = compat.evaluateins_to_recorddict(EvaluateIns(parameters, cfg), True)
        messages = [
            Message(
                content=content,
                dst_node_id=n,
                message_type=MessageType.EVALUATE,
                group_id=str(server_round),
            )
            for n in nodes
        ]
        replies = list(grid.send_and_receive(messages, timeout=self.round_timeout))
        results = [
            (m.metadata.src_node_id, compat.recorddict_to_evaluateres(m.content))
            for m in replies
            if m.has_content()
        ]
        failures: list[BaseException | tuple[ClientProxy, Any]] = [
            Exception(m.error) for m in replies if not m.has_content()
        ]
        return self.evaluation(server_round, results, failures, "test")

    def site_summary(self) -> list[dict[str, Any]]:
        return [rec.to_dict() for rec in sorted(self.sites.values(), key=lambda r: r.label)]


def secure_aggregation_statement(
    run: RunConfig, workflow: RecordedSecAggPlus, tracking: SecAggTracking
) -> dict[str, Any]:
    """What privacy_summary.json states about SecAgg+: what it guarantees and what it does not."""
    sa = run.strategy.secagg
    warnings = []
    if tracking.weights_over_max:
        warnings.append(
            f"training-row counts above max_weight ({sa.max_weight:g}) at "
            f"{', '.join(sorted(set(tracking.weights_over_max)))}: the quantised sum may overflow"
        )
    halted = [r.round for r in workflow.rounds if not r.unmasked]
    if halted:
        warnings.append(f"SecAgg+ halted without an aggregate in round(s) {halted}")
    return {
        "enabled": True,
        "protocol": "SecAgg+ (Bell et al. 2020): flwr.server.workflow.SecAggPlusWorkflow at the "
        "coordinator, flwr.client.mod.secaggplus_mod at the sites",
        "num_shares": sa.num_shares,
        "reconstruction_threshold": sa.reconstruction_threshold,
        "guarantee": "the coordinator sees only the sum of the (training-row weighted) models of "
        "at least reconstruction_threshold sites in a round, never one site's model or update; a "
        "round with fewer sites left than the threshold stops without an aggregate",
        "does_not_protect": [
            "against a coordinator colluding with sites: the coordinator and "
            "reconstruction_threshold of a site's neighbours together can remove that site's masks",
            "against a coordinator that deviates from the protocol: Flower's SecAgg+ has no "
            "consistency-check round, so a coordinator that tells some neighbours a site dropped "
            "out and others that it is alive can unmask that site (honest-but-curious coordinator "
            "only)",
            "what the sum itself reveals (with two or three sites, a lot): each site's DP-SGD is "
            "what protects its records in the sum and in the released model",
            "values sent in the clear: each site's name, training-row count (its SecAgg+ weight), "
            "train loss and privacy figures, and tune/test metric panels and histograms",
        ],
        "no_per_update_validation": "the coordinator cannot check, clip, filter or robustly "
        "aggregate one site's update; a site sending a harmful model is not detected",
        "aggregation": f"{run.strategy.name}: weighted mean of the models by training rows "
        "(SecAgg+ sums weight x model and the weights)",
        "quantization": {
            "clipping_range": sa.clipping_range,
            "quantization_range": sa.quantization_range,
            "note": "each parameter, times its site's weight / max_weight, is clipped to "
            "[-clipping_range, clipping_range] and quantised before masking: the unmasked mean "
            "is exact to about 2 x clipping_range x max_weight / (quantization_range x training "
            "rows) per parameter and round: keep max_weight just above the largest site's rows",
        },
        "max_weight": sa.max_weight,
        "rounds": [r.to_dict() for r in workflow.rounds],
        "dp_sgd_at_sites": "unchanged: each site plans, records and enforces its own budget "
        "(see 'sites')",
        "mode_selection": "strategy.secure_aggregation = true; `fedward simulate` only in this "
        "version (flwr run ships fedward.server.app / fedward.client.app, which refuse it)",
        "warnings": warnings,
    }


def coordinate_secagg(grid: Grid, context: Context, settings: CoordinatorSettings) -> RunFolder:
    """Run one SecAgg+ federation end to end and leave a complete run folder."""
    run = settings.run
    if not run.strategy.secure_aggregation:
        raise ValueError("the SecAgg+ ServerApp runs only run configs with secure_aggregation")
    set_deterministic(run.seed)
    if settings.run_dir:
        folder = RunFolder.at(settings.run_dir, run, run_id=context.run_id, engine=settings.engine)
    else:
        folder = RunFolder.create(
            settings.output_dir, run, run_id=context.run_id, engine=settings.engine
        )
    schema = run_schema(run)
    run_id = settings.run_id or uuid.uuid4().hex
    transform = SharedTransform.from_schema(schema)
    folder.write_json("transform.json", transform.to_dict())
    base: dict[str, Scalar] = {
        KEY_RUN: run.to_json(),
        KEY_SCHEMA: schema.model_dump_json(),
        KEY_SIM_SITES: json.dumps(settings.sim_site_configs),
        KEY_RUN_ID: run_id,
        KEY_TRANSFORM: json.dumps(transform.to_dict()),
    }
    if settings.engine == "simulation":
        state_root = Path(settings.sim_state_dir or folder.path / "site-state")
        base[KEY_SIM_STATE] = str(state_root.resolve())
        heads_path = Path(settings.coordinator_state_dir or state_root) / "ledger_heads.json"
    else:
        coord_dir = settings.coordinator_state_dir or str(
            Path(settings.output_dir) / "coordinator-state"
        )
        heads_path = Path(coord_dir) / "ledger_heads.json"

    model = build_model(run.model, transform.n_outputs, schema.image_shape, seed=run.seed)
    state = model.state_dict()
    initial = ndarrays_to_parameters([t.detach().cpu().numpy() for t in state.values()])

    def fit_config(server_round: int) -> dict[str, Scalar]:
        extra: dict[str, Scalar] = {"server-round": server_round}
        if run.strategy.name == "fedprox":
            extra["proximal-mu"] = run.strategy.proximal_mu
        return {**base, **extra}

    def evaluate_config(server_round: int) -> dict[str, Scalar]:
        return {**base, KEY_SPLIT: "tune", "server-round": server_round}

    sa = run.strategy.secagg
    tracking = SecAggTracking(
        strategy=legacy_strategy(run.strategy, initial, fit_config, evaluate_config),
        folder=folder,
        keys=list(state.keys()),
        dtypes=[t.dtype for t in state.values()],
        min_sites=run.strategy.min_sites,
        histogram_bins=run.evaluation.histogram_bins,
        round_timeout=run.strategy.round_timeout,
        heads=LedgerHeads(heads_path),
        max_weight=sa.max_weight,
    )
    workflow = RecordedSecAggPlus(
        num_shares=sa.num_shares,
        reconstruction_threshold=sa.reconstruction_threshold,
        max_weight=sa.max_weight,
        clipping_range=sa.clipping_range,
        quantization_range=sa.quantization_range,
        timeout=sa.timeout_s,
    )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=run.rounds, round_timeout=run.strategy.round_timeout),
        strategy=tracking,
    )
    folder.event(
        "run-started",
        run_id=run_id,
        flower_run_id=str(context.run_id),
        name=run.name,
        rounds=run.rounds,
        dp=run.privacy.dp,
        target_epsilon=run.privacy.target_epsilon,
        secure_aggregation=True,
        folder=str(folder.path),
    )
    started = time.time()
    _wait_for_nodes(grid, run.strategy.min_sites, run.strategy.site_wait)
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)

    test: dict[str, Any] | None = None
    if tracking.stopped is None and tracking.aggregated_rounds:
        final = compat.arrayrecord_to_parameters(
            legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
        )
        final = tracking.in_model_dtypes(final)
        test = tracking.final_test(grid, final, dict(base), run.rounds)
        folder.save_model(
            tracking.to_arrays(parameters_to_ndarrays(final)),
            {
                "kind": run.model.kind,
                "hidden": run.model.hidden,
                "activation": run.model.activation,
                "n_inputs": transform.n_outputs,
                "feature_names": transform.feature_names,
                "image_shape": schema.image_shape,
                "output": "one logit per row; sigmoid gives P(positive)",
                "transform_fingerprint": transform.fingerprint(),
                "secure_aggregation": True,
            },
        )
    elapsed = time.time() - started
    stopped = tracking.stopped or (
        None if tracking.aggregated_rounds else "no round produced an aggregate under SecAgg+"
    )

    tracking.heads.save()
    sites = tracking.site_summary()
    folder.write_json(
        "metrics.json",
        {
            "train": tracking.history["train"],
            "tune": tracking.history["tune"],
            "test": test,
            "elapsed_s": round(elapsed, 3),
            "secure_aggregation": True,
        },
    )
    record = run_record(run, schema, transform, sites)
    record.update(
        {
            "run_id": run_id,
            "status": "stopped" if stopped else "finished",
            "stopped_reason": stopped,
            "mode": "secure aggregation (SecAgg+, Flower's legacy workflow)",
        }
    )
    statement = secure_aggregation_statement(run, workflow, tracking)
    record["privacy"]["secure_aggregation"] = statement
    folder.write_json("run_record.json", record)
    folder.write_json(
        "privacy_summary.json",
        privacy_summary(run, run_id, sites, secure_aggregation=statement),
    )
    if stopped:
        folder.event("run-stopped", elapsed_s=round(elapsed, 3), reason=stopped)
    else:
        folder.event("run-finished", elapsed_s=round(elapsed, 3), test=test)
    return folder


def make_secagg_server_app(settings: CoordinatorSettings) -> ServerApp:
    """A SecAgg+ ServerApp bound to settings given in-process (used by `fedward simulate`)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        folder = coordinate_secagg(reply_polling_grid(grid), context, settings)
        settings.run_dir = str(folder.path)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """The SecAgg+ ServerApp for a Flower app whose ClientApp is ``fedward.client.secagg_app:app``."""
    coordinate_secagg(reply_polling_grid(grid), context, settings_from_context(context))
