"""The run config's aggregation section: Flower's strategy, the update checks, SecAgg+ (each field
marked for the approval hash, see ``fedward.common.config_hash``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from fedward.common.config_files import STRICT
from fedward.common.config_hash import Hashed, HashedUnlessDefault, HashRule

# SecAgg+ was added after configs were first approved: its switch and settings are hashed together,
# and left out while both are at their defaults.
_SECURE_AGGREGATION_HASH = HashRule("unless-default", group="secure aggregation")


class SecAggConfig(BaseModel):
    """Flower's SecAgg+ protocol (Bell et al. 2020), used when ``strategy.secure_aggregation``."""

    model_config = STRICT

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

    model_config = STRICT

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

    model_config = STRICT

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
