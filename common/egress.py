"""The one egress guard every ClientApp reply passes through.

DESIGN.md's one rule of data flow: only aggregates leave a site. This module makes it structural.
A reply's `RecordDict` is checked against one frozen allow-list (`DEFAULT_ALLOW_LIST`) of record
names, their record type and their allowed keys (exact names or `fnmatch` patterns); model arrays
must have exactly the keys, shapes and dtypes of the model state the coordinator sent, so nothing
shaped per patient can ride along; lists and texts are bounded; and every count (keys such as
`n`, `*_n`, `*_count`, `*_counts`, `num-examples`, and class counts implied by `prevalence` x `n`)
must be 0 or at least the site's minimum cell size. Small-cell suppression is a disclosure-control
heuristic (as in official statistics), not differential privacy: the DP guarantee covers only the
model updates and the DP-released preprocessing aggregates.

`egress_mod` wraps this guard as a Flower client mod (see `flwr.clientapp.mod`); on any violation
the reply's content is replaced by a refusal that carries no arrays or metrics, so nothing
unchecked leaves. Refusal reasons name site, record and key but never the offending value (a small
count is itself the thing being protected).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Literal

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fedward.common.audit_keys import PUBLIC_KEYS as AUDIT_KEYS
from fedward.common.config import BASELINE_FAMILIES
from fedward.common.errors import FedwardError
from fedward.common.metrics import PANEL_KEYS
from fedward.common.protocol import FEDERATED_LOGISTIC

log = logging.getLogger(__name__)

RecordKind = Literal["array", "metric", "config"]
ExpectedArrays = dict[str, tuple[tuple[int, ...], str]]

ARRAYS_RECORD = "arrays"
METRICS_RECORD = "metrics"
FEDWARD_RECORD = "fedward"
REFUSED_STATUS = "egress-refused"
NODE_CONFIG_MIN_CELL = "min-cell-size"
REPLY_MIN_CELL_KEY = "min_cell_size"

SPLIT_PREFIXES = ("", "train_", "tune_", "test_", "audit_", "eval_")
"""Prefixes under which a per-split metric panel or histogram may be reported."""

HISTOGRAM_FIELDS = ("bins", "pos_starts", "pos_counts", "neg_starts", "neg_counts")
"""Keys of `CoarseHistogram.to_record()`; released as `<split>hist_<field>`."""

COUNT_PATTERNS = (
    "n",
    "*_n",
    "n_*",
    "num-examples",
    "num_examples",
    "count",
    "counts",
    "*_count",
    "*_counts",
)
"""Keys whose values (or list elements) count people: each must be 0 or >= min cell size."""


@dataclass(frozen=True)
class RecordRule:
    """What one record name may hold: its Flower record type and its keys (exact or fnmatch)."""

    kind: RecordKind
    keys: frozenset[str] = frozenset()

    def allows(self, key: str) -> bool:
        if key in self.keys:
            return True
        return any(_is_pattern(p) and fnmatchcase(key, p) for p in self.keys)


def _is_pattern(key: str) -> bool:
    return any(ch in key for ch in "*?[")


@dataclass(frozen=True)
class AllowList:
    """Record name -> `RecordRule`. Immutable; `extended` returns a new list with more keys."""

    records: Mapping[str, RecordRule]

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", MappingProxyType(dict(self.records)))

    def extended(
        self, record: str, keys: Iterable[str], *, kind: RecordKind | None = None
    ) -> AllowList:
        """A copy that also allows `keys` in `record` (a new record needs `kind`)."""
        current = self.records.get(record)
        if current is None:
            if kind is None:
                raise ValueError(f"record '{record}' is not on the allow-list: give its kind")
            current = RecordRule(kind)
        elif kind is not None and kind != current.kind:
            raise ValueError(f"record '{record}' is a {current.kind} record, not {kind}")
        merged = dict(self.records)
        merged[record] = RecordRule(current.kind, current.keys | frozenset(keys))
        return AllowList(merged)


def _panel_keys() -> frozenset[str]:
    return frozenset(f"{p}{k}" for p in SPLIT_PREFIXES for k in PANEL_KEYS)


def _histogram_keys() -> frozenset[str]:
    return frozenset(f"{p}hist_{f}" for p in SPLIT_PREFIXES for f in HISTOGRAM_FIELDS)


_TRAINING_SCALARS = frozenset(
    {
        "num-examples",
        "loss",
        "train_loss",
        "tune_loss",
        "test_loss",
        "eval_loss",
        "steps",
        "sample_rate",
        "noise_multiplier",
        "max_grad_norm",
        "epsilon",
        "delta",
    }
)

_MIA_KEYS = frozenset(AUDIT_KEYS) | {"audit_model"}

_FEDWARD_KEYS = frozenset(
    {
        "site",
        "status",
        "reason",
        "message",
        "messages",
        "error",
        "run_id",
        "round",
        "server_round",
        "dp",
        "accountant",
        "epsilon",
        "delta",
        "epsilon_round",
        "epsilon_total",
        "epsilon_budget",
        "epsilon_remaining",
        "epsilon_tuning",  # ε of the tuning trials recorded for this dataset (composed)
        "delta_budget",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "max_grad_norm",
        "non_dp_outputs",
        "schema_fingerprint",
        "transform_fingerprint",
        "config_hash",
        "package_hash",
        "split_seed",
        "fedward_version",
        REPLY_MIN_CELL_KEY,
        "preprocessing_aggregates",  # JSON string, DP-released (noisy sums/counts)
        "training_profile",  # JSON string, counts checked inside (see _check_profile)
        # Structured refusals: what is wrong and where, never a cell value (SiteDataError.public()).
        "error_kind",
        "file",
        "column",
        "field",
        "path",
        # Evaluation bookkeeping.
        "split",
        "undefined_metrics",
        "warnings",
        "n_train",
        # The site's budget and ledger head (the coordinator checks it is never rolled back).
        "epsilon_lifetime",
        "delta_lifetime",
        "ledger_seq",
        "ledger_head",
        "dataset",
        "privacy_unit",
        "multi_row_patients",
        "attempt",
    }
)

BASELINE_SUFFIXES = (
    "status",
    "reason",
    "memorises_rows",
    "n_configurations",
    "failed_configurations",
    "fit_seconds",
    "params",
    "selection",
    "tune_auroc",
    "undefined_metrics",
    "diff_auroc",
    "diff_auroc_lo",
    "diff_auroc_hi",
    "diff_auroc_se",
    *PANEL_KEYS,
    *(f"hist_{f}" for f in HISTOGRAM_FIELDS),
)
"""Per-family keys of a site's baseline reply, released as `baseline_<family>_<suffix>`: the test
panel and histogram, the search's outcome and the paired difference to the run's model."""


def _baseline_keys() -> frozenset[str]:
    return frozenset(
        f"baseline_{family}_{suffix}"
        for family in (*BASELINE_FAMILIES, FEDERATED_LOGISTIC)
        for suffix in BASELINE_SUFFIXES
    ) | {
        "baseline_families",
        "purpose",
    }


DEFAULT_ALLOW_LIST = AllowList(
    {
        # Model weights: keys/shapes/dtypes are checked against the state the coordinator sent.
        ARRAYS_RECORD: RecordRule("array"),
        # Scalar aggregates Flower strategies read (num-examples weights FedAvg).
        METRICS_RECORD: RecordRule("metric", _TRAINING_SCALARS | _panel_keys() | _MIA_KEYS),
        # fedward's own status, privacy accounting, panels and coarsened histograms.
        FEDWARD_RECORD: RecordRule(
            "config",
            _FEDWARD_KEYS | _panel_keys() | _histogram_keys() | _MIA_KEYS | _baseline_keys(),
        ),
    }
)
"""The single allow-list shared by the ClientApp, the mod and the tests. Extend with `.extended`."""


@dataclass(frozen=True)
class EgressPolicy:
    """Limits a reply must respect; `min_cell_size` is the site's (policy.min_cell_size)."""

    min_cell_size: int = 10
    max_list_len: int = 4096
    max_str_len: int = 4000
    # DP-released payloads may be longer than free text (one entry per feature of a wide schema).
    long_text_keys: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(
            {"preprocessing_aggregates": 1_000_000, "training_profile": 1_000_000}
        )
    )
    allow_list: AllowList = DEFAULT_ALLOW_LIST
    count_patterns: tuple[str, ...] = COUNT_PATTERNS

    def __post_init__(self) -> None:
        if self.min_cell_size < 1:
            raise ValueError(f"min_cell_size must be >= 1, got {self.min_cell_size}")
        if self.max_list_len < 1 or self.max_str_len < 1:
            raise ValueError("max_list_len and max_str_len must be >= 1")

    def is_count(self, key: str) -> bool:
        return any(fnmatchcase(key, p) for p in self.count_patterns)


