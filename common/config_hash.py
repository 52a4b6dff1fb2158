"""The approval hash of a config, derived from a marker on every field of its pydantic models.

A site approves a run config by this hash, so a field added to the run config must not move the
hash of configs approved before it existed. Each field therefore says how it enters the hash, in
its type: ``Hashed[int]``, ``HashedUnlessDefault[bool]``, ``HashedKeyOnly[str | None]`` or
``NotHashed[str]`` (``typing.Annotated`` metadata, invisible in the JSON schemas). A field without
a marker is refused here and by tests/common/test_config_hash.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

T = TypeVar("T")


@dataclass(frozen=True)
class HashRule:
    """How one field enters the approval hash.

    ``always``: its value is hashed. ``never``: it is left out (it asks nothing of the sites).
    ``key-only``: its key is hashed with a null value (it differs between machines, not runs).
    ``unless-default``: left out while at its default, so configs approved before it existed keep
    their hash; fields that share a ``group`` are left out only while all of them are at default.
    """

    rule: Literal["always", "never", "key-only", "unless-default"]
    group: str | None = None


ALWAYS = HashRule("always")
NEVER = HashRule("never")
KEY_ONLY = HashRule("key-only")
UNLESS_DEFAULT = HashRule("unless-default")

Hashed = Annotated[T, ALWAYS]
NotHashed = Annotated[T, NEVER]
HashedKeyOnly = Annotated[T, KEY_ONLY]
HashedUnlessDefault = Annotated[T, UNLESS_DEFAULT]


def hash_rule(model: type[BaseModel], name: str) -> HashRule | None:
    """The marker of field ``name`` of ``model``, or None when it has none."""
    rules = [m for m in model.model_fields[name].metadata if isinstance(m, HashRule)]
    return rules[-1] if rules else None


def canonical_hash(data: Any) -> str:
    """SHA-256 of ``data`` as compact JSON with sorted keys: one byte string per value."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def hashed_form(model: BaseModel) -> dict[str, Any]:
    """The JSON form of ``model`` with each field kept, nulled or left out as its marker says."""
    return _hashed(model, model.model_dump(mode="json"))


def _hashed(model: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    cls = type(model)
    out: dict[str, Any] = {}
    at_default: dict[str, bool] = {}
    grouped: dict[str, str] = {}
    for name, value in data.items():
        rule = hash_rule(cls, name)
        if rule is None:
            raise TypeError(
                f"{cls.__name__}.{name} has no hash marker: declare how it enters the approval "
                "hash (fedward.common.config_hash)"
            )
        if rule.rule == "never":
            continue
        if rule.rule == "key-only":
            out[name] = None
            continue
        if rule.rule == "unless-default":
            group = rule.group or f"{cls.__name__}.{name}"
            grouped[name] = group
            at_default[group] = at_default.get(group, True) and value == _default_json(cls, name)
        out[name] = _nested(getattr(model, name), value)
    for name, group in grouped.items():
        if at_default[group]:
            del out[name]
    return out


def _nested(attribute: Any, value: Any) -> Any:
    if isinstance(attribute, BaseModel):
        return _hashed(attribute, value)
    if isinstance(attribute, list) and any(isinstance(a, BaseModel) for a in attribute):
        return [_nested(a, v) for a, v in zip(attribute, value, strict=True)]
    return value


@cache
def _default_json(model: type[BaseModel], name: str) -> Any:
    field: FieldInfo = model.model_fields[name]
    default = field.get_default(call_default_factory=True, validated_data={})
    if isinstance(default, BaseModel):
        return default.model_dump(mode="json")
    return to_jsonable_python(default)
