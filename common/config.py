"""Every config file fedward reads, by its JSON schema; the models live in their own modules.

The run config (``fedward.common.run_config``, its sections in ``learning_config``,
``strategy_config``, ``privacy_config``, ``evaluation_config`` and ``card_config``) is what a
coordinator *asks for*; the site config (``fedward.common.site_config``) is what a site *allows*;
``config_files`` reads and validates them, ``config_hash`` derives the approval hash.
"""

from __future__ import annotations

from typing import Any

from fedward.common.run_config import (
    RunConfig,
)
from fedward.common.schema import DataSchema
from fedward.common.site_config import (
    SiteConfig,
)


def json_schemas() -> dict[str, Any]:
    """JSON schemas of every config file fedward reads."""
    return {
        "run": RunConfig.model_json_schema(),
        "site": SiteConfig.model_json_schema(),
        "data_schema": DataSchema.model_json_schema(),
    }