class EgressViolation(FedwardError):
    """A reply would let something off the allow-list leave the site; names site, record, key."""

    def __init__(self, site: str, record: str, key: str | None, reason: str) -> None:
        self.site = site
        self.record = record
        self.key = key
        self.reason = reason
        where = f"site '{site}': egress refused: record {_show(record)}"
        if key is not None:
            where += f", key {_show(key)}"
        super().__init__(f"{where}: {reason}")


def _show(name: str, limit: int = 80) -> str:
    """Quote a name for a message, truncated: a name is code-chosen, but keep it short anyway."""
    return repr(name if len(name) <= limit else name[:limit] + "...")


def expected_from_array_record(record: ArrayRecord) -> ExpectedArrays:
    """Key -> (shape, dtype) of a model state, e.g. the ArrayRecord the coordinator sent."""
    return {k: (tuple(int(d) for d in a.shape), str(a.dtype)) for k, a in record.items()}


class EgressGuard:
    """Checks a reply's RecordDict against a policy and the expected model state."""

    def __init__(self, policy: EgressPolicy, expected_arrays: ExpectedArrays | None = None) -> None:
        self.policy = policy
        self.expected_arrays = expected_arrays

    def check(self, content: RecordDict, *, site: str) -> RecordDict:
        """Return `content` unchanged if it may leave; raise EgressViolation otherwise."""
        rules = self.policy.allow_list.records
        for name, record in content.items():
            rule = rules.get(name)
            if rule is None:
                raise EgressViolation(site, name, None, "record name is not on the allow-list")
            if rule.kind == "array":
                if not isinstance(record, ArrayRecord):
                    raise EgressViolation(site, name, None, "must be an ArrayRecord")
                self._check_arrays(name, record, site)
            elif rule.kind == "metric":
                if not isinstance(record, MetricRecord):
                    raise EgressViolation(site, name, None, "must be a MetricRecord")
                self._check_scalars(name, record, rule, site)
            else:
                if not isinstance(record, ConfigRecord):
                    raise EgressViolation(site, name, None, "must be a ConfigRecord")
                self._check_scalars(name, record, rule, site)
        return content

    def _check_arrays(self, name: str, record: ArrayRecord, site: str) -> None:
        expected = self.expected_arrays
        if expected is None:
            raise EgressViolation(
                site, name, None, "no expected model state was given, so arrays cannot be checked"
            )
        for key, array in record.items():
            if key not in expected:
                raise EgressViolation(
                    site, name, key, "array is not part of the model state (could be per-sample)"
                )
            shape, dtype = expected[key]
            if tuple(array.shape) != shape:
                raise EgressViolation(
                    site, name, key, f"shape {tuple(array.shape)} differs from the model's {shape}"
                )
            if str(array.dtype) != dtype:
                raise EgressViolation(
                    site, name, key, f"dtype {array.dtype} differs from the model's {dtype}"
                )
        missing = sorted(set(expected) - set(record.keys()))
        if missing:
            raise EgressViolation(
                site, name, missing[0], f"{len(missing)} model array(s) missing from the reply"
            )

    def _check_scalars(
        self, name: str, record: MetricRecord | ConfigRecord, rule: RecordRule, site: str
    ) -> None:
        policy = self.policy
        for key, value in record.items():
            if not rule.allows(key):
                raise EgressViolation(site, name, key, "key is not on the allow-list")
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list) and len(value) > policy.max_list_len:
                raise EgressViolation(
                    site, name, key, f"list longer than the allowed {policy.max_list_len} items"
                )
            for v in values:
                if isinstance(v, bytes):
                    raise EgressViolation(site, name, key, "bytes values may not leave a site")
                limit = policy.long_text_keys.get(key, policy.max_str_len)
                if isinstance(v, str) and len(v) > limit:
                    raise EgressViolation(
                        site, name, key, f"text longer than the allowed {limit} chars"
                    )
            if policy.is_count(key):
                for v in values:
                    if _is_small(v, policy.min_cell_size):
                        raise EgressViolation(
                            site,
                            name,
                            key,
                            f"a count is below the minimum cell size {policy.min_cell_size}",
                        )
        self._check_implied_counts(name, record, site)
        if "training_profile" in record:
            self._check_profile(name, str(record["training_profile"]), site)

    def _check_profile(self, name: str, text: str, site: str) -> None:
        """A profile is JSON: hold its counts (rows, split sizes, category counts) to the minimum."""
        try:
            profile = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EgressViolation(site, name, "training_profile", "not valid JSON") from exc
        if not isinstance(profile, dict):
            raise EgressViolation(site, name, "training_profile", "not a JSON object")
        counts: list[object] = [profile.get("n_rows")]
        counts += list((profile.get("splits") or {}).values())
        for feature in (profile.get("features") or {}).values():
            if isinstance(feature, dict):
                counts += list((feature.get("categories") or {}).values())
        if any(_is_small(v, self.policy.min_cell_size) for v in counts):
            raise EgressViolation(
                site,
                name,
                "training_profile",
                f"a count is below the minimum cell size {self.policy.min_cell_size}",
            )

    def _check_implied_counts(
        self, name: str, record: MetricRecord | ConfigRecord, site: str
    ) -> None:
        """`prevalence` next to `n` releases both class counts: hold them to the same minimum."""
        for key, value in record.items():
            if not key.endswith("prevalence") or isinstance(value, list | str | bytes | bool):
                continue
            n = record.get(key[: -len("prevalence")] + "n")
            if not isinstance(n, int | float) or isinstance(n, bool):
                continue
            positives = round(float(value) * float(n))
            negatives = round(float(n)) - positives
            if _is_small(positives, self.policy.min_cell_size) or _is_small(
                negatives, self.policy.min_cell_size
            ):
                raise EgressViolation(
                    site,
                    name,
                    key,
                    "prevalence and n imply a class count below the minimum cell size "
                    f"{self.policy.min_cell_size}",
                )


