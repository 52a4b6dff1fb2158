"""The coordinator's book of sites: one record per site, whichever transport carried its replies.

Both coordinators keep it: the Message-API one (``fedward.server.site_tracking``) and the SecAgg+
one (``fedward.server.secagg_app``). Each is a thin adapter that reads its transport's replies
(a ``Message``, or a legacy ``(ClientProxy, FitRes/EvaluateRes)`` pair and an error reply) and
files them here: a site's refusal or failure, its ledger head, a drop-out, a trained round, an
evaluation panel. The book holds what the run folder reports from them: the site records, the
history of every round and the run's summary. It never sees a site's data, only what it sent.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

from flwr.common.logger import log

from fedward.common.errors import FedwardError
from fedward.common.protocol import PRIVACY_FLOATS, STATUS_OK, STATUS_REFUSED
from fedward.common.score_histograms import CoarseHistogram
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.pooled_metrics import pooled_panel
from fedward.server.run_folder import RunFolder

STATUS_DROPPED = "dropped"
STATUS_FAILED = "failed"


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


class TooFewSites(FedwardError):
    """Fewer sites remain than the run's minimum: the run stops cleanly."""


def record_privacy(rec: SiteRecord, info: Mapping[str, Any]) -> None:
    """A site's privacy figures as it reported them (each transport sends the same names)."""
    for key in PRIVACY_FLOATS:
        if key in info:
            setattr(rec, key, float(info[key]))
    for key in ("dataset", "privacy_unit", "accountant"):
        if key in info:
            setattr(rec, key, str(info[key]))
    if "multi_row_patients" in info:
        rec.multi_row_patients = bool(info["multi_row_patients"])


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


@dataclass
class Panels:
    """One evaluation's per-site metric panels and coarse histograms, as they arrive."""

    split: str
    server_round: int
    per_site: dict[str, Any] = field(default_factory=dict)
    hists: dict[str, CoarseHistogram] = field(default_factory=dict)
    site_hists: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(
        self,
        rec: SiteRecord,
        panel: dict[str, Any],
        n: int | None,
        undefined: Iterable[str],
        hist: dict[str, Any],
    ) -> None:
        """A site's panel: its row count, the metrics it could not define (None), its histogram."""
        panel["n"] = n
        for name in undefined:
            panel.setdefault(name, None)
        self.per_site[rec.label] = panel
        rec.metrics[f"{self.split}:{self.server_round}"] = panel
        if hist:
            self.hists[rec.label] = CoarseHistogram.from_record(hist)
            self.site_hists[rec.label] = hist


