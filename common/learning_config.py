"""The run config's sections on what is learnt and how: task, model, training, preprocessing,
splits (each field marked for the approval hash, see ``fedward.common.config_hash``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from fedward.common.config_files import STRICT
from fedward.common.config_hash import Hashed, HashedKeyOnly, HashedUnlessDefault


class TaskConfig(BaseModel):
    """What is learnt, and from which data when the data are bundled."""

    model_config = STRICT

    dataset: Hashed[str | None] = Field(
        default="heart-disease",
        description="Bundled dataset ('heart-disease', 'breast-cancer', 'digits', 'synthetic'), "
        "or the name of the sites' own data (it names the data on the model card). When the "
        "sites bring their own files, set schema_file: `fedward simulate` then names the data "
        "after the schema's name.",
    )
    # Hashed as null: the file's location differs between machines, not between runs.
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
    model_config = STRICT

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
    model_config = STRICT

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


class PreprocessingConfig(BaseModel):
    model_config = STRICT

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
    model_config = STRICT

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
