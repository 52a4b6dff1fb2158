"""The registry of every field a site may send, each with its kind; the egress guard reads it.

A field that is not registered never leaves, whatever its name. Values are checked by the kind
the registry declares, not by the look of their key: a count is a number of people (0 or at
least the site's minimum cell size, a count sent as text is still a count); a rate travels with
its denominator and both of the counts it implies are held to the minimum cell; a metric needs
its n; text is either a fixed code or a templated message (``fedward.common.site_messages``).

Kinds:

- ``model``: a model tensor, trained under DP unless the site's policy allows otherwise
  (ArrayRecord only, keys and shapes of the model the coordinator sent);
- ``dp``: a scalar or payload released under DP, with its ledger entry (ε, noise, the DP
  preprocessing aggregates);
- ``setting``: a number fixed by the run config or the site's policy, not by the data;
- ``sequence``: a count of ledger entries or attempts, never of people;
- ``count`` / ``counts``: people, one number or a list (histograms);
- ``rate``: a fraction of the field ``denominator`` names (per split prefix);
- ``metric``: a number computed over the split whose size ``n`` names;
- ``positions``: histogram bin positions (indices, not people);
- ``code``: one of ``choices`` (or of fedward's fixed vocabularies);
- ``flag``: a boolean;
- ``name``: the site's own name or dataset id, or a hash;
- ``message`` / ``messages``: templated sentences (a SiteMessage as JSON, or a list of them);
- ``profile``: the training profile, a JSON document checked inside;
- ``json``: chosen hyperparameters from the site's fixed search grid.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from fedward.common.audit_keys import ATTACKS, FPR_LEVELS, fpr_label
from fedward.common.evaluation_config import BASELINE_FAMILIES
from fedward.common.metrics import PANEL_KEYS
from fedward.common.protocol import FEDERATED_LOGISTIC

FieldKind = Literal[
    "model",
    "dp",
    "setting",
    "sequence",
    "count",
    "counts",
    "rate",
    "metric",
    "positions",
    "code",
    "flag",
    "name",
    "message",
    "messages",
    "profile",
    "json",
    "duration",
]

ARRAYS_RECORD = "arrays"
METRICS_RECORD = "metrics"
FEDWARD_RECORD = "fedward"

SPLIT_PREFIXES = ("", "train_", "tune_", "test_", "audit_", "eval_")
HISTOGRAM_FIELDS = ("bins", "pos_starts", "pos_counts", "neg_starts", "neg_counts")


@dataclass(frozen=True)
class FieldSpec:
    """What one field is: its kind, and for rates and metrics the field holding their n."""

    kind: FieldKind
    denominator: str | None = None
    choices: tuple[str, ...] = ()
    max_len: int = 200
    records: tuple[str, ...] = (METRICS_RECORD, FEDWARD_RECORD)


STATUS_CODES = ("ok", "refused", "error", "egress-refused", "skipped", "failed", "not-run")
ERROR_KINDS_NOTE = "an exception class name (checked against site_messages.ERROR_NAMES)"
AUDIT_MODELS = ("run", FEDERATED_LOGISTIC)
"""The models a coordinator may ask a site to audit."""


def _non_dp_outputs() -> dict[str, str]:
    out = {
        "train-loss": "train_loss",
        "train-rows": "num-examples (training rows)",
        "refusals": "warnings and refusal reasons",
        "delta-default": "delta (the default is derived from the dataset's row count)",
        "baseline-panels": "baseline metric panels and score histograms (test)",
        "baseline-search": "baseline tune AUROC, chosen hyperparameters and fit times",
        "baseline-differences": (
            "paired AUROC difference between the run's model and each baseline (test)"
        ),
        "profile": (
            "training-data profile: split sizes, prevalence, missingness, feature means and "
            "standard deviations, category counts (small cells suppressed)"
        ),
    }
    for split in ("tune", "test"):
        out[f"panel-{split}"] = f"metric panel ({split})"
        out[f"histogram-{split}"] = f"score histogram ({split})"
        out[f"rows-{split}"] = f"num-examples ({split} rows)"
    for model in AUDIT_MODELS:
        out[f"audit-{model}"] = (
            f"membership audit figures ({model} model): AUC, TPR at fixed FPR, advantage, "
            "empirical ε lower bound, ROC as binned counts"
        )
    return out


NON_DP_OUTPUTS: Mapping[str, str] = _non_dp_outputs()
"""Every description a reply may list as non-DP output, by code: a fixed vocabulary."""

_PANEL_RATES = {"prevalence": "n", "accuracy": "n"}


def _panel_fields(prefix: str) -> dict[str, FieldSpec]:
    out: dict[str, FieldSpec] = {}
    for key in PANEL_KEYS:
        if key == "n":
            out[prefix + key] = FieldSpec("count")
        elif key in _PANEL_RATES:
            out[prefix + key] = FieldSpec("rate", denominator=prefix + _PANEL_RATES[key])
        else:
            out[prefix + key] = FieldSpec("metric", denominator=prefix + "n")
    return out


def _histogram_fields(prefix: str) -> dict[str, FieldSpec]:
    return {
        f"{prefix}hist_bins": FieldSpec("setting"),
        f"{prefix}hist_pos_starts": FieldSpec("positions"),
        f"{prefix}hist_neg_starts": FieldSpec("positions"),
        f"{prefix}hist_pos_counts": FieldSpec("counts"),
        f"{prefix}hist_neg_counts": FieldSpec("counts"),
    }


def _audit_fields() -> dict[str, FieldSpec]:
    members = "mia_n_members"
    out: dict[str, FieldSpec] = {
        members: FieldSpec("count"),
        "mia_n_nonmembers": FieldSpec("count"),
        "mia_n_reference": FieldSpec("setting"),
        "mia_attacks": FieldSpec("code", choices=ATTACKS),
        "mia_confidence": FieldSpec("setting"),
        "mia_seconds": FieldSpec("duration"),
        "mia_reference_seconds": FieldSpec("duration"),
        "mia_canary_seconds": FieldSpec("duration"),
        "mia_notes": FieldSpec("messages"),
        "mia_canary_n": FieldSpec("setting"),
        "mia_canary_k_plus": FieldSpec("setting"),
        "mia_canary_k_minus": FieldSpec("setting"),
        # The number of guesses is the auditor's choice (k+ + k-), a setting; how many were
        # right is an outcome over the site's rows, held to the cell rule.
        "mia_canary_guesses": FieldSpec("setting"),
        "mia_canary_correct": FieldSpec("count"),
        "mia_canary_epsilon_lb": FieldSpec("metric"),
        "mia_canary_epsilon_lb_confidence": FieldSpec("setting"),
        "mia_canary_epsilon_max": FieldSpec("metric"),
        "mia_canary_delta": FieldSpec("dp"),
        "mia_canary_epsilon_claimed": FieldSpec("dp"),
        "mia_canary_exceeds_claim": FieldSpec("flag"),
        "audit_model": FieldSpec("code", choices=AUDIT_MODELS),
    }
    for attack in ATTACKS:
        key = f"mia_{attack}_"
        for suffix in ("auc", "auc_lo", "auc_hi", "advantage"):
            out[key + suffix] = FieldSpec("metric", denominator=members)
        for fpr in FPR_LEVELS:
            label = fpr_label(fpr)
            # The attack's TPR counts members above a threshold of its own score: which members
            # stays unknown, so it is held to the metric rule (members >= min cell), not a rate's.
            out[f"{key}tpr_at_fpr_{label}"] = FieldSpec("metric", denominator=members)
            for side in ("_lo", "_hi"):
                out[f"{key}tpr_at_fpr_{label}{side}"] = FieldSpec("metric", denominator=members)
        out.update(_histogram_fields(key))
    return out


def _baseline_fields() -> dict[str, FieldSpec]:
    out: dict[str, FieldSpec] = {
        "baseline_families": FieldSpec("code", choices=(*BASELINE_FAMILIES, FEDERATED_LOGISTIC)),
    }
    for family in (*BASELINE_FAMILIES, FEDERATED_LOGISTIC):
        key = f"baseline_{family}_"
        out.update(
            {
                key + "status": FieldSpec("code", choices=STATUS_CODES),
                key + "reason": FieldSpec("message"),
                key + "memorises_rows": FieldSpec("flag"),
                key + "n_configurations": FieldSpec("setting"),
                key + "failed_configurations": FieldSpec("sequence"),
                key + "fit_seconds": FieldSpec("duration"),
                key + "params": FieldSpec("json", max_len=2000),
                key + "selection": FieldSpec("code", choices=("tune AUROC", "default")),
                key + "tune_auroc": FieldSpec("metric"),
                key + "undefined_metrics": FieldSpec("code", choices=PANEL_KEYS),
            }
        )
        for diff in ("diff_auroc", "diff_auroc_lo", "diff_auroc_hi", "diff_auroc_se"):
            out[key + diff] = FieldSpec("metric", denominator=key + "n")
        out.update(_panel_fields(key))
        out.update(_histogram_fields(key))
    return out


def _registry() -> dict[str, FieldSpec]:
    reg: dict[str, FieldSpec] = {
        # Identity and status.
        "site": FieldSpec("name"),
        "dataset": FieldSpec("name"),
        "status": FieldSpec("code", choices=STATUS_CODES),
        "reason": FieldSpec("message", max_len=1000),
        "error_kind": FieldSpec("code"),
        "warnings": FieldSpec("messages"),
        "non_dp_outputs": FieldSpec("code", choices=tuple(NON_DP_OUTPUTS.values())),
        "split": FieldSpec("code", choices=("train", "tune", "test", "audit")),
        "undefined_metrics": FieldSpec("code", choices=PANEL_KEYS),
        "purpose": FieldSpec("code", choices=("run", "tuning", "control", "baseline")),
        "privacy_unit": FieldSpec("code", choices=("record",)),
        "accountant": FieldSpec("code", choices=("rdp", "prv", "gdp")),
        "dp": FieldSpec("flag"),
        "multi_row_patients": FieldSpec("flag"),
        # Privacy accounting: DP figures from the ledger, the policy's fixed budget.
        "epsilon": FieldSpec("dp"),
        "delta": FieldSpec("dp"),
        "epsilon_lifetime": FieldSpec("dp"),
        "delta_lifetime": FieldSpec("dp"),
        "epsilon_remaining": FieldSpec("dp"),
        "epsilon_tuning": FieldSpec("dp"),
        "epsilon_model": FieldSpec("dp"),
        "noise_multiplier": FieldSpec("dp"),
        "sample_rate": FieldSpec("dp"),
        "steps": FieldSpec("dp"),
        "preprocessing_aggregates": FieldSpec("dp", max_len=1_000_000, records=(FEDWARD_RECORD,)),
        "epsilon_budget": FieldSpec("setting"),
        "delta_budget": FieldSpec("setting"),
        "max_grad_norm": FieldSpec("setting"),
        "min_cell_size": FieldSpec("setting"),
        "ledger_seq": FieldSpec("sequence"),
        "ledger_head": FieldSpec("name"),
        "attempt": FieldSpec("name"),
        "node_id": FieldSpec("setting"),  # Flower's id of the site's node (SecAgg+ refusals)
        "reason_source": FieldSpec("message"),
        "warnings_source": FieldSpec("messages"),
        # Sizes.
        "num-examples": FieldSpec("count"),
        "n_train": FieldSpec("count"),
        "training_profile": FieldSpec("profile", max_len=1_000_000, records=(FEDWARD_RECORD,)),
        # Non-DP training signal: only sent without DP (a DP reply leaves it out).
        "train_loss": FieldSpec("metric", denominator="num-examples"),
    }
    for prefix in SPLIT_PREFIXES:
        reg.update(_panel_fields(prefix))
        reg.update(_histogram_fields(prefix))
    reg.update(_audit_fields())
    reg.update(_baseline_fields())
    return reg


REGISTRY: Mapping[str, FieldSpec] = _registry()
"""Field name -> what it is. The single source of the egress guard's allow-list."""


