"""Run and site configuration: pydantic models read from TOML, with errors that name file and field.

The run config is what a coordinator *asks for*; the site config is what a site *allows*. Defaults are
the safe ones: DP on, nothing non-DP leaves a site except aggregates protected by minimum cell sizes.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedward.common.errors import ConfigError
from fedward.common.schema import DataSchema

_Strict = ConfigDict(extra="forbid", validate_default=True)


class TaskConfig(BaseModel):
    """What is learnt, and from which data when the data are bundled."""

    model_config = _Strict

    dataset: str | None = Field(
        default="heart-disease",
        description="Bundled dataset ('heart-disease', 'breast-cancer', 'digits'); "
        "null when every site brings its own data through its site config.",
    )
    schema_file: str | None = Field(
        default=None,
        description="Schema TOML every site must match (relative to this file); "
        "defaults to the bundled dataset's schema.",
    )
    n_sites: int | None = Field(
        default=None, ge=1, le=1000, description="Sites for datasets split artificially."
    )
    partition: Literal["natural", "iid", "dirichlet"] = "natural"
    dirichlet_alpha: float = Field(default=0.5, gt=0, le=1000)


class ModelConfig(BaseModel):
    model_config = _Strict

    kind: Literal["logistic", "mlp", "cnn"] = "logistic"
    hidden: list[int] = Field(default_factory=lambda: [32], max_length=8)
    activation: Literal["relu", "tanh", "square"] = "relu"

    @model_validator(mode="after")
    def _sizes(self) -> ModelConfig:
        if any(h < 1 or h > 4096 for h in self.hidden):
            raise ValueError("hidden layer sizes must be between 1 and 4096")
        return self


class TrainingConfig(BaseModel):
    model_config = _Strict

    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(
        default=64, ge=1, le=65536, description="Expected batch size (Poisson sampling under DP)."
    )
    learning_rate: float = Field(default=0.5, gt=0, le=100)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0, le=1)


class StrategyConfig(BaseModel):
    """Flower's own strategies; fedward only wraps them."""

    model_config = _Strict

    name: Literal["fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg"] = "fedavg"
    fraction_train: float = Field(default=1.0, gt=0, le=1)
    min_sites: int = Field(default=2, ge=1, le=100000)
    proximal_mu: float = Field(default=0.01, ge=0, le=100)
    server_learning_rate: float = Field(default=0.1, gt=0, le=100)
    trim_beta: float = Field(default=0.2, gt=0, lt=0.5)


class PrivacyConfig(BaseModel):
    """The run's DP target; a site may only be asked for less (more privacy), never more."""

    model_config = _Strict

    dp: bool = Field(default=True, description="Off only for simulation and comparison runs.")
    target_epsilon: float = Field(default=1.0, gt=0, le=100)
    delta: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Null: each site uses a delta below 1/(10 * its training rows).",
    )
    max_grad_norm: float = Field(default=1.0, gt=0, le=1000)
    accountant: Literal["rdp", "prv"] = "rdp"


class PreprocessingConfig(BaseModel):
    model_config = _Strict

    source: Literal["schema", "dp-aggregates"] = Field(
        default="schema",
        description="'schema': declared ranges and imputation values, no privacy cost. "
        "'dp-aggregates': means/SDs/modes from the training splits, released under DP.",
    )
    epsilon_share: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Share of the run's epsilon spent on the preprocessing aggregates.",
    )


class SplitConfig(BaseModel):
    model_config = _Strict

    tune: float = Field(default=0.15, gt=0, lt=0.5)
    test: float = Field(default=0.2, gt=0, lt=0.5)
    audit: float = Field(default=0.0, ge=0, lt=0.5, description="0 when no audit runs.")
    min_per_class: int = Field(default=2, ge=1, le=1000)
    min_rows: int = Field(default=20, ge=4, le=10**7)

    @model_validator(mode="after")
    def _room_for_training(self) -> SplitConfig:
        if self.tune + self.test + self.audit >= 0.8:
            raise ValueError("tune + test + audit must leave at least 20% for training")
        return self


class EvaluationConfig(BaseModel):
    model_config = _Strict

    bootstrap: int = Field(default=200, ge=0, le=100000)
    histogram_bins: int = Field(default=20, ge=2, le=1000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class RunConfig(BaseModel):
    """One federated run, as the coordinator asks for it."""

    model_config = _Strict

    name: str = "fedward-run"
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    rounds: int = Field(default=20, ge=1, le=10000)
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    splits: SplitConfig = Field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    def config_hash(self) -> str:
        """Hash of the canonical JSON form; a site approves a run by this value.

        The schema file's location differs between machines, so it is left out; every site checks
        the schema's content against its own instead.
        """
        data = self.model_dump(mode="json")
        data["task"]["schema_file"] = None
        return canonical_hash(data)

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


def canonical_hash(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def validate_config(model: type[M], data: Any, source: str | Path) -> M:
    """Validate ``data``; on failure raise one ConfigError listing every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        field = _field_path(tuple(first["loc"]))
        lines = [f"{_field_path(tuple(e['loc']))}: {e['msg']}" for e in errors]
        reason = first["msg"] if len(lines) == 1 else "; ".join(lines)
        raise ConfigError(source, field, reason) from exc


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
