"""`fedward simulate --data DIR`: a folder of a hospital's own files, one per site, as a federation.

Each CSV or Parquet file in the folder is one simulated site, named after the file's stem. Before
any engine starts, one schema is inferred over every file (or a given one is used), and the site
configs and schema are written into the run folder's ``site-configs/`` so a person can review
them and run them again with `--site-config`. The dataset is named after the folder: nothing the
run writes names a bundled dataset or claims its licence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fedward.common.config_files import load_schema
from fedward.common.errors import ConfigError, FedwardError
from fedward.common.site_config import load_site_config

SITE_CONFIGS = "site-configs"
DATA_SUFFIXES = (".csv", ".parquet", ".pq", ".parq")
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")


class DataFolderError(FedwardError):
    """The folder cannot be a federation as given; the message names the folder or file."""


@dataclass(frozen=True)
class DataFolder:
    """What was written for the run: site configs in site order, the schema, what to review."""

    folder: Path
    site_configs: list[Path]
    schema: Path
    dataset: str
    findings: list[str] = field(default_factory=list)


def dataset_name(data_dir: Path) -> str:
    """The dataset's name: the folder's, cut to what a run name and the card can carry."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", data_dir.resolve().name).strip("-.") or "own-data"
    return name[:64]


def site_files(data_dir: Path) -> list[Path]:
    """The folder's data files, one per site, in name order."""
    if not data_dir.is_dir():
        raise DataFolderError(f"{data_dir}: no such folder (--data names a folder of site files)")
    files = sorted(
        p for p in data_dir.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
    )
    if not files:
        raise DataFolderError(
            f"{data_dir}: no .csv or .parquet file; --data wants one file per site"
        )
    stems = [p.stem for p in files]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise DataFolderError(
            f"{data_dir}: two files for site '{repeated[0]}' (one file per site, named after it)"
        )
    for path in files:
        if not _NAME_OK.match(path.stem) or len(path.stem) > 64:
            raise DataFolderError(
                f"{path}: the file name is the site's name, and '{path.stem}' is not a valid one "
                "(letters, digits, space, '_', '.', '-'; starting with a letter or digit; at most "
                "64 characters): rename the file"
            )
    return files


def _site_config_text(site: str, data: Path) -> str:
    return (
        f"# Site config of simulated site '{site}', written by `fedward simulate --data` on "
        f"{datetime.now(UTC):%Y-%m-%d}.\n"
        "# Run it again with: fedward simulate --site-config THIS_FILE (once per site) --config "
        "run.toml\n"
        f"name = {json.dumps(site)}\n"
        'state_dir = "state"\n\n'
        "[data]\n"
        f"path = {json.dumps(str(data.resolve()))}\n"
        'schema_file = "schema.toml"\n\n'
        "# SIMULATION ONLY: every run is accepted, and comparison runs without DP are allowed.\n"
        "# A hospital's SuperNode approves each run with `fedward site approve` instead.\n"
        "[policy]\n"
        "auto_approve = true\n"
        "allow_non_dp = true\n"
    )


def _run_toml_text(dataset: str, schema: Path) -> str:
    return (
        "# The run's [task] table for these sites, written by `fedward simulate --data`.\n"
        "# Add your other run settings to this file and pass it with --config.\n"
        f"name = {json.dumps(dataset)}\n\n"
        "[task]\n"
        f"dataset = {json.dumps(dataset)}\n"
        f"schema_file = {json.dumps(schema.name)}\n"
    )


def write_data_folder(
    data_dir: Path,
    out: Path,
    *,
    label: str | None,
    schema_file: Path | None = None,
    positive: Sequence[str] = (),
    positive_above: float | None = None,
    patient_id: str | None = None,
) -> DataFolder:
    """Infer (or copy) the schema and write one site config per file into ``out``.

    Every file is read and checked against the schema here, so a file the schema does not fit
    stops the run before the engine starts, naming the file and column.
    """
    from fedward.common.datasource import table_from_frame
    from fedward.common.schema_inference import SchemaInferenceError, infer_schema, read_site_files

    files = site_files(data_dir)
    dataset = dataset_name(data_dir)
    frames = read_site_files(files)
    findings: list[str] = []
    if schema_file is not None:
        schema = load_schema(schema_file)  # a bad file is named before anything is written
        schema_text = schema_file.read_text(encoding="utf-8")
    else:
        if label is None:
            raise DataFolderError(
                "--data needs --label COLUMN (the outcome column), or --schema FILE"
            )
        try:
            inferred = infer_schema(
                frames,
                label=label,
                positive=positive,
                positive_above=positive_above,
                patient_id=patient_id,
                name=dataset,
                made_by="fedward simulate --data",
            )
        except SchemaInferenceError as exc:
            raise DataFolderError(str(exc)) from None
        schema, schema_text, findings = inferred.schema, inferred.toml, inferred.findings
    for path in files:  # every file against the schema before anything is written
        first_row = 2 if path.suffix.lower() == ".csv" else 1  # a CSV's line 1 is its header
        table_from_frame(
            frames[path.stem], schema, site=path.stem, file=str(path), row_offset=first_row
        )
    out.mkdir(parents=True, exist_ok=True)
    schema_path = out / "schema.toml"
    schema_path.write_text(schema_text, encoding="utf-8")
    configs = []
    for path in files:
        config = out / f"{path.stem}.toml"
        config.write_text(_site_config_text(path.stem, path), encoding="utf-8")
        try:
            load_site_config(config).load_schema()
        except ConfigError as exc:  # a bug here, not the person's input
            raise DataFolderError(f"fedward wrote an invalid site config: {exc}") from exc
        configs.append(config)
    (out / "run.toml").write_text(_run_toml_text(dataset, schema_path), encoding="utf-8")
    return DataFolder(out, configs, schema_path, dataset, findings)
