"""Run and site configuration: pydantic models read from TOML, with errors that name file and field.

The run config is what a coordinator *asks for*; the site config is what a site *allows*. Defaults are
the safe ones: DP on, nothing non-DP leaves a site except aggregates protected by minimum cell sizes.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedward.common.config_hash import (
    Hashed,
    HashedKeyOnly,
    HashedUnlessDefault,
    HashRule,
    NotHashed,
    canonical_hash,
    hashed_form,
)
from fedward.common.errors import ConfigError
from fedward.common.schema import DataSchema

_Strict = ConfigDict(extra="forbid", validate_default=True)
# SecAgg+ was added after configs were first approved: its switch and settings are hashed together,
# and left out while both are at their defaults.
_SECURE_AGGREGATION_HASH = HashRule("unless-default", group="secure aggregation")


class TaskConfig(BaseModel):
    """What is learnt, and from which data when the data are bundled."""

    model_config = _Strict

    dataset: Hashed[str | None] = Field(
        default="heart-disease",
        description="Bundled dataset ('heart-disease', 'breast-cancer', 'digits', 'synthetic'), "
        "or the name of the sites' own data (it names the data on the model card). When the "
        "sites bring their own files, set schema_file: `fedward simulate` then names the data "
        "after the schema's name.",
    )
    schema_file: HashedKeyOnly[str | None] = Field(
        default=None,
        description="Schema TOML every site must match (relative to this file); "
        "defaults to the bundled dataset's schema.",
    )
    n_sites: Hashed[int | None] = Field(
        default=None, ge=1, le=1000, description="Sites for datasets split artificially."
    )
    partition: Hashed[Literal["natural", "iid", "dirichlet"]] = "natural"
    dirichlet_alpha: Hashed[float] = Field(default=0.5, gt=0, le=1000)


class ModelConfig(BaseModel):
    model_config = _Strict

    kind: Hashed[Literal["logistic", "mlp", "cnn"]] = "logistic"
    hidden: Hashed[list[int]] = Field(default_factory=lambda: [32], max_length=8)
    activation: Hashed[Literal["relu", "tanh", "square"]] = "relu"
    he_compatible: HashedUnlessDefault[bool] = Field(
        default=False,
        description="Train a model the encrypted-inference service can evaluate on CKKS "
        "ciphertexts: logistic regression, or an MLP with square activations (chosen for you "
        "when activation is not set) and at most 3 hidden layers.",
    )

    @model_validator(mode="after")
    def _sizes(self) -> ModelConfig:
        if any(h < 1 or h > 4096 for h in self.hidden):
            raise ValueError("hidden layer sizes must be between 1 and 4096")
        if self.he_compatible:
            if self.kind == "cnn":
                raise ValueError(
                    "he_compatible: a CNN cannot be evaluated on CKKS ciphertexts here; "
                    "use kind = 'logistic' or 'mlp'"
                )
            if self.kind == "mlp" and self.activation != "square":
                if "activation" in self.model_fields_set:
                    raise ValueError(
                        f"he_compatible: activation '{self.activation}' is not a polynomial and "
                        "cannot be evaluated on ciphertexts; use 'square' (or leave it unset)"
                    )
                self.activation = "square"
            if self.kind == "mlp" and len(self.hidden) > 3:
                raise ValueError(
                    "he_compatible: at most 3 hidden layers (each costs two CKKS levels)"
                )
        return self


class TrainingConfig(BaseModel):
    model_config = _Strict

    local_epochs: Hashed[int] = Field(default=1, ge=1, le=100)
    batch_size: Hashed[int] = Field(
        default=64, ge=1, le=65536, description="Expected batch size (Poisson sampling under DP)."
    )
    learning_rate: Hashed[float] = Field(default=0.5, gt=0, le=100)
    optimizer: Hashed[Literal["sgd", "adam"]] = "sgd"
    momentum: Hashed[float] = Field(default=0.0, ge=0, lt=1)
    weight_decay: Hashed[float] = Field(default=0.0, ge=0, le=1)
    shuffle_labels: HashedUnlessDefault[bool] = Field(
        default=False,
        description="Memorisation control: each site trains on its training labels permuted. "
        "Set by the coordinator for the label-shuffle control run; a model that still scores "
        "well on the real test labels learnt something other than the signal.",
    )
    positive_weight: HashedUnlessDefault[float] = Field(
        default=1.0,
        gt=0,
        le=1000,
        description="Weight of a positive row's loss, for a rare outcome (about (1 - p) / p at "
        "prevalence p). A fixed number of the run config, never computed from a site's rows: "
        "each row's gradient is still clipped, so DP-SGD's guarantee is unchanged, and under DP "
        "the weight acts only on gradients below the clipping norm.",
    )


class SecAggConfig(BaseModel):
    """Flower's SecAgg+ protocol (Bell et al. 2020), used when ``strategy.secure_aggregation``."""

    model_config = _Strict

    num_shares: Hashed[int] = Field(
        default=3,
        ge=3,
        le=10000,
        description="Shares each site's masking secrets are split into (the site and its "
        "neighbours); more shares tolerate more sites dropping out.",
    )
    reconstruction_threshold: Hashed[int] = Field(
        default=2,
        ge=2,
        le=10000,
        description="Shares needed to remove a site's masks; a round whose sites fall below it "
        "stops without an aggregate. Higher: better privacy, less tolerance to drop-outs.",
    )
    max_weight: Hashed[float] = Field(
        default=10000.0,
        gt=0,
        le=1e9,
        description="Largest site weight (its training rows) the quantised sum expects; a larger "
        "weight is capped by Flower and makes the mean biased.",
    )
    clipping_range: Hashed[float] = Field(
        default=8.0,
        gt=0,
        le=1e6,
        description="Every model parameter is clipped to [-range, range] before quantisation.",
    )
    quantization_range: Hashed[int] = Field(default=2**22, ge=2**8, le=2**30)
    timeout_s: Hashed[float | None] = Field(
        default=600.0,
        gt=0,
        le=86400,
        description="Wait per SecAgg+ stage for the sites' replies; null: wait for every site.",
    )

    @model_validator(mode="after")
    def _threshold_below_shares(self) -> SecAggConfig:
        if self.reconstruction_threshold >= self.num_shares:
            raise ValueError("reconstruction_threshold must be smaller than num_shares")
        return self


