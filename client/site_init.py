"""`fedward site init`: write a new site's config (and, if asked, a data schema skeleton).

A hospital's IT team should not have to learn the site config's TOML from the guide before its
first check: ``init`` asks for what it needs (or takes it from flags), validates it with the same
pydantic model the ClientApp loads, and writes a file that `fedward config check --kind site` accepts.
The site config has no place for connection settings (unknown keys are errors), so the SuperLink
address, CA and node key go into the ``fedward-supernode`` command line that ``init`` prints.

The schema skeleton is inferred from the data file's header and value types. Its ranges and
categories come from the file itself, which the site guide forbids for a federation's schema
(declared ranges must come from domain knowledge, or the shared preprocessing leaks patients'
extremes): every inferred feature carries a review note, and `fedward site check` warns until the
notes are gone.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import pandas as pd
import typer
from pydantic import BaseModel, TypeAdapter, ValidationError

from fedward.client.ledger import Ledger
from fedward.common.config_files import load_schema, validate_config
from fedward.common.datasource import Format, read_raw
from fedward.common.errors import ConfigError, FedwardError
from fedward.common.schema import DataSchema
from fedward.common.schema_inference import (
    BINARY_LABELS,
    REVIEW_NOTE,
    InferredSchema,
    SchemaInferenceError,
    cell_texts,
    infer_schema,
)
from fedward.common.site_config import DataSourceConfig, PolicyConfig, SiteConfig, load_site_config

__all__ = ["REVIEW_NOTE", "InitOptions", "SiteInitError", "infer_schema_toml", "write_site"]


class SiteInitError(FedwardError):
    """``init`` cannot write what was asked; the message names the file, column or option."""


@dataclass
class InitOptions:
    """What ``init`` writes; ``None`` means "not given" (prompted for, or the default)."""

    config: Path
    name: str | None = None
    data: Path | None = None
    data_format: str = "auto"
    schema: Path | None = None
    infer_schema: bool | None = None
    label: str | None = None
    positive: list[str] = field(default_factory=list)
    positive_above: float | None = None
    patient_id: str | None = None
    state_dir: Path | None = None
    dataset_id: str | None = None
    total_epsilon: float | None = None
    total_delta: float | None = None
    max_epsilon_per_run: float | None = None
    allow_non_dp: bool | None = None
    min_cell_size: int | None = None
    auto_approve: bool = False
    force: bool = False


@dataclass(frozen=True)
class InitResult:
    config: Path
    schema: Path
    schema_written: bool
    site: SiteConfig
    notes: list[str]


# ---- field checks: the site config's own constraints, applied to each answer ----------------


_HINTS = {
    "name": "letters, digits, space, '_', '.', '-'; it starts with a letter or digit and has at "
    "most 64 characters",
}


def _check_field(model: type[BaseModel], name: str, value: Any, flag: str) -> Any:
    """Validate one value against the model's field, so a prompt can ask again at once."""
    info = model.model_fields[name]
    try:
        return TypeAdapter(cast(Any, Annotated[info.annotation, info])).validate_python(value)
    except ValidationError as exc:
        why = _HINTS.get(name, exc.errors()[0]["msg"])
        raise typer.BadParameter(f"{flag} '{value}': {why}") from None


def _optional_float(text: str) -> float | None:
    text = text.strip()
    if text in ("", "none", "-"):
        return None
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not a number (leave it empty for none)") from None


# ---- gathering: flags first, then prompts for what is missing --------------------------------


def _ask(text: str, default: Any = None, **kwargs: Any) -> Any:
    return typer.prompt(text, default=default, **kwargs)


