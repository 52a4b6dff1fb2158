"""The site's privacy transaction: plan, check and append in one ledger transaction.

The second stage of the site's pipeline and the only code that writes the privacy ledger's
entries. Each release is checked against the site's budget and committed to the ledger inside
one SQLite write transaction (``Ledger.transaction``, BEGIN IMMEDIATE), so no other process can
spend between the check and the append: two requests racing for the last of a budget get one
release and one refusal, whatever runs the site's ClientApp. Everything here happens before the
release is made: if the process dies afterwards, the spend still counts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from fedward.client.budget import BudgetRefusal, Composition, RunPlan, SiteBudget
from fedward.client.ledger import EntryKind, LedgerEntry
from fedward.client.randomness import SEEDED as SEEDED_RANDOMNESS
from fedward.client.randomness import SYSTEM as SYSTEM_RANDOMNESS
from fedward.client.request import Request
from fedward.common.protocol import KEY_PARENT_RUN, PURPOSE_RUN, PURPOSE_TUNING
from fedward.common.run_config import RunConfig

PRIVACY_UNIT = "record"  # sample-level DP-SGD: one row of one site's table


@dataclass(frozen=True)
class Release:
    """One ledger entry (a spend, or a run's plan), as the site is about to commit it; its fields
    are ``Ledger.append``'s arguments."""

    dataset: str
    run_id: str
    round: int
    attempt: str
    kind: EntryKind
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    config_hash: str
    note: str
    max_grad_norm: float | None = None

    @property
    def spend(self) -> tuple[float, float, int]:
        """The accountant's view of it: (noise multiplier, sample rate, steps)."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


def _append(budget: SiteBudget, release: Release) -> LedgerEntry:
    return budget.ledger.append(**asdict(release))


def plan_run(
    budget: SiteBudget,
    run: RunConfig,
    *,
    run_id: str,
    n_train: int,
    config_hash: str,
    purpose: str = PURPOSE_RUN,
    composition: Composition | None = None,
) -> RunPlan:
    """The run's plan: the one in the ledger, or a new one recorded there before any spend."""
    existing = budget.existing_plan(run_id)
    if existing is not None:
        return existing
    plan = budget.new_plan(
        run, run_id=run_id, n_train=n_train, purpose=purpose, composition=composition
    )
    entry = Release(
        dataset=budget.dataset,
        run_id=run_id,
        round=0,
        attempt="plan",
        kind="plan",
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.planned_steps,
        delta=plan.run_delta,
        max_grad_norm=run.privacy.max_grad_norm,
        config_hash=config_hash,
        note=plan.to_note(),
    )
    _append(budget, entry)
    return plan


def commit_release(budget: SiteBudget, release: Release, *, run_cap: float) -> LedgerEntry:
    """Check one release against the run's cap and the lifetime budget and append it, in one
    transaction: a refusal appends nothing."""
    with budget.ledger.transaction():
        budget.check_spend(release.run_id, release.delta, run_cap, release.spend)
        return _append(budget, release)


def commit_preprocessing_release(req: Request, budget: SiteBudget, sigma: float) -> float:
    """Record the preprocessing aggregates' Gaussian release (sample rate 1, once per run);
    returns the run's δ it was accounted at."""
    run = req.run
    delta = budget.run_delta(run)
    randomness = SEEDED_RANDOMNESS if req.site.simulated_node else SYSTEM_RANDOMNESS
    release = Release(
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
        note=json.dumps({"release": "preprocessing aggregates", "randomness": randomness}),
    )
    with req.ledger.transaction():
        budget.check_spend(req.run_id, delta, budget.run_epsilon_cap(run), release.spend)
        if any(
            e.run_id == req.run_id and e.kind == "gaussian-release"
            for e in req.ledger.entries(req.dataset)
        ):
            raise BudgetRefusal(
                req.site.name, f"run {req.run_id} already released its preprocessing aggregates"
            ).publicly("budget-refused-plain", rule="preprocessing already released")
        _append(budget, release)
    return delta


def commit_training_round(
    req: Request, budget: SiteBudget, *, n_train: int, attempt: str, randomness: str
) -> RunPlan:
    """The replay check, the run's plan, the budget check and the round's DP-SGD entry, in one
    transaction. A round the budget refuses leaves the run's plan recorded (it states the noise
    the run was planned at), never its spend."""
    run = req.run
    refusal: BudgetRefusal | None = None
    with req.ledger.transaction():
        check_replay(req, attempt)
        plan = plan_run(
            budget,
            run,
            run_id=req.run_id,
            n_train=n_train,
            config_hash=run.config_hash(),
            purpose=req.purpose,
            composition=run_composition(req),
        )
        release = Release(
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
        try:
            budget.check_spend(req.run_id, plan.run_delta, plan.run_epsilon_cap, release.spend)
        except BudgetRefusal as exc:
            refusal = exc
        else:
            _append(budget, release)
    if refusal is not None:
        raise refusal
    return plan


def privacy_info(req: Request, budget: SiteBudget, run_delta: float) -> dict[str, Any]:
    """What a reply states about the site's privacy: the run's and the lifetime ε, the ledger's head."""
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


def run_composition(req: Request) -> Composition | None:
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


def check_replay(req: Request, attempt: str) -> None:
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
