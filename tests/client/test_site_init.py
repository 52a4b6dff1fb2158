"""`fedward site init`: a new site's config from flags or prompts, that loads and passes
`fedward config check --kind site`, a schema skeleton the site's own file satisfies, and the exact
flower-supernode command line (the site config has no place for connection settings)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import typer
from flwr.common.config import parse_config_args
from typer.testing import CliRunner, Result

from fedward.client.cli import register
from fedward.client.site_check import run_checks
from fedward.client.site_init import REVIEW_NOTE
from fedward.common.cli import app as fedward_root
from fedward.common.datasets.bundled import write_site_files
from fedward.common.datasource import load_table
from fedward.common.site_config import SiteConfig, load_site_config


def fedward_site(*args: str | Path, input: str | None = None) -> Result:
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["site", *map(str, args)], input=input)


@pytest.fixture
def data_csv(tmp_path: Path) -> Path:
    """Cleveland's table (UCI Heart Disease) with its id column, as a hospital would export it."""
    config = write_site_files("heart-disease", tmp_path / "bundled", seed=0)[0]
    site = tmp_path / "site"
    site.mkdir()
    target = site / "cardiology.csv"
    target.write_text((config.parent / "data.csv").read_text())
    return target


def _init(config: Path, *args: str | Path, input: str | None = None) -> Result:
    return fedward_site("init", config, *args, input=input)


def _config_check(path: Path) -> Result:
    return CliRunner().invoke(fedward_root, ["config", "check", str(path), "--kind", "site"])


BUNDLED_SCHEMA_ARGS = ("--infer-schema", "--label", "num", "--positive-above", "0")


def test_flags_write_a_site_config_that_loads_and_passes_config_check(data_csv: Path) -> None:
    config = data_csv.parent / "site.toml"

    done = _init(
        config, "--name", "st-mary", "--data", data_csv, *BUNDLED_SCHEMA_ARGS, "--no-input"
    )

    assert done.exit_code == 0, done.output
    site = load_site_config(config)
    assert site.name == "st-mary" and site.data_path == data_csv
    assert site.state_path == data_csv.parent / "state"
    assert site.data.dataset_id == "st-mary"
    checked = _config_check(config)
    assert checked.exit_code == 0, checked.output
    assert "valid site config for site 'st-mary'" in checked.output


def test_the_policy_defaults_are_the_safe_ones(data_csv: Path) -> None:
    config = data_csv.parent / "site.toml"
    _init(config, "--name", "st-mary", "--data", data_csv, *BUNDLED_SCHEMA_ARGS, "--no-input")

    policy = load_site_config(config).policy

    assert policy.total_epsilon == 10 and policy.total_delta is None
    assert policy.max_epsilon_per_run is None and policy.min_cell_size == 10
    assert policy.allow_non_dp is False and policy.auto_approve is False


def test_auto_approve_is_a_flag_said_loudly_for_simulations_only(data_csv: Path) -> None:
    config = data_csv.parent / "site.toml"
    args = ("--name", "st-mary", "--data", data_csv, *BUNDLED_SCHEMA_ARGS, "--no-input")
    done = _init(config, *args, "--auto-approve")

    assert done.exit_code == 0, done.output
    assert load_site_config(config).policy.auto_approve is True
    assert "ANY RUN AUTO-APPROVED" in done.output
    assert "SIMULATION OR DEMONSTRATION ONLY" in config.read_text()


def test_policy_flags_are_written(data_csv: Path) -> None:
    config = data_csv.parent / "site.toml"
    flags = ["--total-epsilon", "6", "--total-delta", "1e-5", "--max-epsilon-per-run", "2"]
    flags += ["--min-cell-size", "20", "--allow-non-dp", "--dataset-id", "st-mary-cardio"]
    done = _init(config, "--name", "st-mary", "--data", data_csv, *BUNDLED_SCHEMA_ARGS, *flags)

    assert done.exit_code == 0, done.output
    site = load_site_config(config)
    p = site.policy
    assert (p.total_epsilon, p.total_delta, p.max_epsilon_per_run) == (6, 1e-5, 2)
    assert (p.min_cell_size, p.allow_non_dp, site.data.dataset_id) == (20, True, "st-mary-cardio")


def test_an_existing_config_is_not_overwritten_without_force(data_csv: Path) -> None:
    config = data_csv.parent / "site.toml"
    config.write_text("# the site's own config\n")

    refused = _init(config, "--name", "st-mary", "--data", data_csv, *BUNDLED_SCHEMA_ARGS)

    assert refused.exit_code != 0 and "pass --force" in str(refused.exception)
    assert config.read_text() == "# the site's own config\n"
    assert not (data_csv.parent / "schema.toml").exists()
    forced = _init(config, "--name", "st-mary", "--data", data_csv, *BUNDLED_SCHEMA_ARGS, "--force")
    assert forced.exit_code == 0, forced.output
    assert load_site_config(config).name == "st-mary"


