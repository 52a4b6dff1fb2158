"""Every sentence a site may send: fixed templates whose slots take only safe values.

A refusal or warning that leaves a site is rendered from one of these templates, never written
freely: an exception's text, a header cell, a cell value, a file path or a row number could each
carry a patient. Each slot declares what it may hold, and the egress guard re-renders the message
from its code and slots and checks every slot by kind before the reply leaves:

- ``site``: the site's own name (sent anyway with every reply);
- ``column``: a column name declared in the run's schema (the coordinator sent it);
- ``key``: a record or config key of the coordinator's own message, or of fedward's protocol;
- ``count``: a number of people: 0 or at least the site's minimum cell size;
- ``number``: a setting or a count of things that are not people (columns, ledger entries, ε);
- ``hash``: a hexadecimal digest (of a run config or of code);
- ``choice``: one of the template's own fixed words;
- ``error``: the class name of an exception (builtin or fedward's own), never its text.

The full story, with paths, rows and cell values, goes to the site's own log and to
``fedward site check`` on the site's console.
"""

from __future__ import annotations

import builtins
import json
import re
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SlotKind = Literal["site", "column", "key", "count", "number", "hash", "choice", "error"]

_HASH = re.compile(r"[0-9a-f]{8,64}")
_BUILTIN_ERRORS = frozenset(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)
FEDWARD_ERRORS = frozenset(
    {
        "FedwardError",
        "ConfigError",
        "PolicyError",
        "SiteDataError",
        "MessageError",
        "LedgerError",
        "BudgetRefusal",
        "WithdrawalsError",
        "EgressViolation",
        "SiteRefusal",
        "ValidationError",
    }
)
ERROR_NAMES = _BUILTIN_ERRORS | FEDWARD_ERRORS
"""Exception class names a site may name (their text never leaves)."""


class MessageRefused(ValueError):
    """A site message does not fit its template: it must not leave."""


@dataclass(frozen=True)
class Template:
    """One sentence with typed slots, e.g. ``"site {site}: {what} {column} is missing"``."""

    text: str
    slots: Mapping[str, SlotKind]
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = {f for _, f, _, _ in string.Formatter().parse(self.text) if f}
        if named != set(self.slots):
            raise ValueError(f"template {self.text!r}: slots {sorted(named)} are not declared")
        for name, kind in self.slots.items():
            if kind == "choice" and not self.choices.get(name):
                raise ValueError(f"template {self.text!r}: choice slot '{name}' has no choices")


_OPERATOR = "the site's operator sees the details with `fedward site check` and in the site's log"

