"""The site's training-data profile: what the model card may say about the data, and nothing more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, RecordDict
from hypothesis import given
from hypothesis import strategies as st

from fedward.client.app import app
from fedward.client.egress_guard import EgressGuard, EgressPolicy, EgressViolation
from fedward.client.profile import site_profile, suppress
from fedward.common.protocol import MSG_PROFILE, REPLY
from fedward.common.run_config import RunConfig, run_schema
from tests.conftest import make_context, make_message, wire_config


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(0, 60), max_size=8))
def test_no_hidden_cell_can_be_recovered_by_subtraction(counts: dict[str, int]) -> None:
    out = suppress(counts, 10)
    hidden = [k for k, v in out.items() if v is None]
    for v in out.values():
        assert v is None or v == 0 or v >= 10
    if hidden:
        # Knowing the total and every shown cell gives only the hidden cells' sum: never small.
        assert sum(counts[k] for k in hidden) >= 10 or all(
            out[k] is None or out[k] == 0 for k in counts
        )


def test_missing_values_are_suppressed_with_the_categories_they_add_up_with() -> None:
    """161 rows, 149 + 10 in two categories and 2 missing: no subtraction may recover the 2."""
    schema = run_schema(RunConfig())
    n = 161
    frame = pd.DataFrame(
        {
            "age": np.full(n, 50.0),
            "fbs": ["false"] * 149 + ["true"] * 10 + [None] * 2,
        }
    )
    out = site_profile(frame, np.array([0, 1] * 80 + [0]), {"train": n}, schema, 10)
    fbs = out["features"]["fbs"]
    assert fbs["missing_fraction"] is None
    assert None in fbs["categories"].values()  # a second cell hidden with the missing one
    record = RecordDict(
        {"fedward": ConfigRecord({"site": "a", "training_profile": json.dumps(out)})}
    )
    EgressGuard(EgressPolicy(min_cell_size=10)).check(record, site="a")


def test_profile_of_a_table_suppresses_small_cells_and_sends_no_extremes() -> None:
    run = RunConfig()
    schema = run_schema(run)
    rng = np.random.default_rng(0)
    n = 40
    frame = pd.DataFrame(
        {
            "age": rng.integers(30, 80, n).astype(float),
            "sex": ["male"] * 35 + ["female"] * 5,
            "chol": [np.nan] * 3 + list(rng.integers(150, 300, n - 3).astype(float)),
        }
    )
    labels = np.array([1] * 20 + [0] * 20)
    out = site_profile(frame, labels, {"train": 40, "tune": 12, "test": 12, "audit": 4}, schema, 10)
    assert out["n_rows"] == 68 and out["prevalence"] == 0.5
    # 4 audit rows are hidden, and one more split with them, or 68 − 40 − 12 − 12 would tell.
    assert out["splits"]["audit"] is None and out["splits"]["train"] == 40
    assert [out["splits"]["tune"], out["splits"]["test"]].count(None) == 1
    assert out["features"]["sex"]["categories"] == {"male": None, "female": None}
    assert out["features"]["chol"]["missing_fraction"] is None  # 3 missing rows
    assert out["features"]["age"]["mean"] == pytest.approx(frame["age"].mean())
    assert "min" not in out["features"]["age"] and "max" not in out["features"]["age"]


def test_the_profile_reply_passes_the_guard_and_a_small_count_would_not(tmp_path: Path) -> None:
    run = RunConfig(rounds=1)
    content = RecordDict({"config": wire_config(run, state_dir=str(tmp_path))})
    reply = app(
        make_message(content, MSG_PROFILE), make_context({"partition-id": 2, "num-partitions": 4})
    )
    info: dict[str, Any] = dict(reply.content[REPLY])
    assert info["status"] == "ok", info
    guard = EgressGuard(EgressPolicy(min_cell_size=10))
    guard.check(reply.content, site="switzerland")
    profile = json.loads(info["training_profile"])
    assert profile["n_rows"] >= 100
    profile["features"]["sex"]["categories"]["female"] = 3
    record = reply.content[REPLY]
    assert isinstance(record, ConfigRecord)
    record["training_profile"] = json.dumps(profile)
    with pytest.raises(EgressViolation, match="training_profile"):
        guard.check(reply.content, site="switzerland")
