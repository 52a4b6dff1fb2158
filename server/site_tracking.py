"""A strategy wrapper that keeps a federation going when sites refuse or fail, and records everything.

Shaped like Flower's DP wrappers (``flwr.serverapp.strategy.dp_fixed_clipping``): it holds the inner
strategy and delegates aggregation to it, only deciding *which* replies reach it. It also checkpoints
the global model every round and turns each site's metric panel and coarsened score histogram into
per-site and pooled metrics (pooled from histograms, never from raw scores).

It is the Message-API transport's adapter to the coordinator's book of sites
(``fedward.server.tracking_book``): it reads each ``Message`` and files what it says there, as the
SecAgg+ coordinator (``fedward.server.secagg_app``) does with Flower's legacy replies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from logging import WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedward.common.protocol import (
    ARRAYS,
    CONFIG,
    KEY_ATTEMPT,
    KEY_LEDGER_HEADS,
    KEY_SPLIT,
    METRICS,
    REPLY,
    STATUS_OK,
    STATUS_REFUSED,
)
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.reply_check import malformed_reply
from fedward.server.run_folder import RunFolder
from fedward.server.site_registry import SiteRegistry
from fedward.server.tracking_book import (
    Panels,
    SiteBook,
    SiteRecord,
    TooFewSites,
    record_privacy,
)
from fedward.server.update_validation import STATUS_REJECTED, UpdateValidator

_AGGREGATED_TRAIN_KEYS = ("num-examples", "train_loss")


def _norm_entry(norms: dict[int, float], node: int) -> dict[str, float]:
    return {"update_norm": round(norms[node], 6)} if node in norms else {}


def reply_info(msg: Message) -> dict[str, Any]:
    """The site's reply record (site, status, reason, privacy figures...); empty if it sent none."""
    if not msg.has_content() or REPLY not in msg.content.config_records:
        return {}
    return dict(msg.content.config_records[REPLY])