class UpdateValidationConfig(BaseModel):
    """The coordinator's check of every site's update before aggregation
    (``fedward.server.update_validation``): a failing update is dropped and the site named."""

    model_config = _Strict

    enabled: Hashed[bool] = Field(
        default=True,
        description="Check layer names, shapes, dtypes, finite values and the update norm "
        "against the global model sent that round. Off only for experiments.",
    )
    max_norm: Hashed[float | None] = Field(
        default=100.0,
        gt=0,
        le=1e12,
        description="L2 bound of one site's update (its model minus the global model it was "
        "sent). A DP-SGD update with SGD is at most lr x local steps x max_grad_norm plus its "
        "noise: a few units at the defaults. Null: no absolute bound.",
    )
    max_norm_ratio: Hashed[float | None] = Field(
        default=10.0,
        gt=1,
        le=1e6,
        description="An update whose norm exceeds this many times the round's median update norm "
        "is dropped (only when at least 3 updates remain). Null: no relative bound.",
    )


class StrategyConfig(BaseModel):
    """Flower's own strategies; fedward only wraps them."""

    model_config = _Strict

    name: Hashed[
        Literal[
            "fedavg",
            "fedprox",
            "fedadam",
            "fedadagrad",
            "fedyogi",
            "fedmedian",
            "fedtrimmedavg",
            "krum",
            "multikrum",
        ]
    ] = "fedavg"
    fraction_train: Hashed[float] = Field(default=1.0, gt=0, le=1)
    min_sites: Hashed[int] = Field(default=2, ge=1, le=100000)
    proximal_mu: Hashed[float] = Field(default=0.01, ge=0, le=100)
    server_learning_rate: Hashed[float] = Field(default=0.1, gt=0, le=100)
    trim_beta: Hashed[float] = Field(default=0.2, gt=0, lt=0.5)
    malicious_sites: HashedUnlessDefault[int] = Field(
        default=0,
        ge=0,
        le=100000,
        description="Krum and MultiKrum: the f hostile sites assumed; each update is scored by "
        "its distances to its n - f - 2 nearest others (Flower's default 0).",
    )
    multikrum_select: HashedUnlessDefault[int] = Field(
        default=2,
        ge=1,
        le=100000,
        description="MultiKrum: how many of the best-scored updates are averaged.",
    )
    round_timeout: Hashed[float] = Field(
        default=600.0,
        gt=0,
        le=86400,
        description="Seconds a round (and every other question to the sites) waits for replies; "
        "it then closes with the sites that answered, the rest recorded as dropped.",
    )
    site_wait: Hashed[float] = Field(
        default=120.0,
        gt=0,
        le=86400,
        description="Seconds to wait for min_sites sites to connect before a federation starts "
        "(Flower's own wait has no limit); the run then stops cleanly with too few sites.",
    )
    validation: HashedUnlessDefault[UpdateValidationConfig] = Field(
        default_factory=UpdateValidationConfig
    )
    secure_aggregation: Annotated[bool, _SECURE_AGGREGATION_HASH] = Field(
        default=False,
        description="Flower's SecAgg+: the coordinator sees only the sum of the sites' models. "
        "Runs Flower's legacy server workflow (`fedward simulate` only in this version); no "
        "per-update validation and no robust aggregation are possible then.",
    )
    secagg: Annotated[SecAggConfig, _SECURE_AGGREGATION_HASH] = Field(default_factory=SecAggConfig)


