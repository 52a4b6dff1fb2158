"""The optional privacy modes in the run config: off by default, checked against the strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedward.common.config_hash import canonical_hash
from fedward.common.errors import ConfigError
from fedward.common.run_config import RunConfig, load_run_config


def _run_hash(tables: dict[str, Any]) -> str:
    """The hash a site approves for the run config with these tables (as read from TOML)."""
    return RunConfig.model_validate(tables).config_hash()


def _load(tmp_path: Path, text: str) -> RunConfig:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return load_run_config(p)


def test_both_modes_are_off_by_default() -> None:
    run = RunConfig()
    assert run.privacy.central.enabled is False
    assert run.strategy.secure_aggregation is False


def test_configs_approved_before_the_modes_existed_keep_their_hash() -> None:
    run = RunConfig()
    data: dict[str, Any] = run.model_dump(mode="json")
    data["task"]["schema_file"] = None
    del data["privacy"]["central"], data["strategy"]["secure_aggregation"]
    del data["strategy"]["secagg"]
    # Nor did the label-shuffle flag; the baselines, tuning and controls sections ask the sites for
    # more work and more federations, so they are always hashed: an older approval never covers them.
    del data["training"]["shuffle_labels"]
    # Nor did the request for a model the encrypted-inference service can evaluate.
    del data["model"]["he_compatible"]
    # The model card's text asks nothing of the sites: it is never hashed.
    del data["card"]
    # Nor did the coordinator's update validation and the Krum settings (hashed once changed).
    for key in ("validation", "malicious_sites", "multikrum_select"):
        del data["strategy"][key]
    # Nor did the tuning search's share of the target ε (hashed once changed).
    del data["tuning"]["epsilon_share"]
    # Nor did the fixed weight of a positive row (hashed once changed).
    del data["training"]["positive_weight"]
    assert run.config_hash() == canonical_hash(data)


def test_asking_for_baselines_tuning_or_controls_changes_the_hash() -> None:
    base = RunConfig().config_hash()
    assert _run_hash({"baselines": {"enabled": False}}) != base
    assert _run_hash({"tuning": {"deep": True}}) != base
    deep = _run_hash({"tuning": {"deep": True}})
    assert _run_hash({"tuning": {"deep": True, "epsilon_share": 0.25}}) != deep
    assert _run_hash({"controls": {"label_shuffle": True}}) != base
    assert _run_hash({"training": {"shuffle_labels": True}}) != base


def test_switching_a_mode_on_changes_the_hash_a_site_approves() -> None:
    base = RunConfig().config_hash()
    assert _run_hash({"privacy": {"central": {"enabled": True}}}) != base
    assert _run_hash({"strategy": {"secure_aggregation": True}}) != base


def test_central_dp_reads_from_the_run_config(tmp_path: Path) -> None:
    run = _load(
        tmp_path,
        "[privacy.central]\nenabled = true\nnoise_multiplier = 1.1\nclipping_norm = 0.5\n"
        "num_sites = 40\ndelta = 1e-4\n",
    )
    central = run.privacy.central
    assert (central.noise_multiplier, central.clipping_norm, central.num_sites) == (1.1, 0.5, 40)


def test_central_dp_needs_a_mean_based_strategy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"privacy\.central\.enabled needs strategy\.name"):
        _load(tmp_path, '[strategy]\nname = "fedmedian"\n[privacy.central]\nenabled = true\n')


def test_central_dp_noise_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="noise_multiplier"):
        _load(tmp_path, "[privacy.central]\nenabled = true\nnoise_multiplier = 0\n")


def test_central_dp_and_secure_aggregation_are_not_combined(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be combined"):
        _load(
            tmp_path, "[strategy]\nsecure_aggregation = true\n[privacy.central]\nenabled = true\n"
        )


def test_secure_aggregation_refuses_robust_aggregation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sees only their sum"):
        _load(tmp_path, '[strategy]\nname = "fedtrimmedavg"\nsecure_aggregation = true\n')


def test_secure_aggregation_needs_the_schema_transform(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"preprocessing\.source"):
        _load(
            tmp_path,
            '[strategy]\nsecure_aggregation = true\n[preprocessing]\nsource = "dp-aggregates"\n',
        )


def test_secagg_threshold_must_be_below_the_shares(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reconstruction_threshold must be smaller"):
        _load(
            tmp_path,
            "[strategy]\nsecure_aggregation = true\n"
            "[strategy.secagg]\nnum_shares = 3\nreconstruction_threshold = 3\n",
        )


def test_secagg_needs_at_least_threshold_sites(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="min_sites"):
        _load(
            tmp_path,
            "[strategy]\nsecure_aggregation = true\nmin_sites = 2\n"
            "[strategy.secagg]\nnum_shares = 5\nreconstruction_threshold = 3\n",
        )
