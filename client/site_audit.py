"""The site's membership-inference audit of a model it helped train, on rows that never leave it.

Members are the site's training rows, non-members its audit split (never trained on, never the
sealed test split). The reference models (LiRA) and the canary model (one-run audit) are trained
here the way this site trained for the run: the same model, the same training settings, the same
rounds and, under DP, the noise multiplier, clipping norm and sampling rate of the site's plan in
its ledger — so the canary model's accountant ε is the ε the audit checks, whatever its row count.
Its training set is the site's training rows plus the included canaries (synthetic ones among
them): DP is a guarantee for every input, so what the canary audit tests is the procedure. None of
these models leaves the site and none of them spends release budget: only the audit's aggregates
leave, as non-DP outputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedward.client.accounting import epsilon_of
from fedward.client.budget import RunPlan
from fedward.client.mia import audit_site
from fedward.client.seeds import shadow_round_seeds
from fedward.client.training import DPSettings, predict_logits, train_local
from fedward.common.evaluation_config import AuditConfig
from fedward.common.models import build_model, select_device
from fedward.common.run_config import RunConfig

LATEST_AUDIT_FILE = "audit_latest.json"  # the exporter's gauges read it (fedward site metrics)

TrainFn = Callable[[np.ndarray, np.ndarray, int], Callable[[np.ndarray], np.ndarray]]


@dataclass(frozen=True)
class AuditMechanism:
    """How the audit's own models are trained: as the site trained for the run."""

    run: RunConfig
    n_inputs: int
    image_shape: list[int] | None
    plan: RunPlan | None  # None: the run trained without DP
    settings: AuditConfig | None = None  # the approved run config's [audit]; default: run's

    @property
    def audit(self) -> AuditConfig:
        return self.settings if self.settings is not None else self.run.audit

    def train_fn(self) -> TrainFn:
        run = self.run

        def train(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
            model = build_model(run.model, self.n_inputs, self.image_shape, seed=seed)
            xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
            yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
            for r in range(run.rounds):
                round_seed, noise_seed = shadow_round_seeds(seed, r)
                dp = None
                if self.plan is not None:
                    dp = DPSettings(
                        noise_multiplier=self.plan.noise_multiplier,
                        max_grad_norm=run.privacy.max_grad_norm,
                        # The run's sampling rate, whatever this model's row count: the audited
                        # mechanism is then exactly the site's (σ, q, steps), and so is its ε.
                        sample_rate=self.plan.sample_rate,
                        # These models never leave the site: seeding their noise only makes the
                        # audit repeatable.
                        noise_seed=noise_seed,
                    )
                train_local(
                    model, xt, yt, cfg=run.training, dp=dp, seed=round_seed, device=select_device()
                )
            return lambda rows: predict_logits(
                model, torch.from_numpy(np.asarray(rows, np.float32))
            )

        return train

    def claimed_epsilon(self) -> float | None:
        """The accountant's ε of one audit model's training (None without DP): the site's run
        mechanism, σ and q from its plan, over the run's rounds."""
        if self.plan is None:
            return None
        steps = self.run.rounds * self.plan.steps_per_round
        return epsilon_of(
            [(self.plan.noise_multiplier, self.plan.sample_rate, steps)], self.plan.run_delta
        )


def run_audit(
    model: torch.nn.Module,
    mechanism: AuditMechanism,
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
    *,
    delta: float,
    min_cell: int,
    seed: int,
) -> dict[str, Any]:
    """The audit's public aggregates (``mia_*`` keys) for ``model``."""
    audit = mechanism.audit
    started = time.perf_counter()
    result = audit_site(
        lambda rows: predict_logits(model, torch.from_numpy(np.asarray(rows, np.float32))),
        mechanism.train_fn(),
        members[0],
        members[1],
        nonmembers[0],
        nonmembers[1],
        n_reference=audit.reference_models,
        n_canaries=audit.canaries,
        epsilon_claimed=mechanism.claimed_epsilon(),
        delta=delta,
        confidence=audit.confidence,
        bins=audit.bins,
        min_cell=min_cell,
        seed=seed,
    )
    public = dict(result.public(min_cell))
    public["mia_seconds"] = round(time.perf_counter() - started, 3)
    return public


def record_latest(state_dir: Path, run_id: str, model_name: str, public: dict[str, Any]) -> None:
    """Keep the latest audit's figures beside the ledger, per audited model of the latest run, for
    the site's Prometheus gauges (``fedward site metrics``)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LATEST_AUDIT_FILE
    try:
        latest = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        latest = {}  # a damaged file only loses the previous gauges, never an audit
    if latest.get("run_id") != run_id:
        latest = {"run_id": run_id, "models": {}}
    latest.setdefault("models", {})[model_name] = {"time": time.time(), "figures": public}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(latest, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(path)
