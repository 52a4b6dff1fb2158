"""The egress guard's rules: what a site's reply may hold, field by field.

DESIGN.md's one rule of data flow: only aggregates leave a site. The guard is derived from one
registry (``fedward.client.reply_fields``) in which every field a site may send declares its
kind; a field that is not registered is refused whatever its name, and each value is checked by
its kind: model arrays must have exactly the keys, shapes and dtypes of the model the
coordinator sent; counts are 0 or at least the site's minimum cell size (as numbers, or as text
that reads as a number); a rate and its denominator may not imply a small count, nor may
accuracy and balanced accuracy together with n and prevalence; text is a fixed code or a
sentence rendered from a template (``fedward.common.site_messages``) whose slots hold only the
run schema's column names, the coordinator's own keys, codes and cell-safe numbers.

The minimum cell size is the site's own (its policy, raised by the SuperNode operator's
``min-cell-size`` node config), never read from the reply being checked. Small-cell
suppression is a disclosure-control heuristic, not differential privacy: the DP guarantee covers
only the model updates and the DP-released preprocessing aggregates.

The guard runs on every reply through ``fedward.client.egress``'s Flower mod, errors included.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedward.client.reply_fields import (
    ARRAYS_RECORD,
    FEDWARD_RECORD,
    METRICS_RECORD,
    REGISTRY,
    FieldSpec,
    confusion_counts,
    implied_counts_ok,
)
from fedward.common import protocol
from fedward.common.errors import FedwardError
from fedward.common.protocol import KEY_SCHEMA
from fedward.common.site_messages import (
    ERROR_NAMES,
    MessageRefused,
    SiteMessage,
    SlotRules,
    check,
)

ExpectedArrays = dict[str, tuple[tuple[int, ...], str]]

REASON_SOURCE = "reason_source"
WARNINGS_SOURCE = "warnings_source"
_HEX = re.compile(r"[0-9a-f]{8,64}")
_PEOPLE_COUNT = re.compile(
    r"(?:(?:has|have|had|only|of)\s+(?P<n>\d+)\b(?!\s*%))"
    r"|(?:(?<![\w.])(?P<m>\d+)\s+(?:rows?|members?|non-members?|patients?|people|records?|"
    r"positives?|negatives?|guesses|correct|canar(?:y|ies)))"
)

RULES: Mapping[str, str] = {
    "unregistered": "unregistered field",
    "kind": "wrong kind of value",
    "small": "small count",
    "implied": "implied small count",
    "arrays": "model arrays do not match",
    "template": "message not from a template",
    "long": "value too long",
}


@dataclass(frozen=True)
class EgressPolicy:
    """Limits a reply must respect; ``min_cell_size`` is the site's (its policy's)."""

    min_cell_size: int = 10
    max_list_len: int = 4096

    def __post_init__(self) -> None:
        if self.min_cell_size < 1:
            raise ValueError(f"min_cell_size must be >= 1, got {self.min_cell_size}")
        if self.max_list_len < 1:
            raise ValueError("max_list_len must be >= 1")


class EgressViolation(FedwardError):
    """A reply would let something unregistered or unsafe leave the site; names record and key."""

    def __init__(self, site: str, record: str, key: str | None, reason: str, rule: str) -> None:
        self.site = site
        self.record = record
        self.key = key
        self.reason = reason
        self.rule = rule
        where = f"site '{site}': egress refused: record {_show(record)}"
        if key is not None:
            where += f", key {_show(key)}"
        super().__init__(f"{where}: {reason}")

    def public_message(self, site: str) -> SiteMessage:
        return SiteMessage("egress-refused", {"site": site, "rule": RULES[self.rule]})


def _show(name: str, limit: int = 80) -> str:
    """Quote a name for the site's log, truncated."""
    return repr(name if len(name) <= limit else name[:limit] + "...")


def expected_from_array_record(record: ArrayRecord) -> ExpectedArrays:
    """Key -> (shape, dtype) of a model state, e.g. the ArrayRecord the coordinator sent."""
    return {k: (tuple(int(d) for d in a.shape), str(a.dtype)) for k, a in record.items()}


@dataclass(frozen=True)
class SiteRules:
    """What the guard knows of the site and of the question, never of the reply.

    ``columns`` are the names the run's schema declares and ``echo`` the texts the coordinator
    itself sent (its keys and string values): a site may repeat those, nothing else free-form.
    """

    site: str
    dataset: str = ""
    columns: Collection[str] = ()
    echo: Collection[str] = ()


