"""The ServerApp's reading of `[tool.flwr.app.config]` and `flwr run --run-config` overrides."""

from __future__ import annotations

import pytest
from flwr.app import Context, RecordDict

from fedward.server.coordinator_settings import settings_from_context


@pytest.mark.parametrize(
    ("value", "dp"), [(False, False), ("false", False), (True, True), ("", True)]
)
def test_the_dp_key_reads_a_bool_from_flwr_run_and_a_string_from_toml(
    value: bool | str, dp: bool
) -> None:
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={"dp": value}
    )
    assert settings_from_context(context).run.privacy.dp is dp