def complete(opts: InitOptions, *, interactive: bool) -> InitOptions:
    """Fill in what the flags left out: by prompting when interactive, else by the defaults.

    Without a terminal nothing is asked: a missing name or data file is an error naming its flag.
    """
    folder = opts.config.parent

    def prompt_check(model: type[BaseModel], name: str, flag: str) -> Callable[[str], Any]:
        return lambda text: _check_field(model, name, text, flag)

    if opts.name is None:
        if not interactive:
            raise SiteInitError("--name is missing: the site's name (e.g. st-mary)")
        opts.name = _ask("Site name", value_proc=prompt_check(SiteConfig, "name", "name"))
    opts.name = _check_field(SiteConfig, "name", opts.name, "--name")
    if opts.data is None:
        if not interactive:
            raise SiteInitError("--data is missing: the site's data file (CSV or Parquet)")

        def existing(text: str) -> Path:
            if not Path(text).expanduser().is_file():
                raise typer.BadParameter(f"{text}: no such file")
            return Path(text).expanduser()

        opts.data = _ask("Data file (CSV or Parquet)", value_proc=existing)
    if opts.dataset_id is None and interactive:
        opts.dataset_id = _ask(
            "Dataset id (the budget's key in the ledger; keep it when the file is re-exported)",
            default=opts.name,
            value_proc=prompt_check(DataSourceConfig, "dataset_id", "dataset id"),
        )
    if opts.schema is None:
        default_schema = folder / "schema.toml"
        opts.schema = (
            Path(_ask("Data schema file", default=str(default_schema)))
            if interactive
            else default_schema
        )
    if opts.infer_schema is None:
        opts.infer_schema = (
            interactive
            and not opts.schema.exists()
            and typer.confirm(
                f"{opts.schema} does not exist. Write a schema skeleton inferred from {opts.data}?",
                default=True,
            )
        )
    if opts.infer_schema and opts.label is None:
        columns = _columns(opts)
        if not interactive:
            raise SiteInitError(
                f"--label is missing: name the outcome column of {opts.data} to infer a schema "
                f"(columns: {', '.join(columns[:20])})"
            )

        def known(text: str) -> str:
            if text not in columns:
                raise typer.BadParameter(f"'{text}' is not a column of {opts.data}")
            return text

        opts.label = _ask(
            f"Label (outcome) column, one of: {', '.join(columns[:20])}", value_proc=known
        )
    if opts.infer_schema and interactive and not opts.positive and opts.positive_above is None:
        values = _label_values(opts)
        if not values <= BINARY_LABELS:
            _ask_label_rule(opts, values)
    if opts.state_dir is None:
        opts.state_dir = (
            Path(_ask("State folder (holds the privacy ledger)", default=str(folder / "state")))
            if interactive
            else folder / "state"
        )
    if interactive:
        _ask_policy(opts)
    return opts


def _label_values(opts: InitOptions) -> set[str]:
    assert opts.label is not None
    frame = _read(opts)
    if opts.label not in frame.columns:
        return set()  # reported, with the file's columns, when the schema is inferred
    return {t.casefold() for t in _texts(frame[opts.label])}


def _ask_label_rule(opts: InitOptions, values: set[str]) -> None:
    """A label that is not 0/1 or true/false needs a rule: which values are the positive class."""
    shown = ", ".join(sorted(values)[:10]) + (", …" if len(values) > 10 else "")

    def rule(text: str) -> tuple[list[str], float | None]:
        text = text.strip()
        if text.startswith(">"):
            try:
                return [], float(text[1:])
            except ValueError:
                raise typer.BadParameter(f"'{text[1:]}' is not a number") from None
        chosen = [v.strip() for v in text.split(",") if v.strip()]
        if not chosen:
            raise typer.BadParameter("name at least one value, or >NUMBER")
        return chosen, None

    opts.positive, opts.positive_above = _ask(
        f"Column '{opts.label}' holds {shown}. Which values mean the positive class? "
        "(comma-separated, or >NUMBER for values above a number)",
        value_proc=rule,
    )


