"""Before a simulation starts its engine: do the sites' data schemas match the run's?

Each site refuses a run whose schema differs from its own, but only after Ray has started and the
site has been asked; with every site refusing, a person waited minutes for a wall of diffs. The
same comparison is made here first, from the site configs alone (no data file is read), in well
under a second:

- a run config that names no schema (neither ``[task] schema_file`` nor ``[task] dataset``) takes
  the one most sites declare, so `fedward simulate --site-config …` needs no run config at all;
- when fewer sites match than the run needs, it stops with the first few differences (site,
  column, what differs) and the one setting to change, ``[task] schema_file``;
- a site that differs while enough others match is named in a short warning, and the federation
  goes on without it, as a deployment would.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedward.common.errors import FedwardError
from fedward.common.run_config import RunConfig, run_schema
from fedward.common.schema import DataSchema
from fedward.common.site_config import load_site_config
from fedward.server.schema_diff import describe_differences

SHOWN_DIFFERENCES = 5


class SchemaMismatch(FedwardError):
    """Too few sites declare the run's schema for a model; the message says where and what to set."""


@dataclass(frozen=True)
class SiteSchema:
    name: str
    config: Path
    schema: DataSchema
    schema_file: Path | None  # None: declared inline in the site config


@dataclass
class SchemaCheck:
    """The run (its schema possibly taken from the sites) and warnings to show before it starts."""

    run: RunConfig
    warnings: list[str] = field(default_factory=list)
    adopted: Path | None = None


def load_site_schemas(site_configs: Sequence[Path]) -> list[SiteSchema]:
    out = []
    for path in site_configs:
        site = load_site_config(path)
        file = site.resolve(site.data.schema_file) if site.data.schema_file else None
        out.append(SiteSchema(site.name, Path(path), site.load_schema(), file))
    return out


def _adopt(run: RunConfig, sites: list[SiteSchema]) -> tuple[RunConfig, Path | None]:
    """The run takes the schema most sites declare (the first site's on a tie), from its file."""
    counts = Counter(s.schema.fingerprint() for s in sites)
    best = max(counts.values())
    chosen = next(s for s in sites if counts[s.schema.fingerprint()] == best)
    if chosen.schema_file is None:
        return run, None  # an inline schema has no file the run config could name
    dataset = chosen.schema.name if chosen.schema.name != "dataset" else None
    task = run.task.model_copy(
        update={"schema_file": str(chosen.schema_file.resolve()), "dataset": dataset}
    )
    return run.model_copy(update={"task": task}), chosen.schema_file


def _where(path: Path) -> str:
    """A path as short as it can be while still findable from here."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("../..") else str(path)


def _run_schema_source(run: RunConfig, chose: bool) -> str:
    if run.task.schema_file:
        return f"{_where(Path(run.task.schema_file))} ([task] schema_file)"
    default = "" if chose else ", the default when the run config names no schema"
    return f"the bundled '{run.task.dataset}' schema ([task] dataset{default})"


def check_site_schemas(
    run: RunConfig, site_configs: Sequence[Path], *, run_chose_schema: str
) -> SchemaCheck:
    """Compare every site's declared schema with the run's; stop when too few would take part.

    ``run_chose_schema`` (see :func:`run_names_schema`): "dataset" or "schema_file" when the run
    config (or ``--dataset``) named the schema; "" takes the sites' own.
    """
    sites = load_site_schemas(site_configs)
    if not sites:
        return SchemaCheck(run)
    adopted = None
    if not run_chose_schema:
        run, adopted = _adopt(run, sites)
    expected = run_schema(run)
    if run_chose_schema == "schema_file":
        # A schema file without a dataset: the data are the sites' own, named by the schema, and
        # never the bundled default's (whose name would claim its licence on the model card).
        named = expected.name if expected.name != "dataset" else None
        run = run.model_copy(update={"task": run.task.model_copy(update={"dataset": named})})
    differing: list[tuple[SiteSchema, list[str]]] = []
    for site in sites:
        if site.schema.differences(expected):
            detail = describe_differences(
                site.schema, expected, here=f"at '{site.name}'", there="in the run's schema"
            )
            differing.append((site, detail or ["declared differently"]))
    if not differing:
        return SchemaCheck(run, adopted=adopted)
    matching = len(sites) - len(differing)
    needed = min(run.strategy.min_sites, len(sites))
    if matching >= needed:
        warnings = [
            f"site '{site.name}' ({_where(site.config)}): its schema differs from the run's "
            f"({detail[0]}{f'; {len(detail) - 1} more' if len(detail) > 1 else ''}): it will "
            "refuse the run and be left out"
            for site, detail in differing
        ]
        return SchemaCheck(run, warnings, adopted)
    raise SchemaMismatch(
        _mismatch_message(run, expected, sites, differing, matching, bool(run_chose_schema))
    )


def _mismatch_message(
    run: RunConfig,
    expected: DataSchema,
    sites: list[SiteSchema],
    differing: list[tuple[SiteSchema, list[str]]],
    matching: int,
    chose: bool,
) -> str:
    lines = [
        f"{len(differing)} of {len(sites)} sites declare a data schema that differs from the "
        f"run's, so {'no site' if matching == 0 else f'only {matching} site(s)'} could take part "
        "(checked before the federation started; nothing ran):",
    ]
    # The same difference at several sites is one line naming them all.
    grouped: dict[str, list[str]] = {}
    for site, _ in differing:
        detail = describe_differences(
            site.schema, expected, here="at the site", there="in the run's schema"
        )
        for line in detail or ["declared differently"]:
            grouped.setdefault(line, []).append(f"'{site.name}'")
    for line, names in list(grouped.items())[:SHOWN_DIFFERENCES]:
        lines.append(f"  site{'s' if len(names) > 1 else ''} {', '.join(names)}: {line}")
    if len(grouped) > SHOWN_DIFFERENCES:
        lines.append(f"  … and {len(grouped) - SHOWN_DIFFERENCES} more difference(s)")
    lines.append(f"The run's schema: {_run_schema_source(run, chose)}.")
    prints = {s.schema.fingerprint() for s in sites}
    if len(prints) > 1:
        a, b = (
            sites[0],
            next(s for s in sites if s.schema.fingerprint() != sites[0].schema.fingerprint()),
        )
        first = describe_differences(
            b.schema, a.schema, here=f"at '{b.name}'", there=f"at '{a.name}'"
        )[0]
        lines.append(
            f"The sites' own schemas also differ from each other ({first}): merge the reviewed "
            "schemas into one with `fedward schema infer SITE_A.toml SITE_B.toml … --out "
            "schema.toml`, and have every site declare it."
        )
    suggestion = next((s.schema_file for s in sites if s.schema_file is not None), None)
    target = f'"{suggestion.resolve()}"' if suggestion is not None else '"PATH/TO/schema.toml"'
    lines.append(
        "Set the one schema every site declares in the run config (--config RUN.toml):\n"
        f"  [task]\n  schema_file = {target}"
    )
    return "\n".join(lines)


def run_names_schema(run: RunConfig, config: Path | None) -> str:
    """What the run config itself names: "dataset" (a bundled dataset, perhaps with a schema
    file), "schema_file" (only a schema file), or "" (neither: the sites' schema is taken)."""
    fields = run.task.model_fields_set if config is not None else set()
    if "dataset" in fields:
        return "dataset"
    return "schema_file" if "schema_file" in fields else ""