class SiteTracking(Strategy):
    """Filter refusals and failures, record per-site status and privacy spend, checkpoint each round."""

    # Its sites answer Message-API requests after training too: baselines, the privacy audit and
    # data profiles (``SecAggTracking`` declares the opposite).
    supports_companions = True

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
        self.book = SiteBook(
            folder, histogram_bins=histogram_bins, min_sites=min_sites, heads=heads
        )
        # Which node key speaks for which site: with a register, a reply is the registered
        # site's whatever name it reports; without one (simulation), the reported name.
        self.registry = registry if registry is not None and registry.active else None
        self.bound: dict[int, str | None] = {}
        self._binding_announced = False
        # Every train reply is checked against the model sent that round before aggregation.
        self.validator = validator
        self._train_arrays: ArrayRecord | None = None
        # Resume: Flower's loop counts rounds from 1; the real round is that plus the rounds a
        # checkpoint already holds, and every record, config and ledger row gets the real one.
        self.round_offset = 0
        # Called with (round, model) once a round's tune evaluation is recorded: the checkpoint.
        self.on_round_end: Callable[[int, ArrayRecord], None] | None = None
        # Node ids each phase of the current round was sent to; a reply missing at aggregation
        # time is a dropout.
        self._asked: dict[str, set[int]] = {}
        self._round_arrays: ArrayRecord | None = None

    # ---- the book's state, as the checkpoint, resume and companions read it ----------------------

    @property
    def folder(self) -> RunFolder:
        return self.book.folder

    @property
    def bins(self) -> int:
        return self.book.bins

    @property
    def min_sites(self) -> int:
        return self.book.min_sites

    @property
    def heads(self) -> LedgerHeads | None:
        return self.book.heads

    @property
    def sites(self) -> dict[int, SiteRecord]:
        return self.book.sites

    @property
    def excluded(self) -> set[int]:
        return self.book.excluded

    @property
    def history(self) -> dict[str, list[dict[str, Any]]]:
        return self.book.history

    @property
    def attempts(self) -> dict[int, str]:
        return self.book.attempts

    @property
    def restored(self) -> set[int]:
        """Node ids of records restored from a checkpoint: a site that comes back under a new
        node id (a restarted SuperLink) is matched to its record by name."""
        return self.book.restored

    # ---- delegation -------------------------------------------------------------------------------

    def summary(self) -> None:
        self.strategy.summary()

    def site(self, node_id: int) -> SiteRecord:
        """The record of ``node_id`` (under its registered name, where it has one)."""
        return self.book.site(node_id, self.bound.get(node_id))

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
        rec = self.site(node)
        rec.details = {"node_id": node, **why}
        rec.refusals.append(
            {"round": server_round, "phase": phase, "status": STATUS_REFUSED, "reason": reason}
        )
        self.book.refuse(rec, server_round, reason, phase=phase, **why)

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
            self.site(m.metadata.dst_node_id)
            kept.append(m)
        self._asked[phase] = {m.metadata.dst_node_id for m in kept}
        return kept

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset
        self.bind(grid)
        available = self.book.remaining(grid.get_node_ids())
        too_few = self.book.too_few(server_round, len(available))
        if too_few is not None:
            raise TooFewSites(too_few)
        config[KEY_ATTEMPT] = self.book.start_round(server_round)
        if self.heads is not None and not self.binding:
            config[KEY_LEDGER_HEADS] = self.heads.to_json()  # unbound: every site's, as reported
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

    def classify(self, server_round: int, replies: Iterable[Message], phase: str) -> list[Message]:
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
            if self._accepted(self.site(node), msg, server_round, phase):
                ok.append(msg)
        if asked is not None:
            self.book.record_dropouts(
                server_round, phase, self._asked.pop(phase, set()) - replied, unattributed
            )
        return ok

    def _accepted(self, rec: SiteRecord, msg: Message, server_round: int, phase: str) -> bool:
        """File one site's reply in the book: may it be aggregated?"""
        node = msg.metadata.src_node_id
        if msg.has_error():
            self.book.fail(rec, server_round, f"{phase}, round {server_round}: {msg.error.reason}")
            log(WARNING, "site %s failed in %s: %s", rec.label, phase, msg.error.reason)
            return False
        info = reply_info(msg)
        claimed = str(info["site"]) if "site" in info else None
        if self.binding:
            rec.name = self.bound.get(node) or rec.name
        else:
            rec.name = claimed or rec.name or f"node {node}"
        rec = self.book.reclaim(rec)
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
            return False
        status = str(info.get("status", "error"))
        problem = f"no ConfigRecord '{REPLY}'" if not info else None
        if problem is None and status == STATUS_OK:
            problem = malformed_reply(msg, phase)
        if problem is not None:
            # A reply that cannot be read fails this site only: the round goes on without it.
            self.book.fail(
                rec, server_round, f"{phase}, round {server_round}: malformed reply: {problem}"
            )
            log(WARNING, "site %s sent a malformed reply: %s", rec.label, rec.reason)
            return False
        if status != STATUS_OK:
            left = info.get("epsilon_remaining")
            self.book.note_refusal(
                rec,
                server_round,
                phase,
                status,
                str(info.get("reason", "no reason given")),
                details={k: v for k, v in info.items() if k not in ("site", "status", "reason")},
                budget_left=float(left) if isinstance(left, int | float) else None,
                exclude=status == STATUS_REFUSED,
                event=status,
                epsilon_remaining=left,
            )
            return False
        problem = self._observe_ledger(rec, info)
        if problem is not None:
            self.book.refuse(rec, server_round, f"ledger check failed: {problem}", phase=phase)
            return False
        self.book.note_outputs(
            rec,
            (str(x) for x in info.get("non_dp_outputs", [])),
            (str(w) for w in info.get("warnings", [])),
        )
        return True

    def _observe_ledger(self, rec: SiteRecord, info: dict[str, Any]) -> str | None:
        if "ledger_seq" not in info:
            return None
        return self.book.observe_ledger(rec, int(info["ledger_seq"]), str(info["ledger_head"]))

    def save_heads(self) -> None:
        self.book.save_heads()

    # ---- training ---------------------------------------------------------------------------------

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        ok = self.classify(server_round, replies, "train")
        per_site: dict[str, dict[str, Any]] = {}
        ok, norms = self._validate_updates(server_round, ok, per_site)
        for msg in ok:
            rec = self.site(msg.metadata.src_node_id)
            self.book.note_trained(rec, server_round, reply_info(msg))
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
            rec = self.site(node)
            record_privacy(rec, reply_info(msg))
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
        ok = self.classify(server_round, replies, f"evaluate ({split})")
        panels = Panels(split, server_round)
        for msg in ok:
            info = reply_info(msg)
            panel: dict[str, Any] = dict(msg.content.metric_records[METRICS])
            n = panel.pop("num-examples", None)
            panels.add(
                self.site(msg.metadata.src_node_id),
                panel,
                int(n) if n is not None else None,
                (str(name) for name in info.get("undefined_metrics", [])),
                {k[len("hist_") :]: v for k, v in info.items() if k.startswith("hist_")},
            )
        return self.book.record_panels(panels)

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
        cfg = ConfigRecord({**dict(config), KEY_SPLIT: "test", "server-round": server_round})
        self.bind(grid)
        if nodes is None:
            nodes = self.book.remaining(grid.get_node_ids())
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
            rec = self.site(reply.metadata.src_node_id)
            if reply.has_error():
                out[rec.label] = {"status": "failed", "reason": reply.error.reason}
                log(WARNING, "site %s failed its %s: %s", rec.label, what, reply.error.reason)
                continue
            info = reply_info(reply)
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
        return self.book.site_summary()

    def to_json(self) -> str:
        return self.book.to_json()
