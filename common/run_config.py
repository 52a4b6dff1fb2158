"""The run config: one federated run as the coordinator asks for it, read from TOML or from the
coordinator's JSON, with the approval hash a site approves it by.

Defaults are the safe ones: DP on, nothing non-DP leaves a site except aggregates protected by
minimum cell sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from fedward.common.card_config import CardConfig
from fedward.common.config_files import STRICT, load_schema, read_toml, validate_config
from fedward.common.config_hash import Hashed, NotHashed, canonical_hash, hashed_form
from fedward.common.errors import ConfigError
from fedward.common.evaluation_config import (
    AuditConfig,
    BaselinesConfig,
    ControlsConfig,
    EvaluationConfig,
    TuningConfig,
)
from fedward.common.learning_config import (
    ModelConfig,
    PreprocessingConfig,
    SplitConfig,
    TaskConfig,
    TrainingConfig,
)
from fedward.common.privacy_config import PrivacyConfig
from fedward.common.schema import DataSchema
from fedward.common.strategy_config import StrategyConfig

# Central DP's noise is calibrated to a mean of clipped updates: FedProx aggregates as FedAvg does.
_MEAN_STRATEGIES = ("fedavg", "fedprox")
# Under SecAgg+ a strategy sees only the (weighted) mean; FedAdam's server step needs nothing more.
_SECAGG_STRATEGIES = ("fedavg", "fedprox", "fedadam")


class RunConfig(BaseModel):
    """One federated run, as the coordinator asks for it."""

    model_config = STRICT

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
    # The model card's text asks nothing of the sites: editing it needs no new approval.
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

        Each field's marker decides its part (``fedward.common.config_hash``): the schema file's
        location is hashed as null (it differs between machines; every site checks the schema's
        content against its own instead); fields added after configs were first approved are left
        out while at their defaults, so those approvals keep their hash; the card is left out. The
        baselines, tuning and controls sections are always in it: they ask the sites for more work
        and more federations, which an older approval never covered.
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


def run_schema(run: RunConfig) -> DataSchema:
    """The schema every site must match: the run's schema file, else the bundled dataset's."""
    if run.task.schema_file:
        return load_schema(run.task.schema_file)
    if run.task.dataset:
        from fedward.common.datasets.bundled import bundled_schema

        return bundled_schema(run.task.dataset)
    raise ConfigError(None, "task", "give task.dataset or task.schema_file")
