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
split, from the sites' metric panels and coarsened histograms as in the Message-API mode, all
filed in the same book of sites (``fedward.server.tracking_book``) and written out by the same
run outputs (``fedward.server.coordinator_outputs``). What a SecAgg+ run does not have: baselines,
the privacy audit and data profiles, which its sites' legacy client cannot answer
(``SecAggTracking.supports_companions``).

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
from collections.abc import Callable
from typing import Any, ClassVar, cast

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
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAdam as LegacyFedAdam
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.strategy import FedProx as LegacyFedProx
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid, ServerApp

from fedward.common.flower_compat import MAIN_PARAMS_RECORD
from fedward.common.flower_compat import recorddict_compat as compat
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
    STATUS_ERROR,
    STATUS_REFUSED,
)
from fedward.common.run_config import run_schema
from fedward.common.strategy_config import StrategyConfig
from fedward.server import coordinator_outputs as outputs
from fedward.server.coordinator_secagg import RecordedSecAggPlus, secure_aggregation_statement
from fedward.server.coordinator_settings import (
    CoordinatorSettings,
    coordinator_dir,
    open_run_folder,
    settings_from_context,
    sim_state_root,
)
from fedward.server.federation import wait_for_nodes
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.reply_polling_grid import reply_polling_grid
from fedward.server.run_folder import RunFolder
from fedward.server.tracking_book import STATUS_FAILED, Panels, SiteBook, SiteRecord

# What a site's training rows are to SecAgg+: its weight in the sum, sent in the clear.
_WEIGHT_IN_THE_CLEAR = "num-examples (training rows, SecAgg+'s weight, in the clear)"


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


