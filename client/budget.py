"""The site's budget: plan a run's noise from what the policy and the ledger still allow, and refuse
anything that would go over.

Two limits apply at once and the stricter wins: the run's own ε (the coordinator's target, capped by
the site's per-run maximum) at the run's δ, and the dataset's lifetime ε (every run ever recorded in
the ledger) at the site's lifetime δ. The plan reserves the steps of one extra round, so a round
retried after a coordinator crash (a new attempt, which spends again) still fits.

A run may compose with others: a model whose settings a tuning search chose is as private as the
trials and the final run together, so the final run's plan names the search's trials (by config
hash) and its noise is sized for what the trials left of the run's ε. A trial is planned so that
every trial of its search, composed, stays within the search's share; each one sized for the
trials still to come, the last one for exactly what is left.

A run's plan records its purpose (the run itself, a control, or a tuning trial). A simulated site
records tuning trials like any run but does not hold them against its lifetime budget, so a
tuning search can be studied; the report states their ε. A real site enforces every purpose alike.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from fedward.client.accounting import (
    EPSILON_TOLERANCE,
    AccountantName,
    default_delta,
    epsilon_of,
    gaussian_release_sigma,
    plan_noise_multiplier,
)
from fedward.client.ledger import Ledger, LedgerEntry
from fedward.common.errors import FedwardError
from fedward.common.protocol import PURPOSE_RUN, PURPOSE_TUNING
from fedward.common.run_config import RunConfig
from fedward.common.site_config import PolicyConfig
from fedward.common.site_messages import SiteMessage

RETRY_ROUNDS_RESERVED = 1


class BudgetRefusal(FedwardError):
    """The site refuses: the request does not fit its privacy budget or policy."""

    def __init__(self, site: str, reason: str, *, remaining_epsilon: float | None = None) -> None:
        self.site = site
        self.reason = reason
        self.remaining_epsilon = remaining_epsilon
        extra = (
            "" if remaining_epsilon is None else f" (lifetime ε remaining: {remaining_epsilon:.3f})"
        )
        super().__init__(f"site '{site}': {reason}{extra}")

    def _default_message(self, site: str) -> SiteMessage:
        if self.remaining_epsilon is not None:
            remaining = float(self.remaining_epsilon)
            return SiteMessage("budget-refused", {"site": site, "epsilon_remaining": remaining})
        return SiteMessage("budget-refused-plain", {"site": site, "rule": "request not allowed"})


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    planned_steps: int
    run_delta: float
    run_epsilon_cap: float
    purpose: str = PURPOSE_RUN
    # Config hashes of the runs this run's model composes with (its tuning search's trials).
    composes_with: tuple[str, ...] = ()

    def to_note(self) -> str:
        note: dict[str, object] = {
            "steps_per_round": self.steps_per_round,
            "run_epsilon_cap": self.run_epsilon_cap,
            "retry_rounds_reserved": RETRY_ROUNDS_RESERVED,
            "purpose": self.purpose,
        }
        if self.composes_with:
            note["composes_with"] = sorted(self.composes_with)
        return json.dumps(note, sort_keys=True)

    @classmethod
    def from_entry(cls, e: LedgerEntry) -> RunPlan:
        note = json.loads(e.note)
        return cls(
            run_id=e.run_id,
            noise_multiplier=e.noise_multiplier,
            sample_rate=e.sample_rate,
            steps_per_round=int(note["steps_per_round"]),
            planned_steps=e.steps,
            run_delta=e.delta,
            run_epsilon_cap=float(note["run_epsilon_cap"]),
            purpose=str(note.get("purpose", PURPOSE_RUN)),
            composes_with=tuple(str(h) for h in note.get("composes_with", [])),
        )


@dataclass(frozen=True)
class Composition:
    """The runs a new run's model composes with, by config hash.

    ``search_size`` > 0 marks a tuning trial: it is one of that many trials that share its target.
    0 marks a final run whose settings those runs chose.
    """

    hashes: frozenset[str]
    search_size: int = 0


@dataclass(frozen=True)
class BudgetStatus:
    """What a site reports about its budget (all at the lifetime δ except ``run_epsilon``)."""

    run_epsilon: float
    run_delta: float
    lifetime_epsilon: float
    lifetime_delta: float
    total_epsilon: float
    remaining_epsilon: float


class SiteBudget:
    """The policy and the ledger of one dataset, asked one question at a time."""

    def __init__(
        self,
        ledger: Ledger,
        policy: PolicyConfig,
        *,
        site: str,
        dataset: str,
        n_rows: int,
        accountant: AccountantName = "rdp",
        simulated: bool = False,
    ) -> None:
        self.ledger = ledger
        self.simulated = simulated
        self.policy = policy
        self.site = site
        self.dataset = dataset
        self.accountant = accountant
        self.lifetime_delta = policy.total_delta if policy.total_delta else default_delta(n_rows)
        self.total_epsilon = policy.total_epsilon

    # ---- what has been spent -------------------------------------------------------------------

    def lifetime_epsilon(self, extra: list[tuple[float, float, int]] | None = None) -> float:
        history = self.ledger.history(self.dataset) + (extra or [])
        return epsilon_of(history, self.lifetime_delta, self.accountant)

    def purposes(self) -> dict[str, str]:
        """Run id -> purpose, from the runs' plan entries."""
        return {
            e.run_id: RunPlan.from_entry(e).purpose
            for e in self.ledger.entries(self.dataset)
            if e.kind == "plan"
        }

    def _unenforced_runs(self) -> set[str]:
        if not self.simulated:
            return set()
        return {run for run, purpose in self.purposes().items() if purpose == PURPOSE_TUNING}

    def _enforced_history(self) -> list[tuple[float, float, int]]:
        skip = self._unenforced_runs()
        return [
            e.history_item()
            for e in self.ledger.entries(self.dataset)
            if e.spends and e.run_id not in skip
        ]

    def enforced_lifetime_epsilon(
        self, extra: list[tuple[float, float, int]] | None = None
    ) -> float:
        """The lifetime ε the budget is held to: all of it, except a simulated site's tuning trials."""
        history = self._enforced_history() + (extra or [])
        return epsilon_of(history, self.lifetime_delta, self.accountant)

    def tuning_epsilon(self) -> float:
        """ε of every tuning trial recorded for this dataset, composed, at the lifetime δ."""
        trials = {run for run, purpose in self.purposes().items() if purpose == PURPOSE_TUNING}
        return epsilon_of(self._history_of(trials), self.lifetime_delta, self.accountant)

    def _enforces(self, purpose: str) -> bool:
        return not (self.simulated and purpose == PURPOSE_TUNING)

    def run_epsilon(
        self, run_id: str, delta: float, extra: list[tuple[float, float, int]] | None = None
    ) -> float:
        history = self.ledger.history(self.dataset, run_id) + (extra or [])
        return epsilon_of(history, delta, self.accountant)

    def _runs_with_hashes(self, hashes: frozenset[str] | tuple[str, ...]) -> set[str]:
        wanted = set(hashes)
        return {
            e.run_id
            for e in self.ledger.entries(self.dataset)
            if e.kind == "plan" and e.config_hash in wanted
        }

    def _history_of(self, runs: set[str]) -> list[tuple[float, float, int]]:
        return [
            e.history_item()
            for e in self.ledger.entries(self.dataset)
            if e.spends and e.run_id in runs
        ]

    def model_epsilon(
        self, run_id: str, delta: float, extra: list[tuple[float, float, int]] | None = None
    ) -> float:
        """ε of this run's model: the run composed with every run its plan names (its search's
        trials, each of them as often as it ran), at the run's δ."""
        plan = self.existing_plan(run_id)
        runs = {run_id} | self._runs_with_hashes(plan.composes_with if plan else ())
        return epsilon_of(self._history_of(runs) + (extra or []), delta, self.accountant)

    def status(self, run_id: str, run_delta: float) -> BudgetStatus:
        spent = self.lifetime_epsilon()
        return BudgetStatus(
            run_epsilon=self.run_epsilon(run_id, run_delta),
            run_delta=run_delta,
            lifetime_epsilon=spent,
            lifetime_delta=self.lifetime_delta,
            total_epsilon=self.total_epsilon,
            remaining_epsilon=max(0.0, self.total_epsilon - spent),
        )

    # ---- asking for more -----------------------------------------------------------------------

    def run_delta(self, run: RunConfig) -> float:
        """The coordinator may ask for a smaller δ than the site's, never a larger one."""
        asked = run.privacy.delta
        return self.lifetime_delta if asked is None else min(asked, self.lifetime_delta)

    def run_epsilon_cap(self, run: RunConfig) -> float:
        caps = [run.privacy.target_epsilon, self.total_epsilon]
        if self.policy.max_epsilon_per_run is not None:
            caps.append(self.policy.max_epsilon_per_run)
        return min(caps)

    def existing_plan(self, run_id: str) -> RunPlan | None:
        for e in self.ledger.entries(self.dataset):
            if e.kind == "plan" and e.run_id == run_id:
                return RunPlan.from_entry(e)
        return None

    def new_plan(
        self,
        run: RunConfig,
        *,
        run_id: str,
        n_train: int,
        purpose: str = PURPOSE_RUN,
        composition: Composition | None = None,
    ) -> RunPlan:
        """The noise for the whole run, planned once; the privacy transaction
        (``fedward.client.privacy_transaction.plan_run``) records it before any spend.

        With a ``composition`` the run's ε cap holds for the run composed with those runs: a final
        run gets what its search's trials left; a trial is sized as if every trial still to come
        spent as it does, so that the search as a whole stays within the cap.
        """
        q = min(1.0, run.training.batch_size / n_train)
        steps_per_round = run.training.local_epochs * max(1, round(1.0 / q))
        planned = steps_per_round * (run.rounds + RETRY_ROUNDS_RESERVED)
        joint: set[str] = set()
        repeats = 1
        if composition is not None:
            joint = self._runs_with_hashes(composition.hashes) - {run_id}
            if composition.search_size > 0:
                repeats = max(1, composition.search_size - len(joint))
        delta = self.run_delta(run)
        cap = self.run_epsilon_cap(run)
        enforce = self._enforces(purpose)
        remaining = self.total_epsilon - self.enforced_lifetime_epsilon()
        if enforce and remaining <= EPSILON_TOLERANCE:
            raise BudgetRefusal(
                self.site,
                f"the lifetime budget of dataset '{self.dataset}' is spent "
                f"(ε {self.total_epsilon - remaining:.3f} of {self.total_epsilon:g} at δ {self.lifetime_delta:g})",
                remaining_epsilon=max(0.0, remaining),
            )
        try:
            sigma_run = plan_noise_multiplier(
                cap,
                delta,
                q,
                planned * repeats,
                prior=self._history_of(joint | {run_id}),
                accountant=self.accountant,
            )
            sigma_life = (
                plan_noise_multiplier(
                    self.total_epsilon,
                    self.lifetime_delta,
                    q,
                    planned,
                    prior=self._enforced_history(),
                    accountant=self.accountant,
                )
                if enforce
                else 0.0
            )
        except FedwardError as exc:
            raise BudgetRefusal(self.site, str(exc), remaining_epsilon=max(0.0, remaining)) from exc
        sigma = max(sigma_run, sigma_life)
        if sigma > self.policy.max_noise_multiplier:
            binding = "lifetime budget" if sigma_life >= sigma_run else "run's ε"
            raise BudgetRefusal(
                self.site,
                f"the run would need noise multiplier {sigma:.2f} over {planned} steps to stay "
                f"within the {binding}, above this site's maximum of "
                f"{self.policy.max_noise_multiplier:g} (policy.max_noise_multiplier): "
                "ask for fewer rounds or a larger ε",
                remaining_epsilon=max(0.0, remaining),
            ).publicly("budget-noise", epsilon_remaining=round(max(0.0, remaining), 3))
        return RunPlan(
            run_id=run_id,
            noise_multiplier=sigma,
            sample_rate=q,
            steps_per_round=steps_per_round,
            planned_steps=planned,
            run_delta=delta,
            run_epsilon_cap=cap,
            purpose=purpose,
            composes_with=tuple(sorted(composition.hashes)) if composition is not None else (),
        )

    def check_spend(
        self, run_id: str, run_delta: float, run_cap: float, spend: tuple[float, float, int]
    ) -> None:
        """Refuse a release that would take the run or the dataset over its budget."""
        plan = self.existing_plan(run_id)
        enforce = self._enforces(plan.purpose if plan is not None else PURPOSE_RUN)
        after_life = self.enforced_lifetime_epsilon([spend])
        if enforce and after_life > self.total_epsilon + EPSILON_TOLERANCE:
            raise BudgetRefusal(
                self.site,
                f"this release would take dataset '{self.dataset}' to lifetime ε {after_life:.3f}, "
                f"over its budget of {self.total_epsilon:g}",
                remaining_epsilon=max(0.0, self.total_epsilon - self.lifetime_epsilon()),
            )
        after_run = self.model_epsilon(run_id, run_delta, [spend])
        if after_run > run_cap + EPSILON_TOLERANCE:
            joint = (
                " with the runs it composes with (its tuning trials)"
                if plan and plan.composes_with
                else ""
            )
            raise BudgetRefusal(
                self.site,
                f"this release would take run {run_id}{joint} to ε {after_run:.3f}, over the run's "
                f"cap of {run_cap:g}",
                remaining_epsilon=max(0.0, self.total_epsilon - self.lifetime_epsilon()),
            )

    def preprocessing_sigma(self, run: RunConfig) -> float:
        eps = run.privacy.target_epsilon * run.preprocessing.epsilon_share
        sigma = gaussian_release_sigma(eps, self.run_delta(run), self.accountant)
        if not math.isfinite(sigma) or sigma > self.policy.max_noise_multiplier * 1e3:
            raise BudgetRefusal(self.site, f"preprocessing release needs σ {sigma:g}")
        return sigma
