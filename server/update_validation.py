"""The coordinator's check of every site's model update before it is aggregated.

A broken site (diverged training, a bug, a damaged file) or a hostile one (Byzantine poisoning,
Blanchard et al. 2017; model-replacement by a scaled update, Bagdasaryan et al. 2020) can send any
arrays. Each reply is compared with the global model the coordinator sent that round:

* the same layer names, shapes and dtypes;
* only finite values;
* an update norm ``||reply - global||_2`` within ``max_norm`` and, when at least three updates
  remain, within ``max_norm_ratio`` times the round's median update norm;
* a positive, finite training-row count (the weight FedAvg gives the site).

A reply that fails is dropped before the inner strategy aggregates it, and the site is named with
the reason (``SiteTracking`` records it in the run record). The check bounds what one update can
do; it cannot tell a plausible but poisoned update from an honest one. That is the robust
aggregators' part (Flower's FedMedian and FedTrimmedAvg, Yin et al. 2018; Krum and MultiKrum,
Blanchard et al. 2017), which the run config selects by name.

Why these bounds for DP-SGD updates: with plain SGD a site's update is the sum of its T local
steps, each at most lr x C from the clipped-gradient mean plus Gaussian noise of std
lr x sigma x C / B per coordinate, so ``||update|| <= lr·T·C + ~lr·sigma·C·sqrt(T·d)/B``. At
fedward's defaults (lr 0.5, C = 1, B = 64, one local epoch) a hospital of a few hundred rows moves
the model by a few units; an absolute bound of 100 leaves room for large sites and several local
epochs while still catching an update scaled a hundredfold or an overflow. The relative bound
adapts to whatever the run's honest sites do: sites differ in size (so in steps) by a few times,
not by ten.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message

from fedward.common.protocol import ARRAYS, METRICS
from fedward.common.strategy_config import UpdateValidationConfig

STATUS_REJECTED = "rejected"  # the coordinator dropped the site's update (its run-record status)
WEIGHT_KEY = "num-examples"  # the weight Flower's FedAvg family reads from each reply
_MIN_UPDATES_FOR_RATIO = 3  # a median of two updates is their mean: one site would move it
_SHOWN_PROBLEMS = 3


@dataclass(frozen=True)
class Screening:
    """One round's verdict: the replies that may be aggregated and why the others may not."""

    kept: list[Message]
    rejected: dict[int, str]  # node id -> reason
    norms: dict[int, float]  # node id -> update norm (finite, well-shaped updates only)
    median_norm: float | None


def update_norm(reply: ArrayRecord, reference: ArrayRecord) -> float:
    """L2 norm of the whole update ``reply - reference`` over every floating-point layer."""
    total = 0.0
    for key, ref in reference.items():
        ref_np = ref.numpy()
        if not np.issubdtype(ref_np.dtype, np.floating):
            continue
        diff = reply[key].numpy().astype(np.float64) - ref_np.astype(np.float64)
        total += float(np.dot(diff.ravel(), diff.ravel()))
    return math.sqrt(total)


def _shape(shape: Sequence[int]) -> str:
    return "(" + ",".join(str(int(s)) for s in shape) + ")"


def structural_problems(reply: ArrayRecord, reference: ArrayRecord) -> list[str]:
    """Layers missing or extra, shapes or dtypes that differ, non-finite values: what makes the
    reply no model update at all."""
    problems: list[str] = []
    missing = [k for k in reference if k not in reply]
    extra = [k for k in reply if k not in reference]
    if missing:
        problems.append("missing layer(s) " + ", ".join(repr(k) for k in missing))
    if extra:
        problems.append("unexpected layer(s) " + ", ".join(repr(k) for k in extra))
    for key, ref in reference.items():
        if key not in reply:
            continue
        got = reply[key]
        if tuple(got.shape) != tuple(ref.shape):
            problems.append(
                f"layer '{key}': shape {_shape(got.shape)} != global {_shape(ref.shape)}"
            )
            continue
        if got.dtype != ref.dtype:
            problems.append(f"layer '{key}': dtype {got.dtype} != global {ref.dtype}")
            continue
        try:
            values = got.numpy()
        except Exception as exc:  # a hostile reply's bytes need not match its declared shape
            problems.append(f"layer '{key}' cannot be read: {exc}")
            continue
        if np.issubdtype(values.dtype, np.floating):
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            if bad:
                problems.append(f"layer '{key}' has {bad} non-finite value(s)")
    return problems