class SecAggTracking(LegacyStrategy):
    """Around Flower's legacy strategy: sites' plaintext reports, refusals, checkpoints, metrics.

    It sees what the SecAgg+ workflow hands a legacy strategy: per site, only the training-row
    count and the scalar metrics; the arrays in every result are the already-unmasked mean. It is
    the SecAgg+ transport's adapter to the coordinator's book of sites
    (``fedward.server.tracking_book``), as ``SiteTracking`` is the Message API's.
    """

    # Baselines, the privacy audit and data profiles are Message-API requests (``query.*``) that
    # the sites' SecAgg+ ClientApp (``fedward.client.secagg_app``: Flower's legacy client behind
    # ``secaggplus_mod``) does not answer: a SecAgg+ run does not ask for them, and its run
    # record says so (``not_asked``).
    supports_companions = False
    not_asked: ClassVar[dict[str, str]] = {
        companion: "not asked: the sites' SecAgg+ ClientApp answers only training and evaluation"
        for companion in ("baselines", "audit", "profiles")
    }

    def __init__(
        self,
        strategy: LegacyFedAvg,
        *,
        folder: RunFolder,
        keys: list[str],
        dtypes: list[torch.dtype],
        min_sites: int,
        histogram_bins: int,
        round_timeout: float,
        heads: LedgerHeads,
        max_weight: float = float("inf"),
    ) -> None:
        self.strategy = strategy
        self.book = SiteBook(
            folder, histogram_bins=histogram_bins, min_sites=min_sites, heads=heads
        )
        self.folder = folder
        self.heads = heads
        self.keys = keys
        self.dtypes = dtypes
        self.min_sites = min_sites
        self.round_timeout = round_timeout
        self.max_weight = max_weight
        self.weights_over_max: list[str] = []
        self.stopped: str | None = None
        self.aggregated_rounds: set[int] = set()

    # ---- sites ------------------------------------------------------------------------------------

    def _reporter(self, node: Any, name: str | None) -> SiteRecord:
        """The record an error reply speaks for: by node id, else by the site it names."""
        book = self.book
        rec = book.site(int(node)) if isinstance(node, int) else None
        if rec is None and name:
            rec = book.site_named(name)
        if rec is None:
            rec = book.site(-1 - len([n for n in book.sites if n < 0]))
            rec.name = f"unidentified site {-rec.node_id} (its error reply names no site)"
        return rec

    def _failures(
        self, server_round: int, failures: list[BaseException | tuple[ClientProxy, Any]], phase: str
    ) -> None:
        for failure in failures:
            info = _error_info(failure)
            node = info.get("node_id")
            name = str(info["site"]) if "site" in info else None
            rec = self._reporter(node, name)
            if name and not name.startswith("node "):
                rec.name = name
            status = str(info.get("status", STATUS_FAILED))
            self.book.note_refusal(
                rec,
                server_round,
                phase,
                status,
                f"{phase}, round {server_round}: {info.get('reason', 'no reason given')}",
                details={
                    k: v
                    for k, v in info.items()
                    if k not in ("site", "status", "reason", "node_id", "min_cell_size")
                },
                budget_left=(
                    float(info["epsilon_remaining"]) if "epsilon_remaining" in info else None
                ),
                exclude=status == STATUS_REFUSED and isinstance(node, int),
                event=status if status in (STATUS_REFUSED, STATUS_ERROR) else STATUS_FAILED,
            )

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
        available = self.book.remaining(p.node_id for p in client_manager.all().values())
        if self.stopped is None:
            self.stopped = self.book.too_few(server_round, len(available))
            if self.stopped is not None:
                self.folder.event("round-skipped", round=server_round, reason=self.stopped)
        if self.stopped is not None:
            return []
        attempt = self.book.start_round(server_round)
        pairs = self.strategy.configure_fit(server_round, parameters, client_manager)
        out = []
        for proxy, ins in pairs:
            if proxy.node_id in self.book.excluded:
                continue
            config = dict(ins.config)
            config[KEY_ATTEMPT] = attempt
            config[KEY_LEDGER_HEADS] = self.heads.to_json()
            out.append((proxy, FitIns(ins.parameters, config)))
            self.book.site(proxy.node_id)
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
            rec = self.book.site(proxy.node_id)
            m = res.metrics
            rec.name = str(m.get("site", rec.name or f"node {proxy.node_id}"))
            if "ledger_seq" in m:
                problem = self.book.observe_ledger(
                    rec, int(cast(float, m["ledger_seq"])), str(m.get("ledger_head", ""))
                )
                if problem is not None:
                    # Its model is already inside the unmasked sum; it is left out from now on.
                    rec.warnings.append(
                        f"round {server_round}: its masked model was already in the sum when "
                        "the ledger check failed (SecAgg+ cannot take one site out of a sum)"
                    )
                    self.book.refuse(
                        rec, server_round, f"ledger check failed: {problem}", announce=False
                    )
                    continue
            self.book.note_trained(rec, server_round, m)
            self.book.note_outputs(
                rec,
                [*_json_list(m.get("non_dp_outputs", "[]")), _WEIGHT_IN_THE_CLEAR],
                _json_list(m.get("warnings", "[]")),
            )
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
        self.book.save_heads()
        if len(kept) < self.min_sites:
            reason = f"{len(kept)} site(s) in the sum, fewer than the minimum of {self.min_sites}"
            self.folder.event("round-skipped", round=server_round, reason=reason)
            self.book.history["train"].append(
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
        self.book.history["train"].append(
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
        recorded = any(r["round"] == server_round for r in self.book.history["train"])
        if self.stopped is None and server_round not in self.aggregated_rounds and not recorded:
            self.book.history["train"].append(
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
        return [(p, ins) for p, ins in pairs if p.node_id not in self.book.excluded]

    def evaluation(
        self,
        server_round: int,
        results: list[tuple[int, EvaluateRes]],
        failures: list[BaseException | tuple[ClientProxy, Any]],
        split: str,
    ) -> dict[str, Any]:
        """Per-site panels and the pooled panel from the sites' coarsened score histograms."""
        self._failures(server_round, failures, f"evaluate ({split})")
        panels = Panels(split, server_round)
        for node_id, res in results:
            rec = self.book.site(node_id)
            m = dict(res.metrics)
            rec.name = str(m.pop("site", rec.name or f"node {node_id}"))
            m.pop("split", None)
            hist = json.loads(str(m.pop("histogram", "{}")))
            undefined = _json_list(m.pop("undefined_metrics", "[]"))
            rec.non_dp_outputs.update(_json_list(m.pop("non_dp_outputs", "[]")))
            panel: dict[str, Any] = {k: float(cast(float, v)) for k, v in m.items()}
            panels.add(rec, panel, int(res.num_examples), undefined, hist)
        return self.book.record_panels(panels, keep_histograms=False)

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
        nodes = self.book.remaining(grid.get_node_ids())
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
        return self.book.site_summary()


def coordinate_secagg(grid: Grid, context: Context, settings: CoordinatorSettings) -> RunFolder:
    """Run one SecAgg+ federation end to end and leave a complete run folder."""
    run = settings.run
    if not run.strategy.secure_aggregation:
        raise ValueError("the SecAgg+ ServerApp runs only run configs with secure_aggregation")
    set_deterministic(run.seed)
    folder = open_run_folder(settings, context)
    schema = run_schema(run)
    run_id = settings.run_id or uuid.uuid4().hex
    transform = SharedTransform.from_schema(schema)
    facts = outputs.RunFacts(run, run_id, schema, transform)
    folder.write_json("transform.json", transform.to_dict())
    base: dict[str, Scalar] = {
        KEY_RUN: run.to_json(),
        KEY_SCHEMA: schema.model_dump_json(),
        KEY_SIM_SITES: json.dumps(settings.sim_site_configs),
        KEY_RUN_ID: run_id,
        KEY_TRANSFORM: json.dumps(transform.to_dict()),
    }
    if settings.engine == "simulation":
        base[KEY_SIM_STATE] = str(sim_state_root(settings, folder).resolve())
    heads_path = coordinator_dir(settings, folder) / "ledger_heads.json"

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
    outputs.announce_start(folder, run, run_id, str(context.run_id), secure_aggregation=True)
    started = time.time()
    wait_for_nodes(grid, run.strategy.min_sites, run.strategy.site_wait)
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
            outputs.model_metadata(facts, secure_aggregation=True),
        )
    # No baselines, audit or data profiles here: SecAggTracking.supports_companions is False.
    elapsed = time.time() - started
    stopped = tracking.stopped or (
        None if tracking.aggregated_rounds else "no round produced an aggregate under SecAgg+"
    )

    return outputs.finish_run(
        tracking.book,
        facts,
        test,
        elapsed,
        stopped,
        secure_aggregation=secure_aggregation_statement(run, workflow, tracking.weights_over_max),
        mode="secure aggregation (SecAgg+, Flower's legacy workflow)",
        not_asked=None if tracking.supports_companions else tracking.not_asked,
    )


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
