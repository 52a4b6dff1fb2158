"""The reports' data checked against their JSON Schemas (draft 2020-12) before anything is
rendered or written: a renderer can then rely on the keys it reads, and a reader of the JSON on
the schema shipped beside the code.

Schemas: model_card.schema.json, audit.schema.json, baselines.schema.json (package data).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Any

import jsonschema

from fedward.common.errors import FedwardError

SCHEMA_FILES = {
    "model_card": "model_card.schema.json",
    "audit": "audit.schema.json",
    "baselines": "baselines.schema.json",
}


class ReportDataInvalid(FedwardError, ValueError):
    """A report's data does not match its schema: a bug in the code that built it."""


@cache
def _schema_text(report: str) -> str:
    return files("fedward.server").joinpath(SCHEMA_FILES[report]).read_text(encoding="utf-8")


def report_schema(report: str) -> dict[str, Any]:
    """The JSON Schema of ``report`` (one of SCHEMA_FILES), a fresh copy the caller may change."""
    schema: dict[str, Any] = json.loads(_schema_text(report))
    return schema


def check_report(report: str, data: Mapping[str, Any]) -> None:
    """Raise ReportDataInvalid naming the report, the field and the problem, if ``data`` is off."""
    validator = jsonschema.Draft202012Validator(report_schema(report))
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ReportDataInvalid(
            f"{report} report data does not match {SCHEMA_FILES[report]} at {where}: "
            f"{error.message}"
        )