TEMPLATES: Mapping[str, Template] = {
    # ---- approval, withdrawal, policy (checked before any data file is opened) ----
    "run-not-approved": Template(
        "site {site}: run config {config_hash} is not approved; the site's operator approves it "
        "with `fedward site approve RUN.toml`",
        {"site": "site", "config_hash": "hash"},
    ),
    "run-not-planned": Template(
        "site {site}: run config {config_hash} is not one of the federations the approved run "
        "config {parent_hash} asks for; refused",
        {"site": "site", "config_hash": "hash", "parent_hash": "hash"},
    ),
    "code-not-approved": Template(
        "site {site}: the fedward code this site runs ({code_hash}) is not approved; "
        "`fedward site approve` records it together with the run config",
        {"site": "site", "code_hash": "hash"},
    ),
    "withdrawn": Template(
        "site {site}: the site withdrew from this run; it takes no further part in it",
        {"site": "site"},
    ),
    "withdrawals-unreadable": Template(
        "site {site}: the site's withdrawal record cannot be read, so it refuses every run until "
        "its operator repairs it",
        {"site": "site"},
    ),
    "non-dp-refused": Template(
        "site {site}: the run asks for training without DP, which this site's policy never "
        "allows (policy.allow_non_dp = false)",
        {"site": "site"},
    ),
    "policy-refused": Template(
        "site {site}: the site's policy refuses this request ({policy}); " + _OPERATOR,
        {"site": "site", "policy": "choice"},
        {
            "policy": (
                "unknown purpose",
                "model not DP-SGD compatible",
                "baselines switched off",
                "baselines request exceeds the run config",
                "unknown baseline family",
                "membership audit switched off",
                "no privacy plan for this run",
                "no weights sent",
                "no state folder",
                "request not allowed",
            )
        },
    ),
    "budget-refused": Template(
        "site {site}: the request does not fit the site's privacy budget (lifetime ε remaining "
        "{epsilon_remaining})",
        {"site": "site", "epsilon_remaining": "number"},
    ),
    "budget-refused-plain": Template(
        "site {site}: the request does not fit the site's privacy budget or replay rules ({rule})",
        {"site": "site", "rule": "choice"},
        {
            "rule": (
                "budget exhausted",
                "replay refused",
                "preprocessing already released",
                "noise plan impossible",
                "request not allowed",
            )
        },
    ),
    "budget-noise": Template(
        "site {site}: staying within its privacy budget would need more noise than its policy "
        "allows (policy.max_noise_multiplier); ask for fewer rounds or a larger ε (lifetime ε "
        "remaining {epsilon_remaining})",
        {"site": "site", "epsilon_remaining": "number"},
    ),
    "ledger-invalid": Template(
        "site {site}: its privacy ledger failed its integrity check; it releases nothing until "
        "its operator resolves it (`fedward site verify`)",
        {"site": "site"},
    ),
    "ledger-rolled-back": Template(
        "site {site}: its privacy ledger does not extend the head the coordinator last saw "
        "(entry {seq}): it was rolled back, replaced or deleted; a budget is never reset that way",
        {"site": "site", "seq": "number"},
    ),
    # ---- the site's own configuration and data ----
    "coordinator-config-invalid": Template(
        "site {site}: the coordinator's {what} is not valid for this version of fedward; its "
        "coordinator checks it with `fedward config check`",
        {"site": "site", "what": "choice"},
        {"what": ("run config", "data schema", "configuration")},
    ),
    "site-config-invalid": Template(
        "site {site}: its site configuration cannot be used; " + _OPERATOR,
        {"site": "site"},
    ),
    "data-unreadable": Template(
        "site {site}: its data file is missing or cannot be read; " + _OPERATOR,
        {"site": "site"},
    ),
    "data-not-utf8": Template(
        "site {site}: its data file is not UTF-8 text; the operator re-saves it as UTF-8 CSV",
        {"site": "site"},
    ),
    "data-unparseable": Template(
        "site {site}: its data file cannot be read as {format} (a malformed line or cell); "
        + _OPERATOR,
        {"site": "site", "format": "choice"},
        {"format": ("csv", "parquet")},
    ),
    "data-empty": Template(
        "site {site}: its data file holds no data rows",
        {"site": "site"},
    ),
    "header-mismatch": Template(
        "site {site}: the file's header does not match the schema ({n_columns} columns, none "
        "named like the {what} {column})",
        {"site": "site", "n_columns": "number", "what": "choice", "column": "column"},
        {"what": ("label column", "feature column", "patient id column")},
    ),
    "column-missing": Template(
        "site {site}: {what} {column} is missing from the file's header; " + _OPERATOR,
        {"site": "site", "what": "choice", "column": "column"},
        {"what": ("label column", "feature column", "patient id column")},
    ),
    "column-repeated": Template(
        "site {site}: a column name appears more than once in the file's header", {"site": "site"}
    ),
    "column-invalid": Template(
        "site {site}, column {column}: values do not satisfy the schema; " + _OPERATOR,
        {"site": "site", "column": "column"},
    ),
    "data-invalid": Template(
        "site {site}: its data do not satisfy the run's schema; " + _OPERATOR,
        {"site": "site"},
    ),
    "schema-differs": Template(
        "site {site}: its schema differs from the run's schema ({n_differences} differences)",
        {"site": "site", "n_differences": "number"},
    ),
    "schema-differs-at": Template(
        "site {site}: its schema differs from the run's schema ({n_differences} differences, the "
        "first at column {column})",
        {"site": "site", "n_differences": "number", "column": "column"},
    ),
    "split-impossible": Template(
        "site {site}: its data cannot be split as the run config asks (splits.{setting}); the "
        "site sends no counts, its operator sees them with `fedward site check`",
        {"site": "site", "setting": "choice"},
        {"setting": ("min_rows", "min_per_class", "classes")},
    ),
    "sealed-read": Template(
        "site {site}: the sealed test split was already read once for {what} in this run",
        {"site": "site", "what": "choice"},
        {"what": ("test", "baselines")},
    ),
    "split-not-allowed": Template(
        "site {site}: evaluation of that split is not allowed (only tune, or test once)",
        {"site": "site"},
    ),
    # ---- the coordinator's message ----
    "message-invalid": Template(
        "site {site}: the coordinator's message is malformed at record {record}, key {key}",
        {"site": "site", "record": "key", "key": "key"},
    ),
    "message-record-invalid": Template(
        "site {site}: the coordinator's message is malformed at record {record}",
        {"site": "site", "record": "key"},
    ),
    "message-type-unknown": Template(
        "site {site}: the message type is not one this site answers (train, evaluate, query, "
        "baselines, audit, profile)",
        {"site": "site"},
    ),
    "weights-mismatch": Template(
        "site {site}: the coordinator's weights do not fit the run's model", {"site": "site"}
    ),
    # ---- everything else ----
    "egress-refused": Template(
        "site {site}: the site's egress guard stopped the reply ({rule}); details are in the "
        "site's log",
        {"site": "site", "rule": "choice"},
        {
            "rule": (
                "unregistered field",
                "wrong kind of value",
                "small count",
                "implied small count",
                "model arrays do not match",
                "message not from a template",
                "value too long",
            )
        },
    ),
    "unexpected": Template(
        "site {site}: unexpected {error} at the site; details are in the site's log",
        {"site": "site", "error": "error"},
    ),
    "refused": Template(
        "site {site}: the site refused ({error}); " + _OPERATOR,
        {"site": "site", "error": "error"},
    ),
    # ---- warnings sent with a successful reply ----
    "warn-out-of-range": Template(
        "column {column}: {count} values lie outside the declared range and are clipped to it",
        {"column": "column", "count": "count"},
    ),
    "warn-out-of-range-few": Template(
        "column {column}: some values (fewer than {min_cell}) lie outside the declared range and "
        "are clipped to it",
        {"column": "column", "min_cell": "number"},
    ),
    "warn-all-missing": Template(
        "column {column}: every value is missing; the declared imputation value is used for all "
        "rows, so this input carries no information at this site",
        {"column": "column"},
    ),
    "warn-data": Template(
        "a data warning was raised at the site; " + _OPERATOR,
        {},
    ),
}
"""Code -> template: the whole vocabulary of sentences that may leave a site."""