class CentralDPConfig(BaseModel):
    """Site-level DP at the coordinator with Flower's server-side wrappers (McMahan et al. 2018).

    The coordinator clips each site's model update and adds Gaussian noise to the mean, so the
    protected "user" is a whole site: meaningful only with many sites (tens to hundreds). It adds
    to each site's own sample-level DP-SGD; it replaces nothing.
    """

    model_config = _Strict

    enabled: Hashed[bool] = False
    noise_multiplier: Hashed[float] = Field(
        default=1.0,
        gt=0,
        le=1000,
        description="Noise std / clipping norm for the mean of the sampled sites' updates "
        "(Flower adds std noise_multiplier x clipping_norm / sampled sites).",
    )
    clipping_norm: Hashed[float] = Field(
        default=1.0,
        gt=0,
        le=1e6,
        description="L2 bound of one site's model update; with adaptive clipping the initial one.",
    )
    adaptive: Hashed[bool] = Field(
        default=False,
        description="Adaptive clipping (Andrew et al. 2021): the norm follows a noisy quantile "
        "of the sites' update norms; part of the noise then goes to that quantile.",
    )
    target_clipped_quantile: Hashed[float] = Field(default=0.5, ge=0, le=1)
    clip_norm_lr: Hashed[float] = Field(default=0.2, gt=0, le=10)
    clipped_count_stddev: Hashed[float | None] = Field(
        default=None,
        gt=0,
        le=1e6,
        description="Noise std of the clipped-update count (adaptive only); null: Flower's "
        "default, sampled sites / 20, which needs noise_multiplier < sampled sites / 10.",
    )
    num_sites: Hashed[int | None] = Field(
        default=None,
        ge=2,
        le=10**6,
        description="Sites in the federation (the population sampled from each round); null: "
        "the sites connected when the run starts (all simulated sites in simulation).",
    )
    delta: Hashed[float | None] = Field(
        default=None,
        gt=0,
        lt=1,
        description="δ of the site-level guarantee; null: 1 / (10 x number of sites).",
    )


class PrivacyConfig(BaseModel):
    """The run's DP target; a site may only be asked for less (more privacy), never more."""

    model_config = _Strict

    dp: Hashed[bool] = Field(
        default=True, description="Off only for simulation and comparison runs."
    )
    target_epsilon: Hashed[float] = Field(
        default=1.0,
        gt=0,
        le=100,
        description="ε of the released model at each site: the tuning trials that chose its "
        "settings, the DP preprocessing release and the final run's training, composed. "
        "Baselines and controls spend from the sites' lifetime budgets on their own.",
    )
    delta: Hashed[float | None] = Field(
        default=None,
        gt=0,
        lt=1,
        description="Null: each site uses a delta below 1/(10 * its training rows).",
    )
    max_grad_norm: Hashed[float] = Field(default=1.0, gt=0, le=1000)
    accountant: Hashed[Literal["rdp", "prv"]] = "rdp"
    central: HashedUnlessDefault[CentralDPConfig] = Field(default_factory=CentralDPConfig)


class PreprocessingConfig(BaseModel):
    model_config = _Strict

    source: Hashed[Literal["schema", "dp-aggregates"]] = Field(
        default="schema",
        description="'schema': declared ranges and imputation values, no privacy cost. "
        "'dp-aggregates': means/SDs/modes from the training splits, released under DP.",
    )
    epsilon_share: Hashed[float] = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Share of the run's epsilon spent on the preprocessing aggregates.",
    )


