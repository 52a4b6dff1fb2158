"""SecAgg+'s masked vectors on the wire as uint32, not int64: half of a site's uplink.

Flower's ``secaggplus_mod`` reduces every masked value mod the workflow's mod range (2^32 by
default) and then sends it as int64, so half of every byte a site uploads in a SecAgg+ round is
zeros. The site narrows each masked array to uint32 after the mod has masked it (a mod around
Flower's), and the coordinator widens it back to int64 before Flower's workflow adds the vectors,
so the workflow computes on exactly the arrays it computed on before. An array holding any value
outside uint32 (a larger mod range) is left as Flower made it. Masking is untouched: only the
dtype of values already masked changes.
"""

from __future__ import annotations

from typing import cast

import numpy as np
from flwr.app import RecordDict
from flwr.common import bytes_to_ndarray, ndarray_to_bytes

from fedward.common.flower_compat import SECAGG_CONFIGS_RECORD, SECAGG_MASKED_PARAMETERS

_U32_MAX = np.iinfo(np.uint32).max


def _masked(content: RecordDict) -> list[bytes] | None:
    record = content.config_records.get(SECAGG_CONFIGS_RECORD)
    if record is None or SECAGG_MASKED_PARAMETERS not in record:
        return None
    return cast(list[bytes], record[SECAGG_MASKED_PARAMETERS])


def _narrow(raw: bytes) -> bytes:
    arr = bytes_to_ndarray(raw)
    if arr.dtype != np.int64 or (arr.size and (arr.min() < 0 or arr.max() > _U32_MAX)):
        return raw
    return ndarray_to_bytes(arr.astype(np.uint32))


def _widen(raw: bytes) -> bytes:
    arr = bytes_to_ndarray(raw)
    return ndarray_to_bytes(arr.astype(np.int64)) if arr.dtype == np.uint32 else raw


def narrow_masked_vectors(content: RecordDict) -> None:
    """At the site: the masked arrays of a SecAgg+ reply, each as uint32 where it fits."""
    masked = _masked(content)
    if masked is not None:
        content.config_records[SECAGG_CONFIGS_RECORD][SECAGG_MASKED_PARAMETERS] = [
            _narrow(b) for b in masked
        ]


def widen_masked_vectors(content: RecordDict) -> None:
    """At the coordinator: uint32 masked arrays back to the int64 Flower's workflow adds."""
    masked = _masked(content)
    if masked is not None:
        content.config_records[SECAGG_CONFIGS_RECORD][SECAGG_MASKED_PARAMETERS] = [
            _widen(b) for b in masked
        ]
