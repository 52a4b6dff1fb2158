"""SecAgg+ masked vectors narrowed to uint32 at the site and widened back at the coordinator."""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, RecordDict
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedward.common.secagg_wire import narrow_masked_vectors, widen_masked_vectors


def _reply(arrays: list[np.ndarray]) -> RecordDict:
    masked = [ndarray_to_bytes(a) for a in arrays]
    return RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.MASKED_PARAMETERS: masked})})


def _masked(content: RecordDict) -> list[bytes]:
    return list(content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS])  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        hnp.arrays(
            np.int64,
            hnp.array_shapes(min_dims=1, max_dims=3, max_side=20),
            elements=st.integers(0, 2**32 - 1),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_the_coordinator_adds_exactly_the_arrays_flower_made(arrays: list[np.ndarray]) -> None:
    content = _reply(arrays)
    narrow_masked_vectors(content)
    assert all(bytes_to_ndarray(b).dtype == np.uint32 for b in _masked(content))
    widen_masked_vectors(content)
    back = [bytes_to_ndarray(b) for b in _masked(content)]
    assert all(b.dtype == np.int64 for b in back)
    assert all(np.array_equal(a, b) for a, b in zip(arrays, back, strict=True))


def test_a_masked_model_uploads_about_half_the_bytes() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 2**32, size=(1024, 64), dtype=np.int64)]
    content = _reply(arrays)
    before = sum(len(b) for b in _masked(content))
    narrow_masked_vectors(content)
    after = sum(len(b) for b in _masked(content))
    assert after < 0.51 * before


def test_values_beyond_uint32_are_sent_as_flower_made_them() -> None:
    arrays = [np.array([0, 2**32], dtype=np.int64), np.array([-1, 5], dtype=np.int64)]
    content = _reply(arrays)
    original = _masked(content)
    narrow_masked_vectors(content)
    assert _masked(content) == original
    widen_masked_vectors(content)
    assert _masked(content) == original


def test_replies_without_masked_vectors_are_untouched() -> None:
    content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({"stage": "setup"})})
    narrow_masked_vectors(content)
    widen_masked_vectors(content)
    assert dict(content.config_records[RECORD_KEY_CONFIGS]) == {"stage": "setup"}
    empty = RecordDict()
    narrow_masked_vectors(empty)
    assert not empty.config_records