class SplitConfig(BaseModel):
    model_config = _Strict

    tune: Hashed[float] = Field(default=0.15, gt=0, lt=0.5)
    test: Hashed[float] = Field(default=0.2, gt=0, lt=0.5)
    audit: Hashed[float] = Field(
        default=0.1,
        ge=0,
        lt=0.5,
        description="Rows set aside as the membership audit's non-members: never trained on, "
        "never the sealed test split. 0 switches the audit's attacks off at every site.",
    )
    min_per_class: Hashed[int] = Field(default=2, ge=1, le=1000)
    min_rows: Hashed[int] = Field(default=20, ge=4, le=10**7)

    @model_validator(mode="after")
    def _room_for_training(self) -> SplitConfig:
        if self.tune + self.test + self.audit >= 0.8:
            raise ValueError("tune + test + audit must leave at least 20% for training")
        return self


class EvaluationConfig(BaseModel):
    model_config = _Strict

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

    model_config = _Strict

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

    model_config = _Strict

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

    model_config = _Strict

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


class EthicsEntry(BaseModel):
    """One concern of the run's ethics register: what it is, where it stands, what was done."""

    model_config = _Strict

    concern: NotHashed[str] = Field(min_length=1, max_length=2000)
    status: NotHashed[Literal["open", "mitigated", "accepted", "not applicable"]] = "open"
    mitigation: NotHashed[str] = Field(default="", max_length=2000)


class CardConfig(BaseModel):
    """What a model card says that no measurement can: intended use, limits, the ethics register."""

    model_config = _Strict

    intended_use: NotHashed[str] = Field(
        default="Research and comparison of privacy-preserving training methods on the "
        "configured data. Not validated for clinical decisions.",
        max_length=4000,
    )
    intended_users: NotHashed[list[str]] = Field(
        default_factory=lambda: ["researchers", "data scientists at the participating sites"],
        max_length=50,
    )
    out_of_scope_uses: NotHashed[list[str]] = Field(
        default_factory=lambda: [
            "diagnosis or treatment decisions for individual patients",
            "populations or sites the model was not evaluated on",
            "causal conclusions: the model's predictions are associations",
        ],
        max_length=50,
    )
    owners: NotHashed[list[str]] = Field(default_factory=list, max_length=50)
    ethics: NotHashed[list[EthicsEntry]] = Field(
        default_factory=lambda: [
            EthicsEntry(
                concern="Training on sensitive patient records",
                status="mitigated",
                mitigation="Raw data never leave the sites; sample-level DP-SGD at each site; "
                "only aggregates leave, through the egress guard.",
            ),
            EthicsEntry(
                concern="Performance may differ between hospitals and patient groups",
                status="open",
                mitigation="Per-site metrics and leave-one-site-out evaluation are reported; "
                "subgroup metrics are not computed in this version.",
            ),
        ],
        max_length=200,
    )
    caveats: NotHashed[list[str]] = Field(default_factory=list, max_length=50)
    data_license: NotHashed[str | None] = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The training data's licence as the card states it (e.g. 'CC BY 4.0'). "
        "Unset, the card claims none, except a bundled dataset's own.",
    )


class ControlsConfig(BaseModel):
    """Opt-in controls; each is one or more extra federations that spend budget like any run."""

    model_config = _Strict

    label_shuffle: Hashed[bool] = Field(
        default=False,
        description="Retrain with permuted training labels: its test AUROC should be near 0.5.",
    )
    leave_one_site_out: Hashed[bool] = Field(
        default=False,
        description="One more federation per site, trained without it and tested on it.",
    )


# Central DP's noise is calibrated to a mean of clipped updates: FedProx aggregates as FedAvg does.
_MEAN_STRATEGIES = ("fedavg", "fedprox")
# Under SecAgg+ a strategy sees only the (weighted) mean; FedAdam's server step needs nothing more.
_SECAGG_STRATEGIES = ("fedavg", "fedprox", "fedadam")


