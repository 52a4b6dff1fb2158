"""The run config's sections on how the model is judged: evaluation, baselines, tuning, controls
and the membership audit (each field marked for the approval hash, see
``fedward.common.config_hash``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fedward.common.config_files import STRICT
from fedward.common.config_hash import Hashed, HashedUnlessDefault


class EvaluationConfig(BaseModel):
    model_config = STRICT

    bootstrap: Hashed[int] = Field(default=200, ge=0, le=100000)
    histogram_bins: Hashed[int] = Field(default=20, ge=2, le=1000)
    confidence: Hashed[float] = Field(default=0.95, gt=0.5, lt=1)


BaselineFamily = Literal[
    "logistic_regression", "random_forest", "knn", "naive_bayes", "svm", "hist_gradient_boosting"
]
BASELINE_FAMILIES: tuple[BaselineFamily, ...] = (
    "logistic_regression",
    "random_forest",
    "knn",
    "naive_bayes",
    "svm",
    "hist_gradient_boosting",
)


class BaselinesConfig(BaseModel):
    """Traditional baselines, run through the same splits, preprocessing and metric code."""

    model_config = STRICT

    enabled: Hashed[bool] = Field(
        default=True,
        description="Each site tunes and evaluates the scikit-learn suite on its own splits; "
        "only metrics leave (never a fitted model).",
    )
    families: Hashed[list[BaselineFamily]] = Field(
        default_factory=lambda: list(BASELINE_FAMILIES), min_length=1, max_length=6
    )
    federated_logistic: Hashed[bool] = Field(
        default=True,
        description="Also federate a logistic regression (same DP, same rounds): the central "
        "baseline model the run's model is compared with. Skipped when the run's model is "
        "already logistic.",
    )
    pooled_reference: Hashed[bool] = Field(
        default=True,
        description="Simulation only: train the run's model and the suite on the pooled data "
        "too, as the reference federation should approach.",
    )


class TuningConfig(BaseModel):
    """One search budget for every model family, the run's own model included."""

    model_config = STRICT

    budget: Hashed[int] = Field(
        default=20, ge=1, le=1000, description="Configurations tried per model family."
    )
    search: Hashed[Literal["random", "grid"]] = "random"
    deep: Hashed[bool] = Field(
        default=False,
        description="Tune the run's model too, with the same budget: each configuration is a "
        "federation scored on the pooled tune split. Every DP trial is accounted in the sites' "
        "ledgers (in simulation reported, not enforced).",
    )
    deep_rounds: Hashed[int | None] = Field(
        default=None,
        ge=1,
        le=10000,
        description="Rounds per tuning trial; null: the run's rounds.",
    )
    epsilon_share: HashedUnlessDefault[float] = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Under DP: the share of the run's target ε that all tuning trials together "
        "may spend at a site. The trials chose the released model's settings, so the released "
        "model's ε composes them with the final run; the final run gets what is left.",
    )


class AuditConfig(BaseModel):
    """Membership-inference audit of every model the run would release, run at each site."""

    model_config = STRICT

    enabled: Hashed[bool] = True
    reference_models: Hashed[int] = Field(
        default=4,
        ge=0,
        le=64,
        description="Reference models each site trains on its own data for LiRA (0: loss attack "
        "and canaries only).",
    )
    canaries: Hashed[int | None] = Field(
        default=None,
        ge=0,
        le=100000,
        description="Canaries of the one-run audit; null: as many as each site's rows support.",
    )
    confidence: Hashed[float] = Field(default=0.95, gt=0.5, lt=1)
    bins: Hashed[int] = Field(default=20, ge=2, le=200, description="ROC bins released per site.")
    max_tpr_at_1pct_fpr: Hashed[float] = Field(
        default=0.02,
        gt=0,
        le=1,
        description="Verdict threshold: an attack's TPR at 1% FPR above this fails the audit.",
    )
    max_auc: Hashed[float] = Field(
        default=0.6, gt=0.5, le=1, description="Verdict threshold on any attack's AUC."
    )


class ControlsConfig(BaseModel):
    """Opt-in controls; each is one or more extra federations that spend budget like any run."""

    model_config = STRICT

    label_shuffle: Hashed[bool] = Field(
        default=False,
        description="Retrain with permuted training labels: its test AUROC should be near 0.5.",
    )
    leave_one_site_out: Hashed[bool] = Field(
        default=False,
        description="One more federation per site, trained without it and tested on it.",
    )