class SiteBook:
    """Site records, refusals, ledger heads, drop-outs and history: the state both coordinators
    keep, with the one way each event is recorded, announced and logged."""

    def __init__(
        self,
        folder: RunFolder,
        *,
        histogram_bins: int,
        min_sites: int,
        heads: LedgerHeads | None = None,
    ) -> None:
        self.folder = folder
        self.bins = histogram_bins
        self.min_sites = min_sites
        self.heads = heads
        self.sites: dict[int, SiteRecord] = {}
        self.excluded: set[int] = set()
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "tune": [], "test": []}
        self.attempts: dict[int, str] = {}
        # Node ids of records restored from a checkpoint or left by a drop-out: a site that comes
        # back under a new node id (a restarted SuperLink) is matched to its record by name.
        self.restored: set[int] = set()

    # ---- records ----------------------------------------------------------------------------------

    def site(self, node_id: int, name: str | None = None) -> SiteRecord:
        """The record of ``node_id``, opened (under ``name`` if known) on first sight."""
        if node_id not in self.sites:
            self.sites[node_id] = SiteRecord(node_id=node_id, name=name)
        return self.sites[node_id]

    def site_named(self, name: str) -> SiteRecord | None:
        return next((r for r in self.sites.values() if r.name == name), None)

    def reclaim(self, rec: SiteRecord) -> SiteRecord:
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

    def remaining(self, nodes: Iterable[int]) -> list[int]:
        """The nodes still taking part: every one the run has not stopped asking."""
        return [n for n in nodes if n not in self.excluded]

    # ---- rounds -----------------------------------------------------------------------------------

    def too_few(self, server_round: int, available: int) -> str | None:
        """Why the run cannot go on with ``available`` sites, naming those left out; None if it can."""
        if available >= self.min_sites:
            return None
        left = ", ".join(
            f"{r.label} ({r.status}: {r.reason})"
            for r in self.sites.values()
            if r.node_id in self.excluded
        )
        return (
            f"round {server_round}: only {available} site(s) can still take part, fewer "
            f"than the run's minimum of {self.min_sites}; left out: {left or 'none'}"
        )

    def start_round(self, server_round: int) -> str:
        """Every round attempt has its own id: a retried round spends again and is accounted again."""
        attempt = uuid.uuid4().hex
        self.attempts[server_round] = attempt
        self.folder.event("round-started", round=server_round, attempt=attempt)
        return attempt

    def ledger_heads_json(self) -> str:
        """Every site's ledger head as last observed (what an unbound round sends to all sites)."""
        assert self.heads is not None
        return self.heads.to_json()

    # ---- what a reply says ------------------------------------------------------------------------

    def fail(self, rec: SiteRecord, server_round: int, reason: str) -> None:
        """A site whose reply broke or could not be read: this round goes on without it."""
        rec.status = STATUS_FAILED
        rec.reason = reason
        self.folder.event("site-failed", round=server_round, site=rec.label, reason=reason)

    def refuse(
        self,
        rec: SiteRecord,
        server_round: int,
        reason: str,
        *,
        phase: str | None = None,
        announce: bool = True,
        **why: Any,
    ) -> None:
        """The coordinator refuses a site (identity, ledger): it is not asked again, and named."""
        rec.status = STATUS_REFUSED
        rec.reason = reason
        self.excluded.add(rec.node_id)
        where = {"phase": phase} if phase is not None else {}
        self.folder.event(
            "site-refused", round=server_round, site=rec.label, reason=reason, **where, **why
        )
        if announce:
            log(WARNING, "site %s refused by the coordinator: %s", rec.label, reason)

    def note_refusal(
        self,
        rec: SiteRecord,
        server_round: int,
        phase: str,
        status: str,
        reason: str,
        *,
        details: dict[str, Any],
        budget_left: float | None,
        exclude: bool,
        event: str,
        **entry: Any,
    ) -> None:
        """A site's own refusal or error, as it reported it; a refusal is its decision (bad data,
        policy, budget), so with ``exclude`` it is not asked again. ``budget_left``: the ε it
        says it has left; ``entry``: what else its refusal entry keeps."""
        rec.status = status
        rec.reason = reason
        rec.details = details
        rec.refusals.append(
            {"round": server_round, "phase": phase, "status": status, "reason": reason, **entry}
        )
        if budget_left is not None:
            rec.epsilon_remaining = budget_left
        if exclude:
            self.excluded.add(rec.node_id)
        self.folder.event(
            f"site-{event}", round=server_round, site=rec.label, reason=reason, phase=phase
        )
        log(WARNING, "site %s %s in %s: %s", rec.label, status, phase, reason)

    def observe_ledger(self, rec: SiteRecord, seq: int, head: str) -> str | None:
        """What is wrong with the ledger head a site reports (None: it extends the last one)."""
        if self.heads is None:
            return None
        return self.heads.observe(rec.label, seq, head)

    def save_heads(self) -> None:
        if self.heads is not None:
            self.heads.save()

    @staticmethod
    def note_outputs(rec: SiteRecord, non_dp: Iterable[str], warnings: Iterable[str]) -> None:
        """The outputs a site released outside DP, and its warnings, each kept once."""
        rec.non_dp_outputs.update(non_dp)
        for w in warnings:
            if w not in rec.warnings:
                rec.warnings.append(w)

    @staticmethod
    def note_trained(rec: SiteRecord, server_round: int, info: Mapping[str, Any]) -> None:
        """A site's update went into this round's model: what its data shaped, and at what ε."""
        rec.status = STATUS_OK
        rec.reason = None
        rec.rounds_ok += 1
        rec.trained_rounds.append(server_round)
        record_privacy(rec, info)

    def record_dropouts(
        self, server_round: int, phase: str, missing: Iterable[int], errors: list[str]
    ) -> None:
        """Every site asked in ``phase`` that sent no reply of its own dropped out of this round.

        Flower answers for a node that stopped sending heartbeats with an error reply from the
        SuperLink itself (not from the node), and for one that never answers with nothing at all
        once the round's timeout passes: either way the round closes without it.
        """
        why = "; ".join(sorted(set(errors))) or "no reply before the round's timeout"
        for node in sorted(missing):
            rec = self.site(node)
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

    def record_panels(self, panels: Panels, *, keep_histograms: bool = True) -> dict[str, Any]:
        """The evaluation's history entry, pooled from the sites' histograms."""
        return record_evaluation(
            self.history,
            self.folder,
            panels.server_round,
            panels.split,
            panels.per_site,
            panels.hists,
            self.bins,
            panels.site_hists if keep_histograms else None,
        )

    # ---- summary ----------------------------------------------------------------------------------

    def site_summary(self) -> list[dict[str, Any]]:
        return [rec.to_dict() for rec in sorted(self.sites.values(), key=lambda r: r.label)]

    def to_json(self) -> str:
        return json.dumps({"sites": self.site_summary(), "history": self.history}, default=str)
