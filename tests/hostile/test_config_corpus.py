"""Malformed run and site configs: each is refused with a ConfigError naming the file and field.

The loaders are the only door a TOML file has into fedward; nothing a file holds may get past
them as another exception type, and nothing may be coerced into a value the operator did not write
(``allow_non_dp = "yes"`` is a typo to name, not a reason to train without DP).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedward.common.errors import ConfigError
from fedward.common.run_config import load_run_config
from fedward.common.site_config import load_site_config


def _nested_arrays(depth: int) -> bytes:
    return b"x = " + b"[" * depth + b"]" * depth + b"\n"


# (TOML bytes, the field the error must name or None for a file-level error, words it must say)
RUN_CASES = [
    pytest.param(b"rounds = true\n", "rounds", "valid integer", id="rounds-is-a-boolean"),
    pytest.param(b'seed = "7"\n', "seed", "valid integer", id="seed-is-a-string"),
    pytest.param(b"rounds = 2.5\n", "rounds", "valid integer", id="rounds-is-fractional"),
    pytest.param(b"rounds = 1000000000000\n", "rounds", "less than or equal", id="absurd-rounds"),
    pytest.param(b"rounds = 0\n", "rounds", "greater than or equal to 1", id="zero-rounds"),
    pytest.param(
        b"[privacy]\ntarget_epsilon = -1.0\n",
        "privacy.target_epsilon",
        "greater than 0",
        id="negative-epsilon",
    ),
    pytest.param(
        b"[privacy]\ntarget_epsilon = nan\n", "privacy.target_epsilon", "", id="epsilon-is-nan"
    ),
    pytest.param(
        b"[privacy]\ntarget_epsilon = inf\n",
        "privacy.target_epsilon",
        "less than or equal to 100",
        id="epsilon-is-infinite",
    ),
    pytest.param(
        b"[privacy]\ntarget_epsilon = 1979-05-27\n",
        "privacy.target_epsilon",
        "valid number",
        id="epsilon-is-a-date",
    ),
    pytest.param(b"[privacy]\ndelta = 1.5\n", "privacy.delta", "less than 1", id="delta-above-one"),
    pytest.param(
        b'[privacy]\ndp = "false"\n', "privacy.dp", "valid boolean", id="dp-flag-is-a-string"
    ),
    pytest.param(b"privacy = 5\n", "privacy", "valid dictionary", id="section-is-a-number"),
    pytest.param(
        b"[[privacy]]\ndp = true\n", "privacy", "valid dictionary", id="section-is-a-table-array"
    ),
    pytest.param(
        b"[privacy.central]\nenabeld = true\n",
        "privacy.central.enabeld",
        "Extra inputs",
        id="unknown-key-three-levels-down",
    ),
    pytest.param(
        b".".join([b"junk"] * 2000) + b" = 1\n", "junk", "Extra inputs", id="dotted-key-2000-deep"
    ),
    pytest.param(
        b'name = "' + b"x" * 1_000_000 + b'"\n', "name", "at most 200", id="megabyte-run-name"
    ),
    pytest.param(
        b"[model]\nhidden = [" + b"1, " * 100_000 + b"]\n",
        "model.hidden",
        "at most 8",
        id="hundred-thousand-hidden-layers",
    ),
    pytest.param(
        b"[model]\nhidden = [0]\n", "model", "between 1 and 4096", id="zero-width-hidden-layer"
    ),
    pytest.param(
        b'[strategy]\nname = "fedsgd"\n', "strategy.name", "fedavg", id="unknown-strategy"
    ),
    pytest.param(_nested_arrays(5000), None, "nested too deeply", id="arrays-nested-5000-deep"),
    pytest.param(
        b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000 + b"\n",
        None,
        "nested too deeply",
        id="inline-tables-nested-3000-deep",
    ),
    pytest.param(b"rounds = 3\nrounds = 4\n", None, "not valid TOML", id="duplicate-key"),
    pytest.param(b"rounds =\n", None, "not valid TOML", id="value-missing"),
    pytest.param(b"\x00\x01\x02\x03binary", None, "not valid TOML", id="binary-junk"),
    pytest.param("rounds = 3\n".encode("utf-16"), None, "not UTF-8", id="utf16-encoded-file"),
    pytest.param(b'name = "caf\xe9"\n', None, "not UTF-8", id="latin1-byte-in-a-string"),
]


@pytest.mark.parametrize(("text", "field", "says"), RUN_CASES)
def test_malformed_run_config_is_a_config_error_naming_file_and_field(
    tmp_path: Path, text: bytes, field: str | None, says: str
) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert err.value.path == str(path) and str(path) in str(err.value)
    assert err.value.field == field
    if field is not None:
        assert f"field '{field}'" in str(err.value)
    assert says in str(err.value)
    assert len(str(err.value)) < 2000  # a megabyte value is named, never echoed back


_SITE_DATA = '[data]\npath = "data.csv"\nschema_file = "schema.toml"\n'


SITE_CASES = [
    pytest.param("", "name", "data: Field required", id="empty-file"),
    pytest.param(
        'name = "../../etc"\n' + _SITE_DATA, "name", "pattern", id="name-is-a-path-traversal"
    ),
    pytest.param(f'name = "{"h" * 1000}"\n' + _SITE_DATA, "name", "at most 64", id="huge-name"),
    pytest.param(
        'name = "st-anne"\ndata = "data.csv"\n', "data", "valid dictionary", id="data-is-a-string"
    ),
    pytest.param(
        'name = "st-anne"\n[data]\nschema_file = "s.toml"\n',
        "data.path",
        "Field required",
        id="data-path-missing",
    ),
    pytest.param(
        'name = "st-anne"\nstate_dir = 5\n' + _SITE_DATA,
        "state_dir",
        "valid string",
        id="state-dir-is-a-number",
    ),
    pytest.param(
        'name = "st-anne"\n' + _SITE_DATA + "[policy]\ntotal_epsilon = -3.0\n",
        "policy.total_epsilon",
        "greater than 0",
        id="negative-lifetime-epsilon",
    ),
    pytest.param(
        'name = "st-anne"\n' + _SITE_DATA + "[policy]\ntotal_epsilon = 1e308\n",
        "policy.total_epsilon",
        "less than or equal to 1000",
        id="astronomical-lifetime-epsilon",
    ),
    pytest.param(
        'name = "st-anne"\n' + _SITE_DATA + '[policy]\nallow_non_dp = "yes"\n',
        "policy.allow_non_dp",
        "valid boolean",
        id="allow-non-dp-is-a-string",
    ),
    pytest.param(
        'name = "st-anne"\n'
        + _SITE_DATA
        + "[policy]\ntotal_epsilon = 2.0\nmax_epsilon_per_run = 5.0\n",
        "policy",
        "cannot exceed total_epsilon",
        id="per-run-epsilon-above-lifetime",
    ),
    pytest.param(
        'name = "st-anne"\n' + _SITE_DATA + "[policy]\nmin_cel_size = 5\n",
        "policy.min_cel_size",
        "Extra inputs",
        id="misspelt-policy-key",
    ),
    pytest.param(
        'name = "st-anne"\n' + _SITE_DATA + "[policy]\nmin_cell_size = 0\n",
        "policy.min_cell_size",
        "greater than or equal to 1",
        id="zero-minimum-cell-size",
    ),
    pytest.param(
        'name = "st-anne"\n[data]\npath = "d.csv"\n[data.schema]\n[data.schema.label]\n'
        'column = "y"\n[[data.schema.features]]\nname = "age"\nkind = "numeric"\n'
        "min = -inf\nmax = 90\n",
        "data.schema.features.0.min",
        "finite number",
        id="inline-schema-with-infinite-bound",
    ),
]


@pytest.mark.parametrize(("text", "field", "says"), SITE_CASES)
def test_malformed_site_config_is_a_config_error_naming_file_and_field(
    tmp_path: Path, text: str, field: str, says: str
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_site_config(path)
    assert err.value.path == str(path) and str(path) in str(err.value)
    assert err.value.field == field and f"field '{field}'" in str(err.value)
    assert says in str(err.value)
    assert len(str(err.value)) < 2000
