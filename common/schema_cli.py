"""`fedward schema infer`: one data schema from every site's file, or from the sites' own schemas.

Given data files (CSV or Parquet), it infers one schema over all of them
(:mod:`fedward.common.schema_inference`). Given schema TOMLs, which each site inferred locally and
its operator reviewed, it merges them by declared column names: in a deployment that is what a
site can contribute without any patient value leaving it unreviewed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

schema_app = typer.Typer(
    help="Data schemas: infer one from the sites' files, or merge the sites' reviewed schemas.",
    no_args_is_help=True,
)
_err = Console(stderr=True)


def _impute_pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column.strip():
            raise typer.BadParameter(f"--impute '{item}': write COLUMN=VALUE")
        pairs[column.strip()] = value.strip()
    return pairs


@schema_app.command("infer")
def infer(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Every site's data file (CSV or Parquet); or the sites' reviewed schema TOMLs "
            "to merge.",
            metavar="FILE…",
        ),
    ],
    label: Annotated[
        str | None, typer.Option("--label", help="The outcome column (data files only).")
    ] = None,
    positive: Annotated[
        list[str] | None,
        typer.Option("--positive", help="A label value meaning positive (repeatable)."),
    ] = None,
    positive_above: Annotated[
        float | None, typer.Option("--positive-above", help="Labels above it are positive.")
    ] = None,
    patient_id: Annotated[
        str | None, typer.Option("--patient-id", help="The patient id column, if any.")
    ] = None,
    impute: Annotated[
        list[str] | None,
        typer.Option(
            "--impute",
            help="COLUMN=VALUE: the declared value for a column's missing cells instead of the "
            "median (or 'unknown'); repeatable.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="The dataset's name (default: the folder's).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the schema here (default: print it)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Infer one schema over every site's file, or merge the sites' reviewed schemas.

    Ranges come from robust quantiles, impossible values are flagged and kept out, missing cells
    are imputed with the median, categories are the union without case or spaces; every feature
    carries a REVIEW note until a person has checked it."""
    from fedward.common.schema_inference import infer_schema, read_site_files
    from fedward.common.schema_merge import merge_schemas

    if out is not None and out.exists() and not force:
        raise typer.BadParameter(f"{out} exists; pass --force to overwrite it")
    schemas = [p for p in files if p.suffix.lower() == ".toml"]
    if schemas and len(schemas) != len(files):
        raise typer.BadParameter("give data files or schema TOMLs, not both")
    if schemas:
        from fedward.common.config_files import load_schema

        result = merge_schemas({str(p): load_schema(p) for p in schemas}, name=name)
    else:
        if label is None:
            raise typer.BadParameter("--label is missing: the outcome column of the data files")
        dataset = name or files[0].resolve().parent.name or "dataset"
        result = infer_schema(
            read_site_files(files),
            label=label,
            positive=positive or [],
            positive_above=positive_above,
            patient_id=patient_id,
            impute=_impute_pairs(impute or []),
            name=dataset,
        )
    for line in result.findings:
        _err.print(f"[yellow]finding:[/] {escape(line)}", soft_wrap=True)
    if out is None:
        typer.echo(result.toml, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.toml, encoding="utf-8")
    n = len(result.schema.features)
    _err.print(
        f"wrote {escape(str(out))}: label '{escape(result.schema.label.column)}', {n} features. "
        "Review every note starting 'REVIEW' (ranges, imputation, categories), then remove it."
    )