def test_an_existing_schema_is_not_overwritten_without_force(data_csv: Path) -> None:
    schema = data_csv.parent / "schema.toml"
    schema.write_text("# the federation's schema\n")

    refused = _init(
        data_csv.parent / "site.toml", "--name", "a", "--data", data_csv, *BUNDLED_SCHEMA_ARGS
    )

    assert refused.exit_code != 0 and "schema.toml exists" in str(refused.exception)
    assert schema.read_text() == "# the federation's schema\n"
    assert not (data_csv.parent / "site.toml").exists()


def test_an_existing_schema_file_is_used_as_it_is(data_csv: Path, tmp_path: Path) -> None:
    shared = tmp_path / "bundled" / "schema.toml"  # the federation's schema, agreed beforehand
    config = data_csv.parent / "site.toml"

    done = _init(config, "--name", "st-mary", "--data", data_csv, "--schema", shared)

    assert done.exit_code == 0, done.output
    site = load_site_config(config)
    assert site.resolve(site.data.schema_file or "").resolve() == shared.resolve()
    assert site.load_schema().name == "heart-disease"


def test_a_missing_schema_without_infer_is_an_error_saying_what_to_do(data_csv: Path) -> None:
    done = _init(data_csv.parent / "site.toml", "--name", "st-mary", "--data", data_csv)

    assert done.exit_code != 0
    assert "schema.toml not found" in str(done.exception) and "--infer-schema" in str(
        done.exception
    )


def test_the_inferred_schema_accepts_the_sites_own_file_and_marks_every_feature_for_review(
    data_csv: Path,
) -> None:
    config = data_csv.parent / "site.toml"
    _init(config, "--name", "st-mary", "--data", data_csv, *BUNDLED_SCHEMA_ARGS)

    site = load_site_config(config)
    schema = site.load_schema()
    table = load_table(site.data_path, schema, site=site.name)
    assert table.n_rows == 304 and 0 < table.labels.sum() < 304
    assert schema.label.column == "num" and schema.label.positive_above == 0
    assert "id" not in {f.name for f in schema.features}  # all distinct integers: an identifier
    assert all((f.note or "").startswith(REVIEW_NOTE) for f in schema.features)
    age = schema.feature("age")
    # 0.5–99.5 % quantiles of 29..77, widened by 5 % and rounded outward to a step of 5
    assert (age.kind, age.min, age.max) == ("numeric", 25, 80)
    thal = schema.feature("thal")  # has empty cells: imputed to a declared "unknown"
    assert thal.impute == "unknown" and "unknown" in (thal.categories or [])
    status = {r.name: r.status for r in run_checks(config)}
    # The file loads; the few values beyond the robust range are clipped, and said so.
    assert status["schema"] == "warning" and status["data file"] in ("ok", "warning")


def test_inferring_a_non_binary_label_without_a_rule_is_an_error_naming_the_column(
    data_csv: Path,
) -> None:
    done = _init(
        data_csv.parent / "site.toml",
        "--name",
        "a",
        "--data",
        data_csv,
        "--infer-schema",
        "--label",
        "num",
    )

    assert done.exit_code != 0
    message = str(done.exception)
    assert "column 'num'" in message and "--positive" in message and str(data_csv) in message


def test_inferring_with_an_unknown_label_column_lists_the_files_columns(data_csv: Path) -> None:
    done = _init(
        data_csv.parent / "site.toml",
        "--name",
        "a",
        "--data",
        data_csv,
        "--infer-schema",
        "--label",
        "outcome",
        "--positive",
        "1",
    )

    assert done.exit_code != 0
    assert "'outcome' is not in the file" in str(done.exception) and "chol" in str(done.exception)


def test_without_a_terminal_a_missing_name_is_an_error_naming_the_flag(data_csv: Path) -> None:
    done = _init(data_csv.parent / "site.toml", "--data", data_csv, "--no-input")

    assert done.exit_code != 0 and "--name is missing" in str(done.exception)


def test_an_invalid_name_is_refused_with_the_rule(data_csv: Path) -> None:
    done = _init(
        data_csv.parent / "site.toml",
        "--name",
        "-st mary",
        "--data",
        data_csv,
        *BUNDLED_SCHEMA_ARGS,
    )

    assert done.exit_code == 2 and "starts with a letter or digit" in done.output
    assert not (data_csv.parent / "site.toml").exists()