class RunConfig(BaseModel):
    """One federated run, as the coordinator asks for it."""

    model_config = _Strict

    name: Hashed[str] = Field(default="fedward-run", min_length=1, max_length=200)
    seed: Hashed[int] = Field(default=42, ge=0, le=2**32 - 1)
    rounds: Hashed[int] = Field(default=20, ge=1, le=10000)
    task: Hashed[TaskConfig] = Field(default_factory=TaskConfig)
    model: Hashed[ModelConfig] = Field(default_factory=ModelConfig)
    training: Hashed[TrainingConfig] = Field(default_factory=TrainingConfig)
    strategy: Hashed[StrategyConfig] = Field(default_factory=StrategyConfig)
    privacy: Hashed[PrivacyConfig] = Field(default_factory=PrivacyConfig)
    preprocessing: Hashed[PreprocessingConfig] = Field(default_factory=PreprocessingConfig)
    splits: Hashed[SplitConfig] = Field(default_factory=SplitConfig)
    evaluation: Hashed[EvaluationConfig] = Field(default_factory=EvaluationConfig)
    baselines: Hashed[BaselinesConfig] = Field(default_factory=BaselinesConfig)
    tuning: Hashed[TuningConfig] = Field(default_factory=TuningConfig)
    controls: Hashed[ControlsConfig] = Field(default_factory=ControlsConfig)
    audit: Hashed[AuditConfig] = Field(default_factory=AuditConfig)
    card: NotHashed[CardConfig] = Field(default_factory=CardConfig)

    @model_validator(mode="after")
    def _privacy_modes_fit_the_strategy(self) -> RunConfig:
        central, strategy = self.privacy.central, self.strategy
        if central.enabled and strategy.name not in _MEAN_STRATEGIES:
            raise ValueError(
                f"privacy.central.enabled needs strategy.name 'fedavg' or 'fedprox', not "
                f"'{strategy.name}': Flower's central-DP noise is sized for the mean of the "
                "clipped site updates, and this strategy does not release that mean"
            )
        if central.enabled and strategy.secure_aggregation:
            raise ValueError(
                "privacy.central.enabled and strategy.secure_aggregation cannot be combined in "
                "this version: server-side clipping needs each site's update, which SecAgg+ hides"
            )
        if strategy.secure_aggregation:
            if strategy.name not in _SECAGG_STRATEGIES:
                raise ValueError(
                    f"strategy.secure_aggregation cannot run strategy.name '{strategy.name}': "
                    "robust aggregation needs each site's update, and under SecAgg+ the "
                    "coordinator sees only their sum (use 'fedavg', 'fedprox' or 'fedadam')"
                )
            if self.preprocessing.source != "schema":
                raise ValueError(
                    "strategy.secure_aggregation needs preprocessing.source = 'schema': the "
                    "SecAgg+ mode does not collect the DP preprocessing aggregates"
                )
            if strategy.min_sites < max(2, strategy.secagg.reconstruction_threshold):
                raise ValueError(
                    f"strategy.min_sites ({strategy.min_sites}) must be at least "
                    f"strategy.secagg.reconstruction_threshold "
                    f"({strategy.secagg.reconstruction_threshold}) and at least 2"
                )
        return self

    def config_hash(self) -> str:
        """Hash of the canonical JSON form; a site approves a run by this value.

        The schema file's location differs between machines, so it is left out; every site checks
        the schema's content against its own instead. The optional privacy modes and the
        label-shuffle flag are left out while off, and the strategy's update-validation and Krum
        settings while at their defaults, so configs approved before they existed keep their hash.
        The baselines, tuning and controls sections are always in it: they ask the sites for more
        work and more federations, which an older approval never covered.
        """
        return canonical_hash(hashed_form(self))

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, *, source: str = "<run config from coordinator>") -> RunConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(source, None, f"not valid JSON: {exc}") from exc
        return validate_config(cls, data, source)


