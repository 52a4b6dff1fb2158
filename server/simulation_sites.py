"""The simulated sites of `fedward simulate`, made ready before any engine starts.

From ``--data DIR`` the site configs and one schema are written into the run folder; from
``--site-config`` they are read as given. Either way the sites' schemas are then checked against
the run's (:mod:`fedward.server.site_schemas`), so a federation that could not train stops in
seconds instead of after Ray has started.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from fedward.common.errors import FedwardError
from fedward.common.run_config import RunConfig
from fedward.server.data_folder import SITE_CONFIGS, site_files, write_data_folder
from fedward.server.site_schemas import check_site_schemas


class TooFewSites(FedwardError):
    """Fewer sites than the run waits for: it would wait, then stop without a model."""


def prepare_sites(
    run: RunConfig,
    run_dir: Path,
    console: Console,
    *,
    data_dir: Path | None,
    site_configs: Sequence[Path],
    label: str | None,
    positive: Sequence[str],
    positive_above: float | None,
    schema: Path | None,
    run_chose_schema: str,
) -> tuple[RunConfig, list[Path]]:
    """The run (its schema settled) and the site config paths; says on the console what it did."""
    configs = list(site_configs)
    n_sites = len(site_files(data_dir)) if data_dir is not None else len(configs)
    if n_sites < run.strategy.min_sites:
        raise TooFewSites(
            f"{n_sites} site(s), but the run waits for at least {run.strategy.min_sites} "
            "(strategy.min_sites): give more sites (one file per site with --data), or lower "
            "[strategy] min_sites in the run config"
        )
    if data_dir is not None:
        written = write_data_folder(
            data_dir,
            run_dir / SITE_CONFIGS,
            label=label,
            schema_file=schema,
            positive=positive,
            positive_above=positive_above,
        )
        task = run.task.model_copy(
            update={"dataset": written.dataset, "schema_file": str(written.schema.resolve())}
        )
        run = run.model_copy(update={"task": task})
        configs = written.site_configs
        run_chose_schema = "dataset"  # named after the folder, with the schema written for it
        how = "given" if schema is not None else f"inferred over {len(configs)} file(s)"
        console.print(
            f"{len(configs)} site(s) from {escape(str(data_dir))}: "
            f"{escape(', '.join(p.stem for p in configs))}; schema {how}"
        )
        for line in written.findings:
            console.print(f"[yellow]schema: {escape(line)}[/]", soft_wrap=True)
        console.print(
            f"site configs and schema (review, reuse with --site-config): "
            f"[bold]{escape(str(written.folder))}[/]",
            soft_wrap=True,
        )
    check = check_site_schemas(run, configs, run_chose_schema=run_chose_schema)
    if check.adopted is not None:
        console.print(
            f"data schema: {escape(str(check.adopted))} (declared by the sites; the run config "
            "names none)",
            soft_wrap=True,
        )
    for line in check.warnings:
        console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True)
    return check.run, configs
