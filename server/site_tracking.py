"""A strategy wrapper that keeps a federation going when sites refuse or fail, and records everything.

Shaped like Flower's DP wrappers (``flwr.serverapp.strategy.dp_fixed_clipping``): it holds the inner
strategy and delegates aggregation to it, only deciding *which* replies reach it. It also checkpoints
the global model every round and turns each site's metric panel and coarsened score histogram into
per-site and pooled metrics (pooled from histograms, never from raw scores).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedward.common.errors import FedwardError
from fedward.common.metrics import CoarseHistogram, pooled_panel
from fedward.common.protocol import (
    ARRAYS,
    CONFIG,
    KEY_ATTEMPT,
    KEY_LEDGER_HEADS,
    KEY_SPLIT,
    METRICS,
    PRIVACY_FLOATS,
    REPLY,
    STATUS_OK,
    STATUS_REFUSED,
)
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.reply_check import malformed_reply
from fedward.server.run_folder import RunFolder
from fedward.server.site_registry import SiteRegistry
from fedward.server.update_validation import STATUS_REJECTED, UpdateValidator

_AGGREGATED_TRAIN_KEYS = ("num-examples", "train_loss")
STATUS_DROPPED = "dropped"


@dataclass
class SiteRecord:
    """What the coordinator knows about one site: never its data, only what it chose to send."""

    node_id: int
    name: str | None = None
    status: str = "pending"
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    rounds_ok: int = 0
    # The rounds whose update from this site went into the model: what its data shaped.
    trained_rounds: list[int] = field(default_factory=list)
    epsilon: float | None = None
    delta: float | None = None
    epsilon_lifetime: float | None = None
    delta_lifetime: float | None = None
    epsilon_budget: float | None = None
    epsilon_remaining: float | None = None
    epsilon_tuning: float | None = None
    # ε of the model this run trains: the run composed with the tuning trials that chose it.
    epsilon_model: float | None = None
    # ε each companion federation (federated baseline, controls) spent at this site, by name.
    companion_epsilon: dict[str, float] = field(default_factory=dict)
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    dataset: str | None = None
    accountant: str | None = None
    privacy_unit: str | None = None
    multi_row_patients: bool | None = None
    refusals: list[dict[str, Any]] = field(default_factory=list)
    # Rounds this site did not answer (crashed, disconnected, timed out): {"round", "phase", "at",
    # "reason"}. The site is asked again next round if it is connected.
    dropouts: list[dict[str, Any]] = field(default_factory=list)
    # Updates the coordinator dropped before aggregation: {"round", "reason", "update_norm"}.
    rejected_updates: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    non_dp_outputs: set[str] = field(default_factory=set)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or f"node {self.node_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "site": self.label,
            "status": self.status,
            "reason": self.reason,
            "details": self.details,
            "rounds_ok": self.rounds_ok,
            "trained_rounds": list(self.trained_rounds),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "epsilon_lifetime": self.epsilon_lifetime,
            "delta_lifetime": self.delta_lifetime,
            "epsilon_budget": self.epsilon_budget,
            "epsilon_remaining": self.epsilon_remaining,
            "epsilon_tuning": self.epsilon_tuning,
            "epsilon_model": self.epsilon_model,
            "companion_epsilon": dict(self.companion_epsilon),
            "dataset": self.dataset,
            "accountant": self.accountant,
            "privacy_unit": self.privacy_unit,
            "multi_row_patients": self.multi_row_patients,
            "refusals": self.refusals,
            "rejected_updates": self.rejected_updates,
            "dropouts": self.dropouts,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "warnings": self.warnings,
            "non_dp_outputs": sorted(self.non_dp_outputs),
        }


_PRIVACY_FLOATS = PRIVACY_FLOATS


class TooFewSites(FedwardError):
    """Fewer sites remain than the run's minimum: the run stops cleanly."""


