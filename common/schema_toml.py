"""Schema TOML written for a person to review: its values, the result, and its validation.

Both the schema inferred from the sites' files (``fedward.common.schema_inference``) and the one
merged from their reviewed schemas (``fedward.common.schema_merge``) are written as TOML text with
notes and findings, then validated with the same model the sites load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fedward.common.errors import FedwardError
from fedward.common.schema import DataSchema, Scalar

# Every inferred feature's note starts with this word; `fedward site check` warns until it is gone.
REVIEW_NOTE = "REVIEW"


class SchemaInferenceError(FedwardError):
    """The files cannot give a schema as asked; the message names the file, column or option."""


@dataclass(frozen=True)
class InferredSchema:
    """A schema skeleton as TOML, the validated schema, and what a reviewer must know about it."""

    toml: str
    schema: DataSchema
    findings: list[str] = field(default_factory=list)


def toml_str(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def toml_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(toml_number(float(value)))
    return toml_str(str(value))


def toml_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else round(value, 10)


def parse_schema_toml(text: str, source: str | Path) -> DataSchema:
    """Validate schema TOML text with the same model the sites load."""
    import tomllib

    from fedward.common.config_files import validate_config

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # a bug here, not the operator's input
        raise SchemaInferenceError(f"{source}: fedward wrote invalid TOML: {exc}") from exc
    return validate_config(DataSchema, data, source)


def schema_document(
    head: list[str],
    name: str,
    patient_id: str | None,
    label_lines: list[str],
    features: list[str],
    findings: list[str],
    *,
    source: str,
) -> InferredSchema:
    """The schema TOML (comments, name, patient id, label, features), validated as sites load it:
    a writer's bug fails here, at the person reviewing it, never at a site."""
    top = [f"name = {toml_str(name)}"]
    if patient_id is not None:
        top.append(f"patient_id = {toml_str(patient_id)}")
    text = "\n".join([*head, "", *top, "", *label_lines, "", *features]).rstrip("\n") + "\n"
    return InferredSchema(text, parse_schema_toml(text, source), findings)