def _ask_policy(opts: InitOptions) -> None:
    def check(name: str) -> Callable[[str], Any]:
        return lambda text: _check_field(PolicyConfig, name, text, f"policy.{name}")

    def optional(name: str) -> Callable[[str], Any]:
        def proc(text: str) -> Any:
            value = _optional_float(text)
            return None if value is None else _check_field(PolicyConfig, name, value, name)

        return proc

    if opts.total_epsilon is None:
        opts.total_epsilon = _ask(
            "Lifetime ε of this dataset (policy.total_epsilon)",
            default=10.0,
            value_proc=check("total_epsilon"),
        )
    if opts.total_delta is None:
        opts.total_delta = _ask(
            "Lifetime δ (empty: below 1/(10 × the data file's rows))",
            default="",
            show_default=False,
            value_proc=optional("total_delta"),
        )
    if opts.max_epsilon_per_run is None:
        total = opts.total_epsilon if opts.total_epsilon is not None else 10.0

        def per_run(text: str) -> float | None:
            value = optional("max_epsilon_per_run")(text)
            if value is not None and value > total:
                raise typer.BadParameter(f"{value:g} is above the lifetime ε ({total:g})")
            return cast(float | None, value)

        opts.max_epsilon_per_run = _ask(
            "Most ε one run may spend (empty: no per-run cap)",
            default="",
            show_default=False,
            value_proc=per_run,
        )
    if opts.allow_non_dp is None:
        opts.allow_non_dp = typer.confirm(
            "Ever allow training without DP (policy.allow_non_dp)?", default=False
        )
    if opts.min_cell_size is None:
        opts.min_cell_size = _ask(
            "Minimum cell size (policy.min_cell_size)",
            default=10,
            value_proc=check("min_cell_size"),
        )


# ---- writing -----------------------------------------------------------------------------------