def metric_problems(metrics: dict[str, object], required: Iterable[str]) -> list[str]:
    """Required training metrics present and finite; the row count (the site's weight) positive."""
    problems: list[str] = []
    for key in required:
        value = metrics.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append(f"metric '{key}' missing")
        elif not math.isfinite(value):
            problems.append(f"metric '{key}' is {value}")
        elif key == WEIGHT_KEY and value <= 0:
            problems.append(f"metric '{key}' is {value}, not a positive row count")
    return problems


class UpdateValidator:
    """Drops the updates of a round that are broken or out of bounds; see the module docstring."""

    def __init__(self, *, max_norm: float | None, max_norm_ratio: float | None) -> None:
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be positive or None, got {max_norm}")
        if max_norm_ratio is not None and not max_norm_ratio > 1:
            raise ValueError(f"max_norm_ratio must be above 1 or None, got {max_norm_ratio}")
        self.max_norm = max_norm
        self.max_norm_ratio = max_norm_ratio

    @classmethod
    def from_config(cls, cfg: UpdateValidationConfig) -> UpdateValidator | None:
        """The validator the run config asks for; None when ``strategy.validation.enabled`` is off."""
        if not cfg.enabled:
            return None
        return cls(max_norm=cfg.max_norm, max_norm_ratio=cfg.max_norm_ratio)

    def check(
        self, msg: Message, reference: ArrayRecord, metric_keys: Iterable[str] = (WEIGHT_KEY,)
    ) -> tuple[str | None, float | None]:
        """One reply on its own: (reason it cannot be aggregated or None, its update norm)."""
        content = msg.content
        if ARRAYS not in content.array_records:
            return f"no '{ARRAYS}' record in the reply", None
        metrics = content.metric_records.get(METRICS)
        problems = metric_problems(dict(metrics) if metrics is not None else {}, metric_keys)
        problems += structural_problems(content.array_records[ARRAYS], reference)
        if problems:
            shown = problems[:_SHOWN_PROBLEMS]
            if len(problems) > _SHOWN_PROBLEMS:
                shown.append(f"{len(problems) - _SHOWN_PROBLEMS} more problem(s)")
            return "; ".join(shown), None
        norm = update_norm(content.array_records[ARRAYS], reference)
        if not math.isfinite(norm):
            return f"update norm is {norm} (values too large to add up)", None
        if self.max_norm is not None and norm > self.max_norm:
            return f"update norm {norm:.1f} exceeds bound {self.max_norm:g}", norm
        return None, norm

    def screen(
        self,
        replies: Iterable[Message],
        reference: ArrayRecord,
        metric_keys: Iterable[str] = (WEIGHT_KEY,),
    ) -> Screening:
        """Every reply of a round: each on its own, then against the round's median update norm."""
        keys = tuple(metric_keys)
        rejected: dict[int, str] = {}
        norms: dict[int, float] = {}
        passed: list[Message] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            reason, norm = self.check(msg, reference, keys)
            if norm is not None:
                norms[node] = norm
            if reason is None:
                passed.append(msg)
            else:
                rejected[node] = reason
        median = None
        if len(passed) >= _MIN_UPDATES_FOR_RATIO:
            median = float(np.median([norms[m.metadata.src_node_id] for m in passed]))
        ratio = self.max_norm_ratio
        limit = ratio * median if ratio is not None and median is not None and median > 0 else None
        kept: list[Message] = []
        for msg in passed:
            node = msg.metadata.src_node_id
            if limit is not None and norms[node] > limit:
                rejected[node] = (
                    f"update norm {norms[node]:.1f} exceeds {ratio:g} x the round's median "
                    f"update norm {median:.3g}"
                )
                continue
            kept.append(msg)
        return Screening(kept=kept, rejected=rejected, norms=norms, median_norm=median)