@dataclass(frozen=True)
class SiteMessage:
    """A sentence by code and slots; ``text`` renders it."""

    code: str
    slots: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return render(self.code, self.slots)

    def to_json(self) -> str:
        return json.dumps({"code": self.code, "slots": dict(self.slots)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SiteMessage:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("slots", {}), dict):
            raise MessageRefused("a site message is a JSON object {code, slots}")
        return cls(str(data.get("code")), dict(data.get("slots") or {}))


def render(code: str, slots: Mapping[str, Any]) -> str:
    template = TEMPLATES.get(code)
    if template is None:
        raise MessageRefused(f"no template '{code}'")
    missing = set(template.slots) - set(slots)
    if missing or set(slots) - set(template.slots):
        raise MessageRefused(f"template '{code}' takes the slots {sorted(template.slots)}")
    return template.text.format(**{k: _show(v) for k, v in slots.items()})


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


@dataclass(frozen=True)
class SlotRules:
    """What the guard accepts in slots: the names the coordinator itself sent, the cell size."""

    site: str
    min_cell: int
    columns: Collection[str] = ()
    keys: Collection[str] = ()


def check(message: SiteMessage, rules: SlotRules) -> str:
    """The rendered text, or MessageRefused naming the slot that may not leave."""
    template = TEMPLATES.get(message.code)
    if template is None:
        raise MessageRefused(f"no template '{message.code}'")
    for name, value in message.slots.items():
        kind = template.slots.get(name)
        if kind is None:
            raise MessageRefused(f"template '{message.code}' has no slot '{name}'")
        if not _slot_ok(kind, value, template.choices.get(name, ()), rules):
            raise MessageRefused(f"slot '{name}' of '{message.code}' may not hold that {kind}")
    return render(message.code, message.slots)


def _slot_ok(kind: SlotKind, value: Any, choices: tuple[str, ...], rules: SlotRules) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "site":
        return value == rules.site
    if kind == "column":
        return isinstance(value, str) and value in rules.columns
    if kind == "key":
        return isinstance(value, str) and value in rules.keys
    if kind == "count":
        return number and float(value).is_integer() and (value == 0 or value >= rules.min_cell)
    if kind == "number":
        return number
    if kind == "hash":
        return isinstance(value, str) and _HASH.fullmatch(value) is not None
    if kind == "choice":
        return value in choices
    return isinstance(value, str) and value in ERROR_NAMES


def count_slot(n: int, min_cell: int) -> bool:
    """Whether ``n`` people may be named in a sentence."""
    return n == 0 or n >= min_cell


__all__ = [
    "ERROR_NAMES",
    "TEMPLATES",
    "MessageRefused",
    "SiteMessage",
    "SlotRules",
    "Template",
    "check",
    "count_slot",
    "render",
]