def _toml_str(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def _toml_num(value: float) -> str:
    return repr(float(value))  # 10.0, 1e-05: both TOML floats


def _stored_path(path: Path, folder: Path) -> str:
    """A path as the site config stores it: relative to its folder when inside it, else absolute."""
    absolute = Path(os.path.abspath(path.expanduser()))
    try:
        return absolute.relative_to(Path(os.path.abspath(folder))).as_posix() or "."
    except ValueError:
        return str(absolute)


def render_site_config(opts: InitOptions) -> str:
    """The site config's TOML, commented like the guide's example."""
    folder = opts.config.parent
    assert opts.name is not None and opts.data is not None and opts.schema is not None
    state = opts.state_dir if opts.state_dir is not None else folder / "state"
    total = opts.total_epsilon if opts.total_epsilon is not None else 10.0
    min_cell = opts.min_cell_size if opts.min_cell_size is not None else 10
    lines = [
        f"# Site config of '{opts.name}', written by `fedward site init` on "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "# Relative paths are resolved against this file's folder. See docs/site-guide.md.",
        f"name = {_toml_str(opts.name)}",
        f"state_dir = {_toml_str(_stored_path(state, folder))}"
        "  # the privacy ledger lives here (ledger.sqlite)",
        "",
        "[data]",
        f"path = {_toml_str(_stored_path(opts.data, folder))}",
        f"format = {_toml_str(opts.data_format)}",
        f"schema_file = {_toml_str(_stored_path(opts.schema, folder))}",
        f"dataset_id = {_toml_str(opts.dataset_id or opts.name)}"
        "  # the budget's key: keep it when the file is re-exported",
        "",
        "[policy]",
        f"total_epsilon = {_toml_num(total)}  # lifetime ε of this dataset, across every run",
    ]
    if opts.total_delta is not None:
        lines.append(f"total_delta = {_toml_num(opts.total_delta)}  # lifetime δ")
    else:
        lines.append("# total_delta = 1e-5  # unset: below 1/(10 × the data file's rows)")
    if opts.max_epsilon_per_run is not None:
        lines.append(f"max_epsilon_per_run = {_toml_num(opts.max_epsilon_per_run)}")
    else:
        lines.append("# max_epsilon_per_run = 3.0  # unset: no per-run cap")
    lines += [
        f"min_cell_size = {min_cell}  # every count a reply carries is 0 or at least this",
        f"allow_non_dp = {'true' if opts.allow_non_dp else 'false'}",
        "auto_approve = true  # SIMULATION OR DEMONSTRATION ONLY: any run config and code is accepted"
        if opts.auto_approve
        else "auto_approve = false  # only runs approved with `fedward site approve`",
        "",
    ]
    return "\n".join(lines)


def _columns(opts: InitOptions) -> list[str]:
    assert opts.data is not None
    return list(_read(opts).columns)


def _read(opts: InitOptions) -> pd.DataFrame:
    assert opts.data is not None
    # Only "csv" or "parquet" passes the test, so the cast to the reader's Format is exact.
    fmt: Format = (
        cast(Format, opts.data_format) if opts.data_format in ("csv", "parquet") else "auto"
    )
    return read_raw(opts.data, site=opts.name or "new site", fmt=fmt)


def _texts(col: pd.Series) -> pd.Series:
    """Non-missing cells as stripped text (numbers without a spurious '.0')."""
    return pd.Series(cell_texts(col), dtype=object)


def infer_schema_toml(opts: InitOptions) -> str:
    """The inferred schema's TOML (see :func:`infer_site_schema`)."""
    return infer_site_schema(opts).toml


def infer_site_schema(opts: InitOptions) -> InferredSchema:
    """A schema skeleton from the data file, every feature marked for review.

    The same inference as `fedward schema infer` (:mod:`fedward.common.schema_inference`), over
    this site's one file."""
    assert opts.data is not None and opts.label is not None
    frame = _read(opts)
    columns = list(frame.columns)
    for what, column in (("--label", opts.label), ("--patient-id", opts.patient_id)):
        if column is not None and column not in columns:
            raise SiteInitError(
                f"{opts.data}: {what} column '{column}' is not in the file "
                f"(columns: {', '.join(columns[:20])})"
            )
    try:
        inferred = infer_schema(
            {str(opts.data): frame},
            label=opts.label,
            positive=opts.positive,
            positive_above=opts.positive_above,
            patient_id=opts.patient_id,
            name=opts.dataset_id or opts.name or "dataset",
            made_by="fedward site init",
        )
    except SchemaInferenceError as exc:
        raise SiteInitError(str(exc)) from None
    return inferred


def _write_new(path: Path, text: str, *, force: bool) -> None:
    if path.exists() and not force:
        raise SiteInitError(f"{path} exists; pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SiteInitError(f"{path}: cannot write it ({exc.strerror or exc})") from exc


def write_site(opts: InitOptions) -> InitResult:
    """Validate everything first, then write the schema (if inferred) and the site config."""
    assert opts.schema is not None and opts.data is not None and opts.name is not None
    if opts.config.exists() and not opts.force:
        raise SiteInitError(f"{opts.config} exists; pass --force to overwrite it")
    notes: list[str] = []
    schema_text = None
    if opts.infer_schema:
        inferred = infer_site_schema(opts)
        schema_text = inferred.toml
        notes += [f"schema: {line}" for line in inferred.findings]
        validate_config(DataSchema, _parse(schema_text, opts.schema), opts.schema)
        if opts.schema.exists() and not opts.force:
            raise SiteInitError(f"{opts.schema} exists; pass --force to overwrite it")
    elif not opts.schema.is_file():
        raise SiteInitError(
            f"schema file {opts.schema} not found: copy the federation's schema there, or pass "
            "--infer-schema --label COLUMN to write a skeleton from the data file"
        )
    else:
        load_schema(opts.schema)
    if not opts.data.is_file():
        notes.append(
            f"the data file {opts.data} does not exist yet: `fedward site check` fails "
            "until it does"
        )
    config_text = render_site_config(opts)
    validate_config(SiteConfig, _parse(config_text, opts.config), opts.config)
    if schema_text is not None:
        _write_new(opts.schema, schema_text, force=opts.force)
    _write_new(opts.config, config_text, force=opts.force)
    site = load_site_config(opts.config)
    site.load_schema()
    notes.append(_create_site_key(site))
    return InitResult(opts.config, opts.schema, schema_text is not None, site, notes)


def _create_site_key(site: SiteConfig) -> str:
    """The ledger and the key that anchors it, made now so the operator backs them up together."""
    ledger = Ledger(site.state_path)
    result = ledger.verify()
    if not result.ok:
        raise SiteInitError(f"{ledger.path}: {result.problem} (`fedward site verify`)")
    return (
        f"site key {ledger.key_path} (mode 0600) signs the ledger's anchor "
        f"{ledger.anchor_path}: back both up with the state folder, never share the key"
    )


def _parse(text: str, path: Path) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # a bug here, not the operator's input
        raise ConfigError(path, None, f"fedward wrote invalid TOML: {exc}") from exc


# ---- the SuperNode command line --------------------------------------------------------------

SUPERNODE_PORT = 9094
"""Flower's default port for the SuperNode's local runtime API (``flower-supernode --port``)."""
_SAFE_PATH = re.compile(r"^[^'\"$`\\!\n]+$")  # nothing a shell expands inside double quotes


def _node_config_arg(config: Path) -> str:
    """``--node-config``'s value: Flower reads ``key='value'`` pairs as TOML."""
    path = os.path.abspath(config)
    if _SAFE_PATH.match(path):
        return f"\"site-config='{path}'\""
    if "'" not in path:
        return shlex.quote(f"site-config='{path}'")
    raise SiteInitError(
        f"{path}: a site config path with a single quote cannot be passed in --node-config; "
        "move the file"
    )


def supernode_command(
    config: Path,
    *,
    superlink: str | None = None,
    root_certificates: Path | None = None,
    auth_key: Path | None = None,
    port: int = SUPERNODE_PORT,
) -> str:
    """The SuperNode command this site runs; placeholders in capitals where not given.

    ``fedward-supernode`` is Flower's SuperNode with forked ClientApps (the fast path); everything
    after ``--`` is ``flower-supernode``'s own arguments. ``--port`` is always written: every
    SuperNode on one host needs its own local runtime API port, and Flower's default is shared.
    """

    def path(p: Path | None, placeholder: str) -> str:
        return placeholder if p is None else shlex.quote(os.path.abspath(p))

    parts = [
        "fedward-supernode --flower-shortcuts --",
        f"--superlink {shlex.quote(superlink) if superlink else 'SUPERLINK_HOST:8000'}",
        f"--root-certificates {path(root_certificates, '/PATH/TO/ca.pem')}",
    ]
    if auth_key is not None:
        # Flower 1.42 derives the public key from the private one (--auth-supernode-public-key is
        # deprecated); the coordinator registers KEY.pub with `flwr supernode register`.
        parts.append(f"--auth-supernode-private-key {path(auth_key, '')}")
    parts.append(f"--port {int(port)}")
    parts.append(f"--node-config {_node_config_arg(config)}")
    return " \\\n    ".join(parts)


def describe(result: InitResult) -> Sequence[str]:
    """What was written, in the words the site guide uses."""
    site = result.site
    out = [f"wrote site config {result.config} for site '{site.name}'"]
    if result.schema_written:
        out.append(
            f"wrote schema skeleton {result.schema}: review every feature marked "
            f"'{REVIEW_NOTE}' before the first run"
        )
    out.append(f"  data: {site.data_path}")
    out.append(f"  state folder (privacy ledger): {site.state_path}")
    p = site.policy
    out.append(
        f"  policy: total ε {p.total_epsilon:g}, δ "
        f"{'default' if p.total_delta is None else format(p.total_delta, 'g')}, per-run cap "
        f"{'none' if p.max_epsilon_per_run is None else format(p.max_epsilon_per_run, 'g')}, "
        f"min cell size {p.min_cell_size}, non-DP training "
        f"{'allowed' if p.allow_non_dp else 'refused'}, "
        + (
            "ANY RUN AUTO-APPROVED (simulation or demonstration only)"
            if p.auto_approve
            else "approvals required"
        )
    )
    return out
