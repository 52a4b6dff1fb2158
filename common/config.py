"""Every config file fedward reads, by its JSON schema; the models live in their own modules.

The run config (``fedward.common.run_config``, its sections in ``learning_config``,
``strategy_config``, ``privacy_config``, ``evaluation_config`` and ``card_config``) is what a
coordinator *asks for*; the site config (``fedward.common.site_config``) is what a site *allows*;
``config_files`` reads and validates them, ``config_hash`` derives the approval hash.
"""

from __future__ import annotations

from typing import Any

from fedward.common.card_config import CardConfig  # noqa: F401  (moved; importers to be updated)
from fedward.common.config_files import (
    load_schema,  # noqa: F401  (moved; importers to be updated)
    read_toml,  # noqa: F401  (moved; importers to be updated)
    validate_config,  # noqa: F401  (moved; importers to be updated)
)
from fedward.common.config_hash import canonical_hash  # noqa: F401  (moved; importers to be updated)
from fedward.common.evaluation_config import (
    BASELINE_FAMILIES,  # noqa: F401  (moved; importers to be updated)
    AuditConfig,  # noqa: F401  (moved; importers to be updated)
)
from fedward.common.learning_config import (
    ModelConfig,  # noqa: F401  (moved; importers to be updated)
    SplitConfig,  # noqa: F401  (moved; importers to be updated)
    TaskConfig,  # noqa: F401  (moved; importers to be updated)
    TrainingConfig,  # noqa: F401  (moved; importers to be updated)
)
from fedward.common.privacy_config import (
    CentralDPConfig,  # noqa: F401  (moved; importers to be updated)
    PrivacyConfig,  # noqa: F401  (moved; importers to be updated)
)
from fedward.common.run_config import (
    RunConfig,
    load_run_config,  # noqa: F401  (moved; importers to be updated)
    run_schema,  # noqa: F401  (moved; importers to be updated)
)
from fedward.common.schema import DataSchema
from fedward.common.site_config import (
    DataSourceConfig,  # noqa: F401  (moved; importers to be updated)
    PolicyConfig,  # noqa: F401  (moved; importers to be updated)
    SiteConfig,
    load_site_config,  # noqa: F401  (moved; importers to be updated)
)
from fedward.common.strategy_config import (
    StrategyConfig,  # noqa: F401  (moved; importers to be updated)
    UpdateValidationConfig,  # noqa: F401  (moved; importers to be updated)
)


def json_schemas() -> dict[str, Any]:
    """JSON schemas of every config file fedward reads."""
    return {
        "run": RunConfig.model_json_schema(),
        "site": SiteConfig.model_json_schema(),
        "data_schema": DataSchema.model_json_schema(),
    }
