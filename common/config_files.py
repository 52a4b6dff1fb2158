"""Config files as fedward reads them: TOML in, validated pydantic models out, errors that name the
file and the field. Every config model (run, site, data schema) is read through here."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from fedward.common.errors import ConfigError
from fedward.common.schema import DataSchema

# Every config section refuses unknown keys (a misspelt key is a mistake to name, not to ignore)
# and validates its defaults.
STRICT = ConfigDict(extra="forbid", validate_default=True)

M = TypeVar("M", bound=BaseModel)


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def validate_config(model: type[M], data: Any, source: str | Path) -> M:
    """Validate ``data``; on failure raise one ConfigError listing every bad field.

    Strict: a file's ``rounds = true`` or ``seed = "7"`` is a mistake to name, not a value to coerce
    (an integer is still accepted where a float is asked for).
    """
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        # A check across sections (a model validator) has no field of its own: its text names them.
        field = _field_path(tuple(first["loc"])) if first["loc"] else None
        lines = [f"{_field_path(tuple(e['loc']))}: {_message(e['msg'])}" for e in errors]
        reason = _message(first["msg"]) if len(lines) == 1 else "; ".join(lines)
        raise ConfigError(source, field, reason) from exc


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, None, "file not found")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(p, None, f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(p, None, f"not UTF-8 text: {exc}") from exc
    except RecursionError:
        # tomllib recurses once per nested array or inline table: no config nests a thousand deep.
        raise ConfigError(p, None, "not valid TOML: arrays or tables nested too deeply") from None


def load_schema(path: str | Path) -> DataSchema:
    return validate_config(DataSchema, read_toml(path), path)
