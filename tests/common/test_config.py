"""Run and site configs: safe defaults, and errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedward.common.config import json_schemas
from fedward.common.errors import ConfigError
from fedward.common.run_config import RunConfig, load_run_config, run_schema
from fedward.common.site_config import load_site_config


def _run_hash(tables: dict[str, Any]) -> str:
    """The hash a site approves for the run config with these tables (as read from TOML)."""
    return RunConfig.model_validate(tables).config_hash()


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_are_safe_dp_on_epsilon_one() -> None:
    cfg = RunConfig()
    assert cfg.privacy.dp is True
    assert cfg.privacy.target_epsilon == 1.0
    assert cfg.task.dataset == "heart-disease"
    assert cfg.preprocessing.source == "schema"


def test_run_config_reads_toml_and_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, "run.toml", "rounds = 3\nseed = 7\n[privacy]\ntarget_epsilon = 2.5\n")
    cfg = load_run_config(p)
    assert (cfg.rounds, cfg.seed, cfg.privacy.target_epsilon) == (3, 7, 2.5)


def test_wrong_type_names_file_and_field_path(tmp_path: Path) -> None:
    p = write(tmp_path, "run.toml", '[privacy]\ntarget_epsilon = "lots"\n')
    with pytest.raises(ConfigError) as err:
        load_run_config(p)
    assert err.value.path == str(p)
    assert err.value.field == "privacy.target_epsilon"
    assert "run.toml" in str(err.value) and "privacy.target_epsilon" in str(err.value)


def test_unknown_key_is_rejected_not_ignored(tmp_path: Path) -> None:
    p = write(tmp_path, "run.toml", "[training]\nlearnig_rate = 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(p)
    assert err.value.field == "training.learnig_rate"


def test_update_validation_is_read_from_the_strategy_table(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "run.toml",
        '[strategy]\nname = "krum"\nmalicious_sites = 1\n'
        "[strategy.validation]\nmax_norm = 50.0\nmax_norm_ratio = 4.0\n",
    )
    run = load_run_config(p)
    assert run.strategy.name == "krum" and run.strategy.malicious_sites == 1
    assert run.strategy.validation.max_norm == 50.0 and run.strategy.validation.enabled
    assert RunConfig().strategy.validation.max_norm == 100.0  # the default bound


def test_unknown_update_validation_key_is_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, "run.toml", "[strategy.validation]\nmax_nrom = 5.0\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(p)
    assert err.value.field == "strategy.validation.max_nrom"


def test_changing_update_validation_changes_the_hash_a_site_approves() -> None:
    base = RunConfig().config_hash()
    assert _run_hash({"strategy": {"validation": {"enabled": False}}}) != base
    assert _run_hash({"strategy": {"validation": {"max_norm": 5.0}}}) != base
    assert _run_hash({"strategy": {"malicious_sites": 1}}) != base
    assert _run_hash({"strategy": {"validation": {"max_norm": 100.0}}}) == base


def test_huge_value_is_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, "run.toml", "rounds = 100000000\n")
    with pytest.raises(ConfigError, match="rounds"):
        load_run_config(p)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as err:
        load_run_config(tmp_path / "nope.toml")
    assert "nope.toml" in str(err.value)


def test_invalid_toml_is_named(tmp_path: Path) -> None:
    p = write(tmp_path, "run.toml", "rounds = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_run_config(p)


def test_splits_must_leave_room_for_training(tmp_path: Path) -> None:
    p = write(tmp_path, "run.toml", "[splits]\ntune = 0.4\ntest = 0.4\n")
    with pytest.raises(ConfigError, match="training"):
        load_run_config(p)


def test_config_hash_changes_with_content() -> None:
    a = RunConfig()
    b = RunConfig(rounds=a.rounds + 1)
    assert a.config_hash() != b.config_hash()
    assert a.config_hash() == RunConfig.from_json(a.to_json()).config_hash()


def test_site_config_resolves_paths_against_its_file(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    p = write(
        tmp_path / "site",
        "site.toml",
        'name = "st-mary"\n[data]\npath = "data.csv"\nschema_file = "../schema.toml"\n',
    )
    cfg = load_site_config(p)
    assert cfg.data_path == (tmp_path / "site" / "data.csv").resolve()
    assert cfg.policy.min_cell_size == 10 and cfg.policy.allow_non_dp is False


def test_site_config_needs_exactly_one_schema(tmp_path: Path) -> None:
    p = write(tmp_path, "site.toml", 'name = "a"\n[data]\npath = "d.csv"\n')
    with pytest.raises(ConfigError, match="schema"):
        load_site_config(p)


def test_bundled_schema_is_the_default_run_schema() -> None:
    schema = run_schema(RunConfig())
    assert schema.label.column == "num"


def test_json_schemas_cover_every_config_file() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"run", "site", "data_schema"}
    assert "privacy" in json.dumps(schemas["run"])
