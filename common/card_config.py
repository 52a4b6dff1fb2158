"""The run config's [card] section: what a model card says that no measurement can. None of it
enters the approval hash: editing the card's text asks nothing of the sites."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fedward.common.config_files import STRICT
from fedward.common.config_hash import NotHashed


class EthicsEntry(BaseModel):
    """One concern of the run's ethics register: what it is, where it stands, what was done."""

    model_config = STRICT

    concern: NotHashed[str] = Field(min_length=1, max_length=2000)
    status: NotHashed[Literal["open", "mitigated", "accepted", "not applicable"]] = "open"
    mitigation: NotHashed[str] = Field(default="", max_length=2000)


class CardConfig(BaseModel):
    """What a model card says that no measurement can: intended use, limits, the ethics register."""

    model_config = STRICT

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
