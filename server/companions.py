"""The federations around the run: the tuning search for the run's model, the federated logistic
baseline and the two controls (label shuffle, leave one site out).

Each is an ordinary federation with its own run id, sub-folder and purpose, so every site accounts
it in its ledger and (in deployment) approves its run config like any other. Tuning trials are
scored on the pooled tune split only; the sealed test splits are read by final models alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedward.common.protocol import PURPOSE_BASELINE, PURPOSE_CONTROL, PURPOSE_TUNING
from fedward.common.run_config import RunConfig
from fedward.common.run_plan import (
    companion_runs,
    tuned_run,
    tuning_trials,
)
from fedward.common.schema import DataSchema
from fedward.server.federation import (
    Federation,
    FederationResult,
    describe_model,
    federate,
)
from fedward.server.run_folder import RunFolder

COMPANIONS_DIR = "companions"
LOSO_PREFIX = "leave_out_"


@dataclass
class Companion:
    """A finished companion federation: its summary, and its final model for the paired tests."""

    summary: dict[str, Any]
    arrays: ArrayRecord | None


@dataclass
class TuningSearch:
    """The run model's search: every trial, its setting, its pooled tune AUROC, and the choice."""

    budget: int
    search: str
    rounds: int
    trials: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, Any] | None = None

    def chosen_run(self, run: RunConfig) -> RunConfig:
        """The run config with the chosen setting (the run's own when no trial scored)."""
        return tuned_run(run, self.chosen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "search": self.search,
            "rounds_per_trial": self.rounds,
            "selected_on": "mean of the sites' tune AUROCs after the trial's last round",
            "trials": self.trials,
            "chosen": self.chosen,
        }


def _sub_folder(main: Federation, name: str, run: RunConfig) -> RunFolder:
    return RunFolder.at(
        main.folder.path / COMPANIONS_DIR / name,
        run,
        run_id=f"{main.run_id}-{name}",
        engine="companion",
    )


def _companion(
    main: Federation, name: str, run: RunConfig, purpose: str, *, sealed_test: bool = True
) -> Federation:
    return Federation(
        run=run,
        run_id=f"{main.run_id}-{name}",
        purpose=purpose,
        folder=_sub_folder(main, name, run),
        shared=main.shared,
        heads=main.heads,
        sealed_test=sealed_test,
    )


def _finished(
    main: Federation, name: str, result: FederationResult, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    summary = {**result.summary(), **(extra or {})}
    result.federation.folder.write_json("summary.json", summary)
    main.folder.event(
        "companion-finished",
        name=name,
        elapsed_s=summary["elapsed_s"],
        status=summary["status"],
        test_pooled=(summary["test"] or {}).get("pooled"),
    )
    return summary


def tune_run_model(grid: Grid, main: Federation, schema: DataSchema, n_inputs: int) -> TuningSearch:
    """Try ``tuning.budget`` settings of the run's model, one federation each, on the tune split.

    Every trial is a DP federation when the run is: the sites record it in their ledgers as a
    tuning trial, and the report states its ε apart from the final model's.
    """
    run = main.run
    search = TuningSearch(
        budget=run.tuning.budget,
        search=run.tuning.search,
        rounds=run.tuning.deep_rounds or run.rounds,
    )
    best: float | None = None
    for k, (name, setting, trial_run) in enumerate(tuning_trials(run), start=1):
        main.folder.event("companion-started", name=name, purpose=PURPOSE_TUNING, setting=setting)
        fed = _companion(main, name, trial_run, PURPOSE_TUNING, sealed_test=False)
        result = federate(grid, fed, schema, n_inputs)
        summary = _finished(main, name, result)
        score = result.tune_auroc()
        search.trials.append(
            {
                "trial": k,
                "setting": setting,
                "tune_auroc": score,
                "status": summary["status"],
                "stopped_reason": summary["stopped_reason"],
                "elapsed_s": summary["elapsed_s"],
                "config_hash": summary["config_hash"],
                "sites": summary["sites"],
            }
        )
        if score is not None and (best is None or score > best):
            best, search.chosen = score, setting
    main.folder.write_json("tuning.json", search.to_dict())
    return search


def run_companions(
    grid: Grid,
    main: Federation,
    result: FederationResult,
    schema: DataSchema,
    n_inputs: int,
) -> dict[str, Companion]:
    """The companion federations the run config asks for, by name, each summarised."""
    run = main.run
    out: dict[str, Companion] = {}
    jobs: list[tuple[str, RunConfig, str, set[int], list[int] | None]] = [
        (name, companion, purpose, set(), None) for name, companion, purpose in companion_runs(run)
    ]
    if run.controls.leave_one_site_out:
        # The run's own config, trained without one site: the site approved exactly this config.
        trained = {
            node: rec.label for node, rec in result.tracker.sites.items() if rec.status == "ok"
        }
        for node, site in sorted(trained.items(), key=lambda kv: kv[1]):
            name = LOSO_PREFIX + "".join(c if c.isalnum() else "_" for c in site)
            jobs.append((name, run, PURPOSE_CONTROL, {node}, [node]))
    for name, companion_run, purpose, exclude, test_nodes in jobs:
        main.folder.event(
            "companion-started", name=name, purpose=purpose, model=describe_model(companion_run)
        )
        fed = _companion(main, name, companion_run, purpose)
        fed.exclude = set(exclude)
        res = federate(grid, fed, schema, n_inputs, test_nodes=test_nodes)
        extra: dict[str, Any] = {"model": describe_model(companion_run)}
        if test_nodes:
            extra["left_out"] = [result.tracker.sites[n].label for n in test_nodes]
        summary = _finished(main, name, res, extra)
        if purpose == PURPOSE_BASELINE and not res.stopped:
            # A shareable model: kept, so it can be audited (and released) like the run's own.
            fed.folder.save_model(res.final_arrays, {"kind": companion_run.model.kind})
        out[name] = Companion(summary, None if res.stopped else res.final_arrays)
    return out