def lookup(key: str) -> FieldSpec | None:
    return REGISTRY.get(key)


def registered(keys: Iterable[str]) -> list[str]:
    """The keys the registry knows (tests list what a reply sends against it)."""
    return [k for k in keys if k in REGISTRY]


def matching(pattern: str) -> list[str]:
    return sorted(k for k in REGISTRY if fnmatch.fnmatchcase(k, pattern))


def implied_counts_ok(rate: float, n: float, min_cell: int) -> bool:
    """A rate of n people names two counts (rate·n and the rest): both 0 or >= min_cell."""
    part = round(rate * n)
    rest = round(n) - part
    return all(c <= 0 or c >= min_cell for c in (part, rest))


def confusion_counts(
    n: float, prevalence: float, accuracy: float, balanced_accuracy: float
) -> tuple[int, int, int, int] | None:
    """TP, FN, TN, FP solved from n, prevalence, accuracy and balanced accuracy (None: not unique).

    Accuracy gives TP+TN, balanced accuracy TP/P + TN/N: with P != N both counts follow.
    """
    p = round(prevalence * n)
    q = round(n) - p
    if p <= 0 or q <= 0 or p == q:
        return None
    correct = accuracy * n
    tp = (2 * balanced_accuracy - correct / q) / (1 / p - 1 / q)
    tn = correct - tp
    tp_i, tn_i = round(tp), round(tn)
    return tp_i, p - tp_i, tn_i, q - tn_i


__all__ = [
    "ARRAYS_RECORD",
    "AUDIT_MODELS",
    "FEDWARD_RECORD",
    "METRICS_RECORD",
    "NON_DP_OUTPUTS",
    "REGISTRY",
    "FieldSpec",
    "confusion_counts",
    "implied_counts_ok",
    "lookup",
]
