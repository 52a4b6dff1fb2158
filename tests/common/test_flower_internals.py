"""The SuperNode shortcuts: they apply to the installed Flower, shorten only the waits they name,
and refuse loudly when Flower's source no longer looks as expected.

If the first test fails after a Flower upgrade, the shortcuts no longer fit: read
fedward/common/flower_internals.py's docstring, find where the new Flower waits, and update it.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Iterator

import pytest

from fedward.common import flower_internals
from fedward.common.flower_internals import FlowerInternalsChanged, Shortcuts


@pytest.fixture
def restored() -> Iterator[None]:
    yield
    flower_internals.restore()


def test_the_installed_flower_still_has_every_wait_the_shortcuts_shorten() -> None:
    flower_internals.check()  # raises FlowerInternalsChanged, naming what moved
    supernode = importlib.import_module(flower_internals.SUPERNODE_MODULE)
    source = inspect.getsource(supernode)
    # The idle poll sits in the main loop after a receive that returned nothing.
    loop = source[source.index("if run_id is None:") :]
    assert loop.index(flower_internals.IDLE_POLL) < loop.index("continue")
    pulls = importlib.import_module(flower_internals.PULL_MODULE)
    assert pulls.pull_objects.__kwdefaults__[flower_internals.PULL_BACKOFF_KEY] == 1


def test_apply_shortens_the_named_waits_and_nothing_else(restored: None) -> None:
    flower_internals.apply(Shortcuts(idle_poll=0.02, reply_wait=0.01, pull_backoff=0.03))
    supernode = importlib.import_module(flower_internals.SUPERNODE_MODULE)
    pulls = importlib.import_module(flower_internals.PULL_MODULE)
    assert flower_internals.applied()
    t0 = time.monotonic()
    supernode.time.sleep(3)
    supernode.time.sleep(0.5)
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    supernode.time.sleep(0.2)  # a wait it does not know about is left alone
    assert time.monotonic() - t0 >= 0.19
    assert supernode.time.time() == pytest.approx(time.time(), abs=1.0)
    assert pulls.pull_objects.__kwdefaults__["initial_backoff"] == 0.03
    flower_internals.restore()
    assert not flower_internals.applied() and supernode.time is time
    assert pulls.pull_objects.__kwdefaults__["initial_backoff"] == 1


def test_a_flower_whose_waits_moved_is_refused_and_left_unpatched(
    monkeypatch: pytest.MonkeyPatch, restored: None
) -> None:
    real = inspect.getsource

    def moved(obj: object) -> str:
        return real(obj).replace("time.sleep(3)", "time.sleep(IDLE)")  # type: ignore[arg-type]

    monkeypatch.setattr(flower_internals.inspect, "getsource", moved)
    with pytest.raises(FlowerInternalsChanged, match=r"has no 'time.sleep\(3\)'"):
        flower_internals.apply()
    assert not flower_internals.applied()


@pytest.mark.parametrize("field", ["idle_poll", "reply_wait", "pull_backoff"])
@pytest.mark.parametrize("value", [0.0, -1.0, 60.0])
def test_shortcut_values_out_of_range_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Shortcuts(**{field: value})
