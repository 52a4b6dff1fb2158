"""Every federation a run config asks for, derived the same way at the coordinator and the site.

Besides the run itself, a run config may ask for tuning trials of its model, a federated logistic
baseline and a label-shuffle control (leave-one-site-out reuses the run's own config). Each is a run
config of its own, with its own hash. A site's operator approves the *parent* run config, which
states all of them; the site then re-derives the companions itself and accepts a request only for
a config that is one of them. Nothing else rides on an approval.
"""

from __future__ import annotations

from typing import Any

from scipy.stats import loguniform

from fedward.common.protocol import FEDERATED_LOGISTIC, PURPOSE_BASELINE, PURPOSE_CONTROL
from fedward.common.run_config import RunConfig
from fedward.common.tuning import sample_configurations

LABEL_SHUFFLE = "label_shuffle"
ORCHESTRATION_SECTIONS = ("baselines", "tuning", "controls", "audit", "card")


def derived_run(run: RunConfig, name: str, **changes: Any) -> RunConfig:
    """The run config of a companion federation: the run's, with its own name and ``changes``.

    ``changes`` maps dotted paths (``"model.kind"``) to values. The companion's own
    baselines/tuning/controls sections are reset, so it asks the sites for a plain federation and
    its config hash says exactly what it trains.
    """
    data = run.model_dump(mode="json")
    data["name"] = name
    for section in ORCHESTRATION_SECTIONS:
        data.pop(section, None)
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split(".")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return RunConfig.model_validate(data)


# Flower's FedOpt family: a server optimiser with its own learning rate (left out for the others, so
# their searches draw the settings they always drew).
FEDOPT_STRATEGIES = ("fedadam", "fedadagrad", "fedyogi")


def run_model_space(run: RunConfig) -> dict[str, Any]:
    """Hyperparameters of the run's model, as dotted run-config paths: what the search may change.

    Learning rate, local epochs and expected batch size for every model; under DP also the clipping
    norm; for a FedOpt strategy the server's learning rate; for an MLP its hidden layers and
    activation. The privacy target and the rounds stay the run's.
    """
    space: dict[str, Any] = {
        "training.learning_rate": loguniform(0.01, 2.0),
        "training.local_epochs": [1, 2],
        "training.batch_size": [32, 64, 128],
    }
    if run.privacy.dp:
        space["privacy.max_grad_norm"] = [0.5, 1.0, 2.0]
    if run.strategy.name in FEDOPT_STRATEGIES:
        # An adaptive server step scales every round's update: tuned with the clients' rate and,
        # under DP, the clipping norm, so the recipe and the noise plan are chosen together.
        space["strategy.server_learning_rate"] = loguniform(0.01, 1.0)
    if run.model.kind == "mlp":
        space["model.hidden"] = [[16], [32], [64], [32, 16]]
        space["model.activation"] = ["relu", "tanh"]
    return space


def tuning_settings(run: RunConfig) -> list[dict[str, Any]]:
    """The settings the search tries, in order (deterministic for the run's seed and budget)."""
    if not run.tuning.deep:
        return []
    return sample_configurations(
        run_model_space(run), run.tuning.budget, search=run.tuning.search, seed=run.seed
    )


def trial_name(k: int) -> str:
    return f"tune_{k:03d}"


def search_epsilon(run: RunConfig) -> float:
    """ε all tuning trials together may spend at a site: their share of the run's target."""
    return run.privacy.target_epsilon * run.tuning.epsilon_share


def tuning_trials(run: RunConfig) -> list[tuple[str, dict[str, Any], RunConfig]]:
    """(name, setting, trial run config) for every trial of the search.

    Under DP a trial's target is the whole search's share (``search_epsilon``): a site composes
    the trials with each other and plans each one so that all of them together stay within it.
    """
    rounds = run.tuning.deep_rounds or run.rounds
    changes: dict[str, Any] = {"rounds": rounds}
    if run.privacy.dp:
        changes["privacy.target_epsilon"] = search_epsilon(run)
    return [
        (
            trial_name(k),
            setting,
            derived_run(run, f"{run.name}-{trial_name(k)}", **changes, **setting),
        )
        for k, setting in enumerate(tuning_settings(run), start=1)
    ]


def search_hashes(run: RunConfig) -> frozenset[str]:
    """Config hashes of the run's tuning trials: the federations whose results chose its settings.

    The run as tuned by any trial's setting has the same trials, so a site finds them from the
    final run's config alone.
    """
    return frozenset(trial.config_hash() for _, _, trial in tuning_trials(run))


def tuned_run(run: RunConfig, setting: dict[str, Any] | None) -> RunConfig:
    """The run config with the chosen setting, its orchestration sections kept."""
    if setting is None:
        return run
    data = derived_run(run, run.name, **setting).model_dump(mode="json")
    for section in ORCHESTRATION_SECTIONS:
        data[section] = getattr(run, section).model_dump(mode="json")
    return RunConfig.model_validate(data)


def companion_runs(run: RunConfig) -> list[tuple[str, RunConfig, str]]:
    """(name, run config, purpose) of the federated logistic baseline and the label-shuffle control."""
    out: list[tuple[str, RunConfig, str]] = []
    if run.baselines.enabled and run.baselines.federated_logistic and run.model.kind != "logistic":
        out.append(
            (
                FEDERATED_LOGISTIC,
                derived_run(run, f"{run.name}-{FEDERATED_LOGISTIC}", **{"model.kind": "logistic"}),
                PURPOSE_BASELINE,
            )
        )
    if run.controls.label_shuffle:
        out.append(
            (
                LABEL_SHUFFLE,
                derived_run(
                    run, f"{run.name}-{LABEL_SHUFFLE}", **{"training.shuffle_labels": True}
                ),
                PURPOSE_CONTROL,
            )
        )
    return out


def planned_configs(run: RunConfig) -> dict[str, RunConfig]:
    """Config hash -> run config, for every federation the run config may ask for.

    The run itself (also what leave-one-site-out trains), each tuning trial, the run as tuned by
    each trial's setting (which one wins is known only at the end) and the companions of each.
    """
    finals = [run] + [tuned_run(run, setting) for _, setting, _ in tuning_trials(run)]
    configs = [trial for _, _, trial in tuning_trials(run)]
    for final in finals:
        configs.append(final)
        configs += [companion for _, companion, _ in companion_runs(final)]
    return {c.config_hash(): c for c in configs}
