"""Before a simulation's engine starts: the sites' schemas checked against the run's in a short
diff that names site, column and what differs, and the one setting to change; and a folder of
files turned into site configs and one schema inside the run folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedward.common.config_files import load_schema
from fedward.common.datasets.bundled import bundled_schema
from fedward.common.run_config import RunConfig
from fedward.common.site_config import load_site_config
from fedward.server.data_folder import DataFolderError, dataset_name, write_data_folder
from fedward.server.schema_diff import describe_differences
from fedward.server.site_schemas import SchemaMismatch, check_site_schemas


def _write_folder(root: Path, sites: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for site, n in sites.items():
        pd.DataFrame(
            {
                "age": rng.integers(20, 90, n),
                "smoker": rng.choice([" Yes", "no "], n),
                "y": rng.integers(0, 2, n),
            }
        ).to_csv(root / f"{site}.csv", index=False)
    return root


@pytest.fixture
def own_sites(tmp_path: Path) -> list[Path]:
    data = _write_folder(tmp_path / "clinic-exports", {"north": 120, "south": 90, "east": 60})
    return write_data_folder(data, tmp_path / "run" / "site-configs", label="y").site_configs


def test_a_folder_becomes_site_configs_and_one_schema_named_after_it(tmp_path: Path) -> None:
    data = _write_folder(tmp_path / "clinic-exports", {"north": 120, "south": 90})
    written = write_data_folder(data, tmp_path / "run" / "site-configs", label="y")

    assert written.dataset == dataset_name(data) == "clinic-exports"
    assert [p.stem for p in written.site_configs] == ["north", "south"]
    schema = load_schema(written.schema)
    assert schema.name == "clinic-exports"
    for config in written.site_configs:
        site = load_site_config(config)
        assert site.load_schema() == schema and site.policy.auto_approve
    assert "schema_file" in (written.folder / "run.toml").read_text()


def test_a_file_name_that_cannot_name_a_site_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    data = _write_folder(tmp_path / "d", {"_bad": 40})
    with pytest.raises(DataFolderError, match="rename the file"):
        write_data_folder(data, tmp_path / "out", label="y")


def test_bundled_heart_disease_schema_against_own_sites_stops_with_a_short_diff(
    own_sites: list[Path],
) -> None:
    run = RunConfig()  # dataset = heart-disease, as a run config that names it
    start = time.monotonic()
    with pytest.raises(SchemaMismatch) as caught:
        check_site_schemas(run, own_sites, run_chose_schema="dataset")
    assert time.monotonic() - start < 2

    message = str(caught.value)
    assert len(message) < 1500
    assert "3 of 3 sites" in message and "nothing ran" in message
    # One line per difference, naming every site that has it.
    assert "sites 'east', 'north', 'south': label column 'y' at the site, 'num'" in message
    assert "[task]" in message and "schema_file = " in message
    assert "more difference(s)" in message  # the first few only, then a count
    assert message.count("\n") < 15


def test_a_run_config_that_names_no_schema_takes_the_sites_own(own_sites: list[Path]) -> None:
    check = check_site_schemas(RunConfig(), own_sites, run_chose_schema="")

    assert check.adopted is not None and check.warnings == []
    assert check.run.task.schema_file == str(check.adopted.resolve())
    assert check.run.task.dataset == "clinic-exports"


def _own_schema(config: Path, text: str) -> None:
    """Point a site config at a schema of its own, with this text."""
    other = config.parent / f"{config.stem}-schema.toml"
    other.write_text(text)
    config.write_text(
        config.read_text().replace('schema_file = "schema.toml"', f'schema_file = "{other.name}"')
    )


def test_one_site_differing_among_three_is_a_warning_and_the_run_goes_on(
    own_sites: list[Path],
) -> None:
    east = next(p for p in own_sites if p.stem == "east")
    shared = east.parent / "schema.toml"
    age_max = load_schema(shared).feature("age").max
    text = shared.read_text()
    _own_schema(east, text.replace(f"max = {age_max:g}", f"max = {age_max:g}0", 1))

    check = check_site_schemas(RunConfig(), own_sites, run_chose_schema="")

    (warning,) = check.warnings
    assert "site 'east'" in warning and "column 'age': max" in warning
    assert "left out" in warning


def test_two_sites_that_disagree_stop_and_say_how_to_merge(tmp_path: Path) -> None:
    data = _write_folder(tmp_path / "d", {"north": 120, "south": 90})
    configs = write_data_folder(data, tmp_path / "out", label="y").site_configs
    text = (configs[1].parent / "schema.toml").read_text()
    assert 'categories = ["no", "Yes"]' in text
    _own_schema(
        configs[1],
        text.replace('categories = ["no", "Yes"]', 'categories = ["no", "Yes", "former"]'),
    )

    with pytest.raises(SchemaMismatch) as caught:
        check_site_schemas(RunConfig(), configs, run_chose_schema="")

    message = str(caught.value)
    assert "column 'smoker': categories 'former' only at 'south'" in message
    assert "differ from each other" in message and "fedward schema infer" in message


def test_a_range_difference_reads_as_both_values() -> None:
    heart = bundled_schema("heart-disease")
    data = heart.model_dump()
    for feat in data["features"]:
        if feat["name"] == "age":
            feat["max"] = 120.0
    other = type(heart).model_validate(data)

    (line,) = describe_differences(other, heart, here="here", there="there")
    assert line.startswith("column 'age': max 120 here,") and line.endswith("there")


def test_a_run_config_naming_only_a_schema_file_names_no_bundled_dataset(
    own_sites: list[Path],
) -> None:
    schema = own_sites[0].parent / "schema.toml"
    run = RunConfig.model_validate({"task": {"schema_file": str(schema)}})
    assert run.task.dataset == "heart-disease"  # the config's default, which the card would claim

    check = check_site_schemas(run, own_sites, run_chose_schema="schema_file")

    assert check.run.task.dataset == "clinic-exports" and check.warnings == []


def _simulate(*args: str | Path) -> Any:
    import typer
    from typer.testing import CliRunner

    from fedward.server.cli import register

    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["simulate", *map(str, args)])


def test_simulate_data_without_a_label_stops_before_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedward.server.simulate as simulate_module

    def no_engine(*_: object, **__: object) -> None:
        raise AssertionError("the engine must not start")

    monkeypatch.setattr(simulate_module, "run_simulation", no_engine)
    data = _write_folder(tmp_path / "d", {"north": 40, "south": 40})

    done = _simulate("--data", data, "--out", tmp_path / "runs")
    assert isinstance(done.exception, DataFolderError) and "--label" in str(done.exception)

    schema = tmp_path / "other.toml"
    schema.write_text(
        'name = "x"\n[label]\ncolumn = "y"\n'
        '[[features]]\nname = "weight"\nkind = "numeric"\nmin = 0\nmax = 300\n'
    )
    done = _simulate("--data", data, "--schema", schema, "--out", tmp_path / "runs")
    message = str(done.exception)
    assert "weight" in message and "north" in message  # the file and the column at fault
    assert not (tmp_path / "runs").exists()  # nothing written: nothing ran


def test_one_file_is_too_few_sites_for_the_default_run(tmp_path: Path) -> None:
    from fedward.server.simulation_sites import TooFewSites

    data = _write_folder(tmp_path / "d", {"north": 40})
    done = _simulate("--data", data, "--label", "y", "--out", tmp_path / "runs")
    assert isinstance(done.exception, TooFewSites) and "min_sites" in str(done.exception)
    assert not (tmp_path / "runs").exists()
