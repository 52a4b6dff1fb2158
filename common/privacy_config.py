"""The run config's privacy section: the sites' DP-SGD target and the optional site-level DP at the
coordinator (each field marked for the approval hash, see ``fedward.common.config_hash``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fedward.common.config_files import STRICT
from fedward.common.config_hash import Hashed, HashedUnlessDefault


class CentralDPConfig(BaseModel):
    """Site-level DP at the coordinator with Flower's server-side wrappers (McMahan et al. 2018).

    The coordinator clips each site's model update and adds Gaussian noise to the mean, so the
    protected "user" is a whole site: meaningful only with many sites (tens to hundreds). It adds
    to each site's own sample-level DP-SGD; it replaces nothing.
    """

    model_config = STRICT

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

    model_config = STRICT

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