def test_interactive_init_prompts_for_what_is_missing_and_asks_again_after_a_bad_answer(
    data_csv: Path,
) -> None:
    config = data_csv.parent / "site.toml"
    answers = [
        "-bad name",  # refused: asked again
        "st-mary",
        str(data_csv),
        "",  # dataset id: the name
        "",  # schema file: schema.toml next to the config
        "",  # write a skeleton: yes
        "num",
        ">0",  # the label rule
        "",  # state folder: state/ next to the config
        "8",  # total ε
        "",  # δ: the default
        "20",  # per-run ε above the total: asked again
        "3",
        "",  # non-DP: no
        "15",
    ]

    done = _init(config, "--interactive", input="\n".join(answers) + "\n")

    assert done.exit_code == 0, done.output
    assert done.output.count("Site name") == 2 and "above the lifetime ε" in done.output
    site = load_site_config(config)
    p = site.policy
    assert site.name == "st-mary" and site.state_path == data_csv.parent / "state"
    assert (p.total_epsilon, p.total_delta, p.max_epsilon_per_run) == (8, None, 3)
    assert (p.allow_non_dp, p.min_cell_size) == (False, 15)
    assert site.load_schema().label.positive_above == 0
    assert _config_check(config).exit_code == 0


def _supernode_command(output: str) -> list[str]:
    text = output[output.index("fedward-supernode") :].split("\n\n")[0]
    return shlex.split(text.replace("\\\n", " "))


def test_init_prints_the_supernode_command_flower_parses_to_this_site_config(
    data_csv: Path, tmp_path: Path
) -> None:
    config = data_csv.parent / "site.toml"
    ca, key = tmp_path / "ca.pem", tmp_path / "node.key"

    done = _init(
        config, "--name", "st-mary", "--data", data_csv, *BUNDLED_SCHEMA_ARGS,
        "--superlink", "coordinator.example.org:8000", "--root-certificates", ca,
        "--auth-supernode-private-key", key,
    )  # fmt: skip

    assert done.exit_code == 0, done.output
    launcher = _supernode_command(done.output)
    assert launcher[:3] == ["fedward-supernode", "--flower-shortcuts", "--"]
    argv = ["flower-supernode", *launcher[3:]]  # what the launcher hands Flower's SuperNode
    flags = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert flags["--superlink"] == "coordinator.example.org:8000"
    assert flags["--root-certificates"] == str(ca)
    assert flags["--auth-supernode-private-key"] == str(key)
    assert parse_config_args([flags["--node-config"]]) == {"site-config": str(config)}
    assert "--insecure" not in argv


def test_the_site_config_has_no_place_for_connection_settings() -> None:
    # Why init prints a command line instead of writing a [connection] table: unknown keys are errors.
    assert "connection" not in SiteConfig.model_fields
    assert SiteConfig.model_config.get("extra") == "forbid"


def test_a_malformed_superlink_address_is_refused_before_anything_is_written(
    data_csv: Path,
) -> None:
    config = data_csv.parent / "site.toml"

    done = _init(
        config,
        "--name",
        "a",
        "--data",
        data_csv,
        *BUNDLED_SCHEMA_ARGS,
        "--superlink",
        "https://coordinator",
    )

    assert done.exit_code != 0 and "--superlink 'https://coordinator'" in str(done.exception)
    assert not config.exists()


def test_init_says_what_the_inference_found_in_the_sites_file(tmp_path: Path) -> None:
    data = tmp_path / "ward.csv"
    rows = [f"{40 + i % 40},{i % 2}" for i in range(100)]
    rows[5] = "65526,1"  # an age no patient has
    data.write_text("age,y\n" + "\n".join(rows) + "\n")

    done = _init(
        tmp_path / "site.toml", "--name", "ward", "--data", data, "--infer-schema", "--label", "y"
    )

    assert done.exit_code == 0, done.output
    flat = " ".join(done.output.split())
    assert "note: schema: column 'age': 1 impossible value(s) (65526 in" in flat
    schema = load_site_config(tmp_path / "site.toml").load_schema()
    assert 65526 in schema.feature("age").missing_values


def test_init_prints_a_port_of_its_own_for_several_sites_on_one_host(
    data_csv: Path, tmp_path: Path
) -> None:
    config = data_csv.parent / "site.toml"

    done = _init(
        config, "--name", "st-mary", "--data", data_csv, *BUNDLED_SCHEMA_ARGS,
        "--supernode-port", "9096",
    )  # fmt: skip

    assert done.exit_code == 0, done.output
    launcher = _supernode_command(done.output)
    argv = launcher[3:]
    assert dict(zip(argv[::2], argv[1::2], strict=True))["--port"] == "9096"
    assert "each SuperNode on one host needs its own" in " ".join(done.output.split())
    # A restart after a crash releases the node left online: the record is in the state folder.
    state = load_site_config(config).state_path.resolve()
    assert f"FEDWARD_NODE_ID_FILE={state / '.supernode-node-id'}" in done.output.replace("\n", "")
