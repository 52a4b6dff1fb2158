"""The site config: a site's name, its data, its state folder and its policy. The run config is what
a coordinator *asks for*; the site config is what a site *allows*."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedward.common.config_files import STRICT, load_schema, read_toml, validate_config
from fedward.common.schema import DataSchema


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

    model_config = STRICT

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

    model_config = STRICT

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


def load_site_config(path: str | Path) -> SiteConfig:
    data = read_toml(path)
    cfg = validate_config(SiteConfig, data, path)
    return cfg.model_copy(update={"base_dir": str(Path(path).resolve().parent)})