class DataSourceConfig(BaseModel):
    """Where a site's table lives and what it must look like."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)

    path: str = Field(description="CSV or Parquet file, relative to the site config file.")
    format: Literal["auto", "csv", "parquet"] = "auto"
    dataset_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="The budget's key in the ledger; defaults to the site name. Keep it when the "
        "file is re-exported: the same patients share one lifetime budget.",
    )
    schema_file: str | None = Field(
        default=None, description="Schema TOML (relative to the site config file)."
    )
    dataset_schema: DataSchema | None = Field(
        default=None, alias="schema", description="The schema inline instead of a file."
    )

    @model_validator(mode="after")
    def _one_schema(self) -> DataSourceConfig:
        if (self.schema_file is None) == (self.dataset_schema is None):
            raise ValueError("give exactly one of data.schema_file or an inline [data.schema]")
        return self


class PolicyConfig(BaseModel):
    """The site's own rules; the coordinator's run config can only ask for less."""

    model_config = _Strict

    min_cell_size: int = Field(default=10, ge=1, le=10**6)
    allow_non_dp: bool = Field(default=False, description="Non-DP training is never the default.")
    total_epsilon: float = Field(
        default=10.0,
        gt=0,
        le=1000,
        description="Lifetime ε of this dataset, across every run, composed from the ledger.",
    )
    total_delta: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Lifetime δ; null: below 1/(10 * the dataset's rows).",
    )
    max_epsilon_per_run: float | None = Field(
        default=None, gt=0, le=1000, description="The most ε one run may spend."
    )
    max_noise_multiplier: float = Field(
        default=25.0,
        gt=0,
        le=10**4,
        description="A run that would need more noise than this is refused at its start.",
    )
    accountant: Literal["rdp", "prv"] = Field(
        default="rdp",
        description="The accountant that composes this dataset's lifetime history; the site "
        "chooses it, not the run config.",
    )
    auto_approve: bool = Field(
        default=False,
        description="Accept run configs and code not approved with `fedward site approve` "
        "(simulation and demos only).",
    )

    @model_validator(mode="after")
    def _per_run_within_total(self) -> PolicyConfig:
        if self.max_epsilon_per_run is not None and self.max_epsilon_per_run > self.total_epsilon:
            raise ValueError("max_epsilon_per_run cannot exceed total_epsilon")
        return self


class SiteConfig(BaseModel):
    """One site: its name, its data, its state folder and its policy."""

    model_config = _Strict

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")
    data: DataSourceConfig
    state_dir: str = Field(default="state", description="Relative to the site config file.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig)

    # Set by load_site_config so relative paths resolve against the file, not the cwd.
    base_dir: str = Field(default=".", exclude=True)

    def resolve(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def data_path(self) -> Path:
        return self.resolve(self.data.path)

    @property
    def state_path(self) -> Path:
        return self.resolve(self.state_dir)

    def load_schema(self) -> DataSchema:
        if self.data.dataset_schema is not None:
            return self.data.dataset_schema
        assert self.data.schema_file is not None
        return load_schema(self.resolve(self.data.schema_file))


M = TypeVar("M", bound=BaseModel)


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def validate_config(model: type[M], data: Any, source: str | Path) -> M:
    """Validate ``data``; on failure raise one ConfigError listing every bad field.

    Strict: a file's ``rounds = true`` or ``seed = "7"`` is a mistake to name, not a value to coerce
    (an integer is still accepted where a float is asked for).
    """
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        # A check across sections (a model validator) has no field of its own: its text names them.
        field = _field_path(tuple(first["loc"])) if first["loc"] else None
        lines = [f"{_field_path(tuple(e['loc']))}: {_message(e['msg'])}" for e in errors]
        reason = _message(first["msg"]) if len(lines) == 1 else "; ".join(lines)
        raise ConfigError(source, field, reason) from exc


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, None, "file not found")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(p, None, f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(p, None, f"not UTF-8 text: {exc}") from exc
    except RecursionError:
        # tomllib recurses once per nested array or inline table: no config nests a thousand deep.
        raise ConfigError(p, None, "not valid TOML: arrays or tables nested too deeply") from None


def load_schema(path: str | Path) -> DataSchema:
    return validate_config(DataSchema, read_toml(path), path)


def load_run_config(path: str | Path | None) -> RunConfig:
    """Read a run config TOML; ``None`` gives the defaults. A relative schema_file is resolved."""
    if path is None:
        return RunConfig()
    data = read_toml(path)
    cfg = validate_config(RunConfig, data, path)
    if cfg.task.schema_file is not None and not Path(cfg.task.schema_file).is_absolute():
        resolved = (Path(path).parent / cfg.task.schema_file).resolve()
        cfg = cfg.model_copy(
            update={"task": cfg.task.model_copy(update={"schema_file": str(resolved)})}
        )
    return cfg


def load_site_config(path: str | Path) -> SiteConfig:
    data = read_toml(path)
    cfg = validate_config(SiteConfig, data, path)
    return cfg.model_copy(update={"base_dir": str(Path(path).resolve().parent)})


def run_schema(run: RunConfig) -> DataSchema:
    """The schema every site must match: the run's schema file, else the bundled dataset's."""
    if run.task.schema_file:
        return load_schema(run.task.schema_file)
    if run.task.dataset:
        from fedward.common.datasets.bundled import bundled_schema

        return bundled_schema(run.task.dataset)
    raise ConfigError(None, "task", "give task.dataset or task.schema_file")


def json_schemas() -> dict[str, Any]:
    """JSON schemas of every config file fedward reads."""
    return {
        "run": RunConfig.model_json_schema(),
        "site": SiteConfig.model_json_schema(),
        "data_schema": DataSchema.model_json_schema(),
    }
