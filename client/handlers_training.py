"""The site's training handler: one round of local training, DP-SGD unless both sides allow not.

Under DP the round's spend is planned, checked against the budget and committed to the ledger in
one privacy transaction (``fedward.client.privacy_transaction``) before training starts, so no
path releases an update whose spend is not recorded. The SecAgg+ mode's legacy client
(``fedward.client.secagg_app``) trains through the same ``training_reply``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message
from opacus.validators import ModuleValidator

from fedward.client.privacy_transaction import commit_training_round, privacy_info
from fedward.client.randomness import SEEDED as SEEDED_RANDOMNESS
from fedward.client.randomness import SYSTEM as SYSTEM_RANDOMNESS
from fedward.client.reply_encoding import SiteReply
from fedward.client.reply_fields import NON_DP_OUTPUTS
from fedward.client.request import Request, request_from_message
from fedward.client.seeds import derive_seed
from fedward.client.training import DPSettings, train_local
from fedward.common.errors import PolicyError
from fedward.common.models import select_device
from fedward.common.protocol import KEY_ATTEMPT


def require_dp_compatible(model: torch.nn.Module, site: str) -> None:
    """Opacus's validator: per-sample gradients need layers like GroupNorm, never BatchNorm."""
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise PolicyError(
            site, "model is not DP-SGD compatible: " + "; ".join(map(str, problems))
        ).publicly("policy-refused", policy="model not DP-SGD compatible")


@dataclass(frozen=True)
class LocalUpdate:
    """A trained model with the round's metrics and reply fields."""

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
        y = np.random.default_rng(derive_seed(run.seed, site.name, "label-shuffle")).permutation(y)
    n_train = len(y)
    model = req.model(transform)
    info: dict[str, Any] = {"purpose": req.purpose}
    dp: DPSettings | None = None
    if run.privacy.dp:
        require_dp_compatible(model, site.name)
        budget = req.budget()
        attempt = str(req.cfg.get(KEY_ATTEMPT, "") or f"{req.run_id}:{req.server_round}")
        # Whoever knows the noise seed can subtract the noise: seeded only in simulation, for
        # repeatable experiments; a real site draws sampling and noise from the OS CSPRNG.
        randomness = SEEDED_RANDOMNESS if site.simulated_node else SYSTEM_RANDOMNESS
        # Committed before training: if the process dies after this, the spend still counts.
        plan = commit_training_round(
            req, budget, n_train=n_train, attempt=attempt, randomness=randomness
        )
        noise_seed = (
            derive_seed(run.seed, site.name, req.server_round, "noise")
            if site.simulated_node
            else None
        )
        dp = DPSettings(
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=run.privacy.max_grad_norm,
            sample_rate=plan.sample_rate,
            noise_seed=noise_seed,
        )
        info.update(privacy_info(req, budget, plan.run_delta))
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
        seed=derive_seed(run.seed, site.name, req.server_round, "train"),
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


def training_reply(req: Request) -> SiteReply:
    """The reply to one round of training: the trained model, its metrics and fields."""
    update = local_update(req)
    return SiteReply(
        req.site.name,
        update.info,
        req.min_cell,
        metrics=update.metrics,
        arrays=ArrayRecord(update.model.state_dict()),
    )


def train(msg: Message, context: Context) -> SiteReply:
    """One round of local training (see ``local_update``)."""
    return training_reply(request_from_message(msg, context))