def _is_small(value: object, min_cell: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 < value < min_cell


def _site_name(content: RecordDict, context: Context) -> str:
    record = content.get(FEDWARD_RECORD)
    if isinstance(record, ConfigRecord) and isinstance(record.get("site"), str):
        return str(record["site"])
    return f"node {context.node_id}"


def _min_cell_size(content: RecordDict, context: Context, default: int) -> int:
    """The node config's `min-cell-size` (else `default`), raised by the reply's value if higher.

    The node config is set by the site operator when starting the SuperNode
    (`--node-config "min-cell-size=20"`); the ClientApp handler also reports its site config's
    `policy.min_cell_size` as `fedward.min_cell_size`. The stricter (larger) one wins, so neither
    the handler nor a missing node config can lower the bar the other sets.
    """
    base = context.node_config.get(NODE_CONFIG_MIN_CELL, default)
    result = int(base) if isinstance(base, int | float) and not isinstance(base, bool) else default
    record = content.get(FEDWARD_RECORD)
    if isinstance(record, ConfigRecord):
        reported = record.get(REPLY_MIN_CELL_KEY)
        if isinstance(reported, int) and not isinstance(reported, bool):
            result = max(result, reported)
    return max(result, 1)


def refusal_content(site: str, reason: str) -> RecordDict:
    """The only content a refused reply carries: no arrays, no metrics."""
    return RecordDict(
        {FEDWARD_RECORD: ConfigRecord({"site": site, "status": REFUSED_STATUS, "reason": reason})}
    )


class EgressMod:
    """Flower client mod running `EgressGuard` on every reply (see `egress_mod`)."""

    def __init__(self, policy: EgressPolicy | None = None) -> None:
        self.policy = policy or EgressPolicy()

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        if reply.has_error() or not reply.has_content():
            return reply
        content = reply.content
        site = _site_name(content, context)
        policy = dataclasses.replace(
            self.policy,
            min_cell_size=_min_cell_size(content, context, self.policy.min_cell_size),
        )
        sent = msg.content.get(ARRAYS_RECORD) if msg.has_content() else None
        # Arrays may only echo the model the coordinator sent; none sent -> none may go back.
        expected = expected_from_array_record(sent) if isinstance(sent, ArrayRecord) else {}
        try:
            EgressGuard(policy, expected).check(content, site=site)
        except EgressViolation as exc:
            log.warning("%s", exc)
            reply.content = refusal_content(site, str(exc))
        return reply


_DEFAULT_MOD = EgressMod()


def egress_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower client mod with the default policy: `ClientApp(mods=[egress_mod])`."""
    return _DEFAULT_MOD(msg, context, call_next)


__all__ = [
    "ARRAYS_RECORD",
    "COUNT_PATTERNS",
    "DEFAULT_ALLOW_LIST",
    "FEDWARD_RECORD",
    "METRICS_RECORD",
    "REFUSED_STATUS",
    "AllowList",
    "EgressGuard",
    "EgressMod",
    "EgressPolicy",
    "EgressViolation",
    "RecordRule",
    "egress_mod",
    "expected_from_array_record",
    "refusal_content",
]