def rules_from_message(msg: Message, *, site: str, dataset: str = "") -> SiteRules:
    """The schema's column names and the coordinator's own texts, from the question."""
    columns: set[str] = set()
    echo: set[str] = set()
    if msg.has_content():
        for name, record in msg.content.items():
            echo.add(name)
            if isinstance(record, ConfigRecord):
                for key, value in record.items():
                    echo.add(key)
                    if isinstance(value, str) and len(value) <= 200:
                        echo.add(value)
                schema = record.get(KEY_SCHEMA)
                if isinstance(schema, str):
                    columns |= _schema_columns(schema)
    echo.add(msg.metadata.message_type)
    echo |= _PROTOCOL_NAMES
    return SiteRules(site=site, dataset=dataset, columns=frozenset(columns), echo=frozenset(echo))


_PROTOCOL_NAMES = frozenset(
    {v for k, v in vars(protocol).items() if k.isupper() and isinstance(v, str)}
    | {"message_type", "server-round"}
)
"""Record and key names of fedward's protocol: a site may name them in a refusal."""


def _schema_columns(text: str) -> set[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return set()
    if not isinstance(data, dict):
        return set()
    out: set[str] = set()
    label = data.get("label")
    if isinstance(label, dict) and isinstance(label.get("column"), str):
        out.add(label["column"])
    for feature in data.get("features") or []:
        if isinstance(feature, dict) and isinstance(feature.get("name"), str):
            out.add(feature["name"])
    if isinstance(data.get("patient_id"), str):
        out.add(data["patient_id"])
    return out


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or float that is not a bool (a TypeGuard: a True answer narrows ``value``)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_count(value: object) -> float | None:
    """A number, or text that reads as one: a count sent as text is still a count."""
    if is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


class EgressGuard:
    """Checks a reply's RecordDict against the registry, the site's rules and the sent model."""

    def __init__(
        self,
        policy: EgressPolicy,
        expected_arrays: ExpectedArrays | None = None,
        rules: SiteRules | None = None,
    ) -> None:
        self.policy = policy
        self.expected_arrays = expected_arrays
        self.rules = rules

    def check(self, content: RecordDict, *, site: str) -> RecordDict:
        """Return ``content`` unchanged if it may leave; raise EgressViolation otherwise."""
        rules = self.rules or SiteRules(site=site)
        scalars: dict[str, Any] = {}
        for name, record in content.items():
            if name == ARRAYS_RECORD:
                if not isinstance(record, ArrayRecord):
                    raise EgressViolation(site, name, None, "must be an ArrayRecord", "kind")
                self._check_arrays(name, record, site)
            elif name in (METRICS_RECORD, FEDWARD_RECORD):
                want = MetricRecord if name == METRICS_RECORD else ConfigRecord
                if not isinstance(record, want):
                    raise EgressViolation(site, name, None, f"must be a {want.__name__}", "kind")
                scalars.update({k: (name, v) for k, v in record.items()})
            else:
                raise EgressViolation(site, name, None, "record is not registered", "unregistered")
        values = {k: v for k, (_, v) in scalars.items()}
        for key, (record_name, value) in scalars.items():
            spec = REGISTRY.get(key)
            if key in (REASON_SOURCE, WARNINGS_SOURCE):
                continue
            if spec is None or record_name not in spec.records:
                raise EgressViolation(
                    site, record_name, key, "field is not registered", "unregistered"
                )
            self._check_value(site, record_name, key, value, spec, values, rules)
        self._check_confusion(site, values)
        return content

    # ---- by kind --------------------------------------------------------------------------------

    def _check_value(
        self,
        site: str,
        record: str,
        key: str,
        value: Any,
        spec: FieldSpec,
        values: Mapping[str, Any],
        rules: SiteRules,
    ) -> None:
        cell = self.policy.min_cell_size

        def fail(reason: str, rule: str = "kind") -> EgressViolation:
            return EgressViolation(site, record, key, reason, rule)

        items: Sequence[Any] = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) > self.policy.max_list_len:
            raise fail(f"list longer than {self.policy.max_list_len} items", "long")
        if any(isinstance(v, bytes) for v in items):
            raise fail("bytes never leave a site")
        if any(isinstance(v, str) and len(v) > spec.max_len for v in items):
            raise fail(f"text longer than {spec.max_len} characters", "long")
        kind = spec.kind
        if kind in ("count", "counts"):
            if kind == "count" and isinstance(value, list):
                raise fail("a count is one number")
            for v in items:
                n = _as_count(v)
                if n is not None and 0 < n < cell:
                    raise fail(f"a count is below the minimum cell size {cell}", "small")
                if not is_number(v):
                    raise fail("a count must be a number")
        elif kind in ("metric", "dp", "setting", "sequence", "duration", "positions"):
            if key == "preprocessing_aggregates" and isinstance(value, str):
                return
            for v in items:
                if not is_number(v):
                    raise fail(f"a {kind} must be a number")
            if kind == "metric" and spec.denominator is not None:
                n = _denominator(key, spec, values)
                if n is not None and 0 < n < cell:
                    raise fail("a metric of fewer people than the minimum cell size", "implied")
        elif kind == "rate":
            if not is_number(value) or not 0.0 <= float(value) <= 1.0:
                raise fail("a rate is a number in [0, 1]")
            n = _denominator(key, spec, values)
            if n is None:
                raise fail("a rate travels with its denominator", "implied")
            if not implied_counts_ok(float(value), n, cell):
                raise fail(
                    f"the rate implies a count below the minimum cell size {cell}", "implied"
                )
        elif kind == "flag":
            if not isinstance(value, bool):
                raise fail("a flag is true or false")
        elif kind == "code":
            for v in items:
                allowed = spec.choices or ()
                ok = (v in ERROR_NAMES) if key == "error_kind" else (v in allowed)
                if not (isinstance(v, str) and ok):
                    raise fail("not one of the field's fixed codes")
        elif kind == "name":
            if not isinstance(value, str) or not (
                value in (rules.site, rules.dataset)
                or _HEX.fullmatch(value)
                or value in rules.echo
                or _echoed_attempt(value, rules.echo)
            ):
                raise fail("a name is the site's own, a digest, or the coordinator's text")
        elif kind in ("message", "messages"):
            self._check_message(site, record, key, value, values, rules)
        elif kind == "profile":
            self._check_profile(site, record, key, value)
        elif kind == "json":
            self._check_json(site, record, key, value)
        else:  # "model" lives in the arrays record only
            raise fail("model tensors travel in the arrays record")

    def _slot_rules(self, rules: SiteRules) -> SlotRules:
        return SlotRules(
            site=rules.site,
            min_cell=self.policy.min_cell_size,
            columns=rules.columns,
            keys=rules.echo,
        )

    def _check_message(
        self,
        site: str,
        record: str,
        key: str,
        value: Any,
        values: Mapping[str, Any],
        rules: SiteRules,
    ) -> None:
        """A reason or warnings: each text must be what its template renders from its source."""
        texts = value if isinstance(value, list) else [value]
        source_key = {"reason": REASON_SOURCE, "warnings": WARNINGS_SOURCE}.get(key)
        if source_key is None:
            # Per-family baseline reasons and audit notes: sentences of fedward's own whose
            # numbers are held to the cell rule (see _check_notes).
            self._check_notes(site, record, key, texts)
            return
        sources = values.get(source_key)
        sources = sources if isinstance(sources, list) else [sources]
        if len(sources) != len(texts):
            raise EgressViolation(site, record, key, "every text needs its template", "template")
        for text, source in zip(texts, sources, strict=True):
            try:
                if not isinstance(source, str):
                    raise MessageRefused("no template source")
                rendered = check(SiteMessage.from_json(source), self._slot_rules(rules))
            except (MessageRefused, ValueError) as exc:
                raise EgressViolation(
                    site, record, key, f"not a templated message ({exc})", "template"
                ) from None
            if rendered != text:
                raise EgressViolation(
                    site, record, key, "text differs from its template", "template"
                )

    def _check_notes(self, site: str, record: str, key: str, items: Sequence[Any]) -> None:
        """Code-written sentences (audit notes, baseline reasons): no small count of people.

        Their counts are filled in by the site's cell rule ("fewer than N"); the guard checks it
        again for every number that counts people (next to rows, members, patients, ...).
        """
        cell = self.policy.min_cell_size
        for text in items:
            if not isinstance(text, str):
                raise EgressViolation(site, record, key, "a note is text", "kind")
            for match in _PEOPLE_COUNT.finditer(text):
                number = float(match.group("n") or match.group("m"))
                if number.is_integer() and 0 < number < cell:
                    raise EgressViolation(
                        site, record, key, f"a note names a count below {cell}", "small"
                    )

    def _check_json(self, site: str, record: str, key: str, value: Any) -> None:
        try:
            data = json.loads(value) if isinstance(value, str) else None
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not all(
            isinstance(v, int | float | str | bool) or v is None for v in data.values()
        ):
            raise EgressViolation(site, record, key, "settings are a flat JSON object", "kind")

    def _check_profile(self, site: str, record: str, key: str, text: Any) -> None:
        """A profile's counts (rows, splits, categories with missing) held to the minimum cell."""
        cell = self.policy.min_cell_size

        def fail(reason: str, rule: str = "small") -> EgressViolation:
            return EgressViolation(site, record, key, reason, rule)

        try:
            profile = json.loads(text) if isinstance(text, str) else None
        except json.JSONDecodeError:
            profile = None
        if not isinstance(profile, dict):
            raise fail("not a JSON object", "kind")
        n_rows = profile.get("n_rows")
        splits = profile.get("splits") or {}
        counts: list[Any] = [n_rows, *splits.values()]
        n_train = splits.get("train") if isinstance(splits, dict) else None
        known = [v for v in splits.values() if is_number(v)]
        if is_number(n_rows) and len(known) == len(splits) - 1:
            counts.append(n_rows - sum(known))  # the one hidden split, by subtraction
        for feature in (profile.get("features") or {}).values():
            if not isinstance(feature, dict):
                continue
            cats = feature.get("categories") or {}
            shown = [v for v in cats.values() if is_number(v)]
            counts += shown
            fraction = feature.get("missing_fraction")
            if is_number(n_train):
                size = float(n_train)
                if is_number(fraction):
                    n_missing = round(float(fraction) * size)
                    counts += [n_missing, size - n_missing]
                    if len(shown) >= len(cats) - 1:
                        # all categories shown, or one hidden: the rest is recovered by subtraction
                        counts.append(size - n_missing - sum(shown))
                elif len(shown) == len(cats) and cats:
                    counts.append(size - sum(shown))  # the suppressed missing cell
        prevalence = profile.get("prevalence")
        if (
            is_number(prevalence)
            and is_number(n_train)
            and not implied_counts_ok(prevalence, n_train, cell)
        ):
            raise fail(f"prevalence implies a class count below {cell}", "implied")
        for v in counts:
            n = _as_count(v)
            if n is not None and 0 < n < cell:
                raise fail(
                    f"a count (or a difference of counts) is below the minimum cell size {cell}"
                )

    def _check_confusion(self, site: str, values: Mapping[str, Any]) -> None:
        """Accuracy with balanced accuracy, n and prevalence gives the confusion matrix."""
        cell = self.policy.min_cell_size
        for key, acc in values.items():
            if not key.endswith("accuracy") or key.endswith("balanced_accuracy"):
                continue
            prefix = key[: -len("accuracy")]
            bal = values.get(prefix + "balanced_accuracy")
            prev = values.get(prefix + "prevalence")
            n = values.get(prefix + "n", values.get("num-examples"))
            if not all(is_number(v) for v in (acc, bal, prev, n)):
                continue
            cells = confusion_counts(float(n), float(prev), float(acc), float(bal))  # type: ignore[arg-type]
            if cells is not None and any(0 < c < cell for c in cells):
                raise EgressViolation(
                    site,
                    FEDWARD_RECORD,
                    key,
                    "accuracy and balanced accuracy imply a confusion-matrix cell below "
                    f"the minimum cell size {cell}",
                    "implied",
                )

    def _check_arrays(self, name: str, record: ArrayRecord, site: str) -> None:
        expected = self.expected_arrays
        if expected is None:
            raise EgressViolation(
                site, name, None, "no model was sent, so none may return", "arrays"
            )
        for key, array in record.items():
            if key not in expected:
                raise EgressViolation(
                    site, name, key, "array is not part of the model state", "arrays"
                )
            shape, dtype = expected[key]
            if tuple(array.shape) != shape or str(array.dtype) != dtype:
                raise EgressViolation(
                    site, name, key, f"shape or dtype differs from the model's {shape}", "arrays"
                )
        missing = sorted(set(expected) - set(record.keys()))
        if missing:
            raise EgressViolation(
                site, name, missing[0], f"{len(missing)} model array(s) missing", "arrays"
            )


def _echoed_attempt(value: str, echo: Collection[str]) -> bool:
    """A round's attempt id, "<run id>:<round>", built from the coordinator's own run id."""
    run_id, _, number = value.rpartition(":")
    return number.isdigit() and run_id in echo


def _denominator(key: str, spec: FieldSpec, values: Mapping[str, Any]) -> float | None:
    """The n of a rate or metric: its declared field, else the reply's num-examples."""
    for name in (spec.denominator, "num-examples"):
        n = _as_count(values.get(name)) if name else None
        if n is not None and math.isfinite(n):
            return n
    return None


def guard_for(msg: Message, *, site: str, dataset: str = "", min_cell: int = 10) -> EgressGuard:
    """The guard a site applies to its reply to ``msg`` (the model and texts it was sent)."""
    sent = msg.content.get(ARRAYS_RECORD) if msg.has_content() else None
    expected = expected_from_array_record(sent) if isinstance(sent, ArrayRecord) else {}
    rules = rules_from_message(msg, site=site, dataset=dataset)
    return EgressGuard(EgressPolicy(min_cell_size=min_cell), expected, rules)