def record_evaluation(
    history: dict[str, list[dict[str, Any]]],
    folder: RunFolder,
    server_round: int,
    split: str,
    per_site: dict[str, Any],
    hists: dict[str, CoarseHistogram],
    bins: int,
    site_hists: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Pool the sites' histograms (never raw scores), keep the round's entry and announce it.

    The sealed test entry also keeps each site's coarse histogram: the model card draws its ROC,
    PR and calibration curves from them. Histograms are keyed by site, so a pooled figure names
    the sites it leaves out, and the sites' own panels make accuracy and Brier exact where the
    histograms cannot resolve them.
    """
    pooled = pooled_panel(hists, bins, site_panels=per_site) if hists else None
    entry = {"round": server_round, "split": split, "sites": per_site, "pooled": pooled}
    if split == "test" and site_hists is not None:
        entry["histograms"] = site_hists
    history[split].append(entry)
    folder.event("evaluated", round=server_round, split=split, sites=per_site, pooled=pooled)
    return entry


def _norm_entry(norms: dict[int, float], node: int) -> dict[str, float]:
    return {"update_norm": round(norms[node], 6)} if node in norms else {}


def _reply_info(msg: Message) -> dict[str, Any]:
    if not msg.has_content() or REPLY not in msg.content.config_records:
        return {}
    return dict(msg.content.config_records[REPLY])


class SiteTracking(Strategy):
    """Filter refusals and failures, record per-site status and privacy spend, checkpoint each round."""

    def __init__(
        self,
        strategy: Strategy,
        *,
        folder: RunFolder,
        histogram_bins: int,
        min_sites: int,
        heads: LedgerHeads | None = None,
        validator: UpdateValidator | None = None,
        registry: SiteRegistry | None = None,
    ) -> None:
        if histogram_bins < 2:
            raise ValueError("histogram_bins must be at least 2")
        if min_sites < 1:
            raise ValueError("min_sites must be at least 1")
        self.strategy = strategy
        self.folder = folder
        self.bins = histogram_bins
        self.min_sites = min_sites
        self.sites: dict[int, SiteRecord] = {}
        self.excluded: set[int] = set()
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "tune": [], "test": []}
        self.heads = heads
        # Which node key speaks for which site: with a register, a reply is the registered
        # site's whatever name it reports; without one (simulation), the reported name.
        self.registry = registry if registry is not None and registry.active else None
        self.bound: dict[int, str | None] = {}
        self._binding_announced = False
        self.attempts: dict[int, str] = {}
        # Every train reply is checked against the model sent that round before aggregation.
        self.validator = validator
        self._train_arrays: ArrayRecord | None = None
        # Resume: Flower's loop counts rounds from 1; the real round is that plus the rounds a
        # checkpoint already holds, and every record, config and ledger row gets the real one.
        self.round_offset = 0
        # Called with (round, model) once a round's tune evaluation is recorded: the checkpoint.
        self.on_round_end: Callable[[int, ArrayRecord], None] | None = None
        # Node ids of records restored from a checkpoint: a site that comes back under a new node id
        # (a restarted SuperLink) is matched to its record by name.
        self.restored: set[int] = set()
        # Node ids each phase of the current round was sent to; a reply missing at aggregation
        # time is a dropout.
        self._asked: dict[str, set[int]] = {}
        self._round_arrays: ArrayRecord | None = None

    # ---- delegation -------------------------------------------------------------------------------

    def summary(self) -> None:
        self.strategy.summary()

    def _site(self, node_id: int) -> SiteRecord:
        if node_id not in self.sites:
            self.sites[node_id] = SiteRecord(node_id=node_id, name=self.bound.get(node_id))
        return self.sites[node_id]

    # ---- identities bound to node keys ------------------------------------------------------------

    @property
    def binding(self) -> bool:
        return self.registry is not None

    def bind(self, grid: Grid) -> None:
        """Node id -> registered site, from the public keys the SuperLink authenticated."""
        if self.registry is None:
            if not self._binding_announced:
                self._binding_announced = True
                self.folder.event(
                    "site-identities",
                    bound=False,
                    reason="no site register at the coordinator: a site is the name it reports",
                )
            return
        self.bound = self.registry.bind(grid.get_nodes())
        if not self._binding_announced:
            self._binding_announced = True
            self.folder.event(
                "site-identities",
                bound=True,
                register=str(self.registry.path),
                sites=sorted(self.registry.sites),
            )

    def _refuse_node(
        self, node: int, server_round: int, phase: str, reason: str, **why: Any
    ) -> None:
        """Refuse a node for what it is, not what it sent: stop asking it, and name it."""
        rec = self._site(node)
        rec.status = STATUS_REFUSED
        rec.reason = reason
        rec.details = {"node_id": node, **why}
        rec.refusals.append(
            {"round": server_round, "phase": phase, "status": STATUS_REFUSED, "reason": reason}
        )
        self.excluded.add(node)
        self.folder.event(
            "site-refused", round=server_round, site=rec.label, reason=reason, phase=phase, **why
        )
        log(WARNING, "site %s refused by the coordinator: %s", rec.label, reason)

    def _unregistered(self, node: int, server_round: int, phase: str) -> bool:
        """A node whose key is bound to no site is never sent anything (and is named once)."""
        if not self.binding or self.bound.get(node) is not None:
            return False
        if node not in self.excluded:
            self._refuse_node(
                node,
                server_round,
                phase,
                f"node {node}'s key is not registered to any site at the coordinator "
                "(`fedward coordinator sites add NAME KEY.pub`)",
                identity="unregistered-key",
            )
        return True

    def _impersonates(self, node: int, claimed: str | None) -> bool:
        registered = self.bound.get(node)
        return self.binding and claimed is not None and claimed != registered

    def _own_head(self, msg: Message) -> None:
        """Each site receives its own ledger head only, never the others'."""
        assert self.heads is not None
        name = self.bound.get(msg.metadata.dst_node_id)
        head = self.heads.heads.get(name) if name is not None else None
        payload = json.dumps({name: [head[0], head[1]]} if head is not None else {})
        # Flower's strategies hand every node the same RecordDict: this node gets its own (the
        # model's ArrayRecord is shared, not copied).
        items = dict(msg.content.items())
        for key, record in msg.content.config_records.items():
            if KEY_ATTEMPT in record:
                items[key] = ConfigRecord({**dict(record), KEY_LEDGER_HEADS: payload})
        msg.content = RecordDict(items)

    def _keep(
        self, messages: Iterable[Message], phase: str, server_round: int = 0
    ) -> list[Message]:
        kept = []
        for m in messages:
            if m.metadata.dst_node_id in self.excluded:
                continue
            if self._unregistered(m.metadata.dst_node_id, server_round, phase):
                continue
            self._site(m.metadata.dst_node_id)
            kept.append(m)
        self._asked[phase] = {m.metadata.dst_node_id for m in kept}
        return kept

    def _record_dropouts(
        self, server_round: int, phase: str, replied: set[int], errors: list[str]
    ) -> None:
        """Every site asked in ``phase`` that sent no reply of its own dropped out of this round.

        Flower answers for a node that stopped sending heartbeats with an error reply from the
        SuperLink itself (not from the node), and for one that never answers with nothing at all
        once the round's timeout passes: either way the round closes without it.
        """
        why = "; ".join(sorted(set(errors))) or "no reply before the round's timeout"
        for node in sorted(self._asked.pop(phase, set()) - replied):
            rec = self._site(node)
            rec.status = STATUS_DROPPED
            rec.reason = f"{phase}, round {server_round}: no reply ({why})"
            rec.dropouts.append(
                {"round": server_round, "phase": phase, "at": round(time.time(), 3), "reason": why}
            )
            # A site that comes back under a new node id is matched to this record by name.
            self.restored.add(node)
            self.folder.event("site-dropped", round=server_round, site=rec.label, reason=why)
            log(
                WARNING,
                "site %s dropped out of %s, round %s: %s",
                rec.label,
                phase,
                server_round,
                why,
            )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset
        self.bind(grid)
        available = [n for n in grid.get_node_ids() if n not in self.excluded]
        if len(available) < self.min_sites:
            left = ", ".join(
                f"{r.label} ({r.status}: {r.reason})"
                for r in self.sites.values()
                if r.node_id in self.excluded
            )
            raise TooFewSites(
                f"round {server_round}: only {len(available)} site(s) can still take part, fewer "
                f"than the run's minimum of {self.min_sites}; left out: {left or 'none'}"
            )
        # Every round attempt has its own id: a retried round spends again and is accounted again.
        attempt = uuid.uuid4().hex
        self.attempts[server_round] = attempt
        config[KEY_ATTEMPT] = attempt
        if self.heads is not None and not self.binding:
            config[KEY_LEDGER_HEADS] = self.heads.to_json()  # unbound: every site's, as reported
        self.folder.event("round-started", round=server_round, attempt=attempt)
        self._train_arrays = arrays
        kept = self._keep(
            self.strategy.configure_train(server_round, arrays, config, grid), "train", server_round
        )
        if self.heads is not None and self.binding:
            for m in kept:
                self._own_head(m)
        return kept

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset
        self.bind(grid)
        self._round_arrays = arrays
        return self._keep(
            self.strategy.configure_evaluate(server_round, arrays, config, grid),
            "evaluate (tune)",
            server_round,
        )

    # ---- classification of replies ------------------------------------------------------------

    def _classify(self, server_round: int, replies: Iterable[Message], phase: str) -> list[Message]:
        """Record every reply; return those that may be aggregated."""
        ok: list[Message] = []
        asked = self._asked.get(phase)
        replied: set[int] = set()
        unattributed: list[str] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if asked is not None and node not in asked:
                # Not from a site asked this round: Flower's own error reply for a node it lost.
                unattributed.append(
                    (msg.error.reason or "error") if msg.has_error() else "unexpected reply"
                )
                continue
            replied.add(node)
            rec = self._site(node)
            if msg.has_error():
                rec.status = "failed"
                rec.reason = f"{phase}, round {server_round}: {msg.error.reason}"
                self.folder.event(
                    "site-failed", round=server_round, site=rec.label, reason=rec.reason
                )
                log(WARNING, "site %s failed in %s: %s", rec.label, phase, msg.error.reason)
                continue
            info = _reply_info(msg)
            claimed = str(info["site"]) if "site" in info else None
            if self.binding:
                rec.name = self.bound.get(node) or rec.name
            else:
                rec.name = claimed or rec.name or f"node {node}"
            rec = self._reclaim(rec)
            if self._impersonates(node, claimed):
                # Refused before anything it sent is read: its ledger head, its update, its ε.
                self._refuse_node(
                    node,
                    server_round,
                    phase,
                    f"node {node} is registered as site '{rec.label}' but its reply claims to be "
                    f"site '{claimed}': a site speaks only for itself",
                    identity="impersonation",
                    registered_site=rec.label,
                    claimed_site=claimed,
                )
                continue
            status = str(info.get("status", "error"))
            problem = f"no ConfigRecord '{REPLY}'" if not info else None
            if problem is None and status == STATUS_OK:
                problem = malformed_reply(msg, phase)
            if problem is not None:
                # A reply that cannot be read fails this site only: the round goes on without it.
                rec.status = "failed"
                rec.reason = f"{phase}, round {server_round}: malformed reply: {problem}"
                self.folder.event(
                    "site-failed", round=server_round, site=rec.label, reason=rec.reason
                )
                log(WARNING, "site %s sent a malformed reply: %s", rec.label, rec.reason)
                continue
            if status != STATUS_OK:
                rec.status = status
                rec.reason = str(info.get("reason", "no reason given"))
                rec.details = {
                    k: v for k, v in info.items() if k not in ("site", "status", "reason")
                }
                rec.refusals.append(
                    {
                        "round": server_round,
                        "phase": phase,
                        "status": status,
                        "reason": rec.reason,
                        "epsilon_remaining": info.get("epsilon_remaining"),
                    }
                )
                if isinstance(info.get("epsilon_remaining"), int | float):
                    rec.epsilon_remaining = float(info["epsilon_remaining"])
                if status == STATUS_REFUSED:
                    # A refusal is the site's decision (bad data, policy, budget): stop asking it.
                    self.excluded.add(node)
                self.folder.event(
                    f"site-{status}",
                    round=server_round,
                    site=rec.label,
                    reason=rec.reason,
                    phase=phase,
                )
                log(WARNING, "site %s %s in %s: %s", rec.label, status, phase, rec.reason)
                continue
            problem = self._observe_ledger(rec, info)
            if problem is not None:
                rec.status = STATUS_REFUSED
                rec.reason = f"ledger check failed: {problem}"
                self.excluded.add(node)
                self.folder.event(
                    "site-refused",
                    round=server_round,
                    site=rec.label,
                    reason=rec.reason,
                    phase=phase,
                )
                log(WARNING, "site %s refused by the coordinator: %s", rec.label, rec.reason)
                continue
            rec.non_dp_outputs.update(str(x) for x in info.get("non_dp_outputs", []))
            for w in info.get("warnings", []):
                if w not in rec.warnings:
                    rec.warnings.append(str(w))
            ok.append(msg)
        if asked is not None:
            self._record_dropouts(server_round, phase, replied, unattributed)
        return ok

    def _reclaim(self, rec: SiteRecord) -> SiteRecord:
        """The restored record of a site that came back under a new node id, moved to that id."""
        for node in list(self.restored):
            old = self.sites.get(node)
            if old is not None and old is not rec and old.name == rec.name:
                self.restored.discard(node)
                del self.sites[node]
                old.node_id = rec.node_id
                self.sites[rec.node_id] = old
                return old
        return rec

    def _observe_ledger(self, rec: SiteRecord, info: dict[str, Any]) -> str | None:
        if self.heads is None or "ledger_seq" not in info:
            return None
        return self.heads.observe(rec.label, int(info["ledger_seq"]), str(info["ledger_head"]))

    @staticmethod
    def _record_privacy(rec: SiteRecord, info: dict[str, Any]) -> None:
        for key in _PRIVACY_FLOATS:
            if key in info:
                setattr(rec, key, float(info[key]))
        for key in ("dataset", "privacy_unit", "accountant"):
            if key in info:
                setattr(rec, key, str(info[key]))
        if "multi_row_patients" in info:
            rec.multi_row_patients = bool(info["multi_row_patients"])

    def save_heads(self) -> None:
        if self.heads is not None:
            self.heads.save()

    # ---- training ---------------------------------------------------------------------------------

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        ok = self._classify(server_round, replies, "train")
        per_site: dict[str, dict[str, Any]] = {}
        ok, norms = self._validate_updates(server_round, ok, per_site)
        for msg in ok:
            info = _reply_info(msg)
            rec = self._site(msg.metadata.src_node_id)
            rec.status = "ok"
            rec.reason = None
            rec.rounds_ok += 1
            rec.trained_rounds.append(server_round)
            self._record_privacy(rec, info)
            metrics = dict(msg.content.metric_records[METRICS])
            per_site[rec.label] = {
                "train_loss": metrics.get("train_loss"),
                "epsilon": rec.epsilon,
                "num_examples": metrics.get("num-examples"),
                **_norm_entry(norms, msg.metadata.src_node_id),
            }
            self.folder.event(
                "site-trained",
                round=server_round,
                site=rec.label,
                epsilon=rec.epsilon,
                epsilon_model=rec.epsilon_model,
                train_loss=metrics.get("train_loss"),
            )
        if len(ok) < self.min_sites:
            self.save_heads()
            self.folder.event(
                "round-skipped",
                round=server_round,
                reason=f"{len(ok)} site(s) answered, fewer than the minimum of {self.min_sites}",
            )
            self.history["train"].append(
                {"round": server_round, "sites": per_site, "aggregated": False}
            )
            return None, None
        # The inner strategy sees exactly what it expects: one ArrayRecord, one consistent MetricRecord.
        for msg in ok:
            site_metrics = msg.content.metric_records[METRICS]
            msg.content = RecordDict(
                {
                    ARRAYS: msg.content.array_records[ARRAYS],
                    METRICS: MetricRecord(
                        {k: site_metrics[k] for k in _AGGREGATED_TRAIN_KEYS if k in site_metrics}
                    ),
                }
            )
        arrays, agg = self.strategy.aggregate_train(server_round, ok)
        self.save_heads()
        if arrays is not None:
            self.folder.save_checkpoint(server_round, arrays)
        self.history["train"].append(
            {
                "round": server_round,
                "sites": per_site,
                "aggregated": arrays is not None,
                "pooled": dict(agg) if agg is not None else None,
            }
        )
        return arrays, agg

    def _validate_updates(
        self, server_round: int, ok: list[Message], per_site: dict[str, dict[str, Any]]
    ) -> tuple[list[Message], dict[int, float]]:
        """Drop the updates the validator rejects, naming each site and why; the site still spent
        its ε on the round, so its privacy figures are recorded all the same."""
        if self.validator is None:
            return ok, {}
        if self._train_arrays is None:
            raise RuntimeError("aggregate_train before configure_train: no global model to check")
        screening = self.validator.screen(ok, self._train_arrays, ("num-examples",))
        for msg in ok:
            node = msg.metadata.src_node_id
            if node not in screening.rejected:
                continue
            rec = self._site(node)
            self._record_privacy(rec, _reply_info(msg))
            reason = f"update from site {rec.label}: {screening.rejected[node]}"
            rec.status = STATUS_REJECTED
            rec.reason = f"round {server_round}: {reason}"
            rec.rejected_updates.append(
                {"round": server_round, "reason": reason, "update_norm": screening.norms.get(node)}
            )
            per_site[rec.label] = {
                "status": STATUS_REJECTED,
                "reason": reason,
                "epsilon": rec.epsilon,
                **_norm_entry(screening.norms, node),
            }
            self.folder.event("site-rejected", round=server_round, site=rec.label, reason=reason)
            log(WARNING, "round %s: dropped the %s", server_round, reason)
        return screening.kept, screening.norms

    # ---- evaluation -------------------------------------------------------------------------------

    def _evaluation(
        self, server_round: int, replies: Iterable[Message], split: str
    ) -> dict[str, Any]:
        ok = self._classify(server_round, replies, f"evaluate ({split})")
        per_site: dict[str, Any] = {}
        hists: dict[str, CoarseHistogram] = {}
        site_hists: dict[str, dict[str, Any]] = {}
        for msg in ok:
            info = _reply_info(msg)
            rec = self._site(msg.metadata.src_node_id)
            panel: dict[str, Any] = dict(msg.content.metric_records[METRICS])
            n = panel.pop("num-examples", None)
            panel["n"] = int(n) if n is not None else None
            for name in info.get("undefined_metrics", []):
                panel.setdefault(str(name), None)
            per_site[rec.label] = panel
            rec.metrics[f"{split}:{server_round}"] = panel
            hist_rec = {k[len("hist_") :]: v for k, v in info.items() if k.startswith("hist_")}
            if hist_rec:
                hists[rec.label] = CoarseHistogram.from_record(hist_rec)
                site_hists[rec.label] = hist_rec
        return record_evaluation(
            self.history, self.folder, server_round, split, per_site, hists, self.bins, site_hists
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        server_round += self.round_offset
        entry = self._evaluation(server_round, replies, "tune")
        if self.on_round_end is not None and self._round_arrays is not None:
            self.on_round_end(server_round, self._round_arrays)  # before the round counts as done
        self.folder.event("round-finished", round=server_round)
        pooled = entry["pooled"] or {}
        numbers = {
            k: float(v) for k, v in pooled.items() if isinstance(v, int | float) and v is not None
        }
        return MetricRecord(numbers) if numbers else None  # type: ignore[arg-type]

    def final_test(
        self,
        grid: Grid,
        arrays: ArrayRecord,
        config: ConfigRecord,
        server_round: int,
        timeout: float,
        nodes: list[int] | None = None,
    ) -> dict[str, Any]:
        """Read each site's sealed test split exactly once, with the final model.

        ``nodes``: whose test splits to read (default: every site still taking part).
        """
        cfg = ConfigRecord(dict(config))
        cfg[KEY_SPLIT] = "test"
        cfg["server-round"] = server_round
        self.bind(grid)
        if nodes is None:
            nodes = [n for n in grid.get_node_ids() if n not in self.excluded]
        nodes = [n for n in nodes if not self._unregistered(n, server_round, "evaluate (test)")]
        messages = [
            Message(
                RecordDict({ARRAYS: arrays, CONFIG: cfg}), dst_node_id=n, message_type="evaluate"
            )
            for n in nodes
        ]
        replies = grid.send_and_receive(messages, timeout=timeout)
        return self._evaluation(server_round, replies, "test")

    def ask(
        self, grid: Grid, messages: list[Message], what: str, timeout: float
    ) -> dict[str, dict[str, Any]]:
        """Send a one-off request (baselines, profile) and file each site's answer by name.

        A failed or refusing site gets ``{"status", "reason"}`` and leaves the run's own record
        untouched; an answering site's non-DP outputs join the run record's list.
        """
        out: dict[str, dict[str, Any]] = {}
        self.bind(grid)
        # A node whose key no site is registered to is asked nothing (and named, once).
        messages = [
            m
            for m in messages
            if not self._unregistered(m.metadata.dst_node_id, self.round_offset, what)
        ]
        for reply in grid.send_and_receive(messages, timeout=timeout):
            rec = self._site(reply.metadata.src_node_id)
            if reply.has_error():
                out[rec.label] = {"status": "failed", "reason": reply.error.reason}
                log(WARNING, "site %s failed its %s: %s", rec.label, what, reply.error.reason)
                continue
            info = _reply_info(reply)
            claimed = str(info["site"]) if "site" in info else None
            if self._impersonates(reply.metadata.src_node_id, claimed):
                out[rec.label] = {
                    "status": STATUS_REFUSED,
                    "reason": f"registered as site '{rec.label}' but claims to be '{claimed}'",
                }
                continue
            if str(info.get("status")) != STATUS_OK:
                out[rec.label] = {
                    "status": str(info.get("status", "error")),
                    "reason": str(info.get("reason", "no reason given")),
                }
                continue
            rec.non_dp_outputs.update(str(x) for x in info.get("non_dp_outputs", []))
            out[rec.label] = info
        return out

    def site_summary(self) -> list[dict[str, Any]]:
        return [rec.to_dict() for rec in sorted(self.sites.values(), key=lambda r: r.label)]

    def to_json(self) -> str:
        return json.dumps({"sites": self.site_summary(), "history": self.history}, default=str)
