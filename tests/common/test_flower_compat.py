"""Flower compatibility: the installed Flower is one fedward was tested on, and the SuperNode
shortcuts apply to it, shorten only the waits they name, and refuse loudly when Flower's code no
longer looks as expected.

If a test here fails after a Flower upgrade, fedward's use of Flower's internals no longer fits:
read fedward/common/flower_compat.py's docstring, find where the new Flower moved them, update it,
and widen TESTED_FLOWER with pyproject.toml's pin.
"""

from __future__ import annotations

import importlib
import inspect
import re
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import flwr
import pytest

from fedward.common import flower_compat
from fedward.common.flower_compat import (
    FlowerInternalsChanged,
    Shortcuts,
    UntestedFlowerVersion,
    check_flower_version,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def restored() -> Iterator[None]:
    yield
    flower_compat.restore()


def test_the_tested_range_is_the_flower_pin_of_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [d for d in project["dependencies"] if re.match(r"flwr\b", d)]
    assert len(pins) == 1, pins
    assert pins[0].split("]", 1)[-1].replace(" ", "") == flower_compat.TESTED_FLOWER


def test_the_installed_flower_is_a_tested_version() -> None:
    check_flower_version(flwr.__version__)  # raises UntestedFlowerVersion, naming the version


@pytest.mark.parametrize("version", ["1.40.2", "1.43.0", "2.0.0"])
def test_an_untested_flower_version_is_refused_by_name(version: str) -> None:
    with pytest.raises(UntestedFlowerVersion, match=re.escape(f"flwr {version} is installed")):
        check_flower_version(version)


def test_the_installed_flower_still_has_every_wait_the_shortcuts_shorten() -> None:
    flower_compat.check()  # raises FlowerInternalsChanged, naming what moved
    supernode = importlib.import_module(flower_compat.SUPERNODE_MODULE)
    source = inspect.getsource(supernode)
    # The idle poll sits in the main loop after a receive that returned nothing.
    loop = source[source.index("if run_id is None:") :]
    assert loop.index(flower_compat.IDLE_POLL) < loop.index("continue")
    assert flower_compat.IDLE_POLL in inspect.getsource(supernode.start_client_internal)
    push = inspect.getsource(supernode._push_messages)
    assert flower_compat.REPLY_WAIT in push.split("def yield_object_contents")[0]
    pulls = importlib.import_module(flower_compat.PULL_MODULE)
    assert pulls.pull_objects.__kwdefaults__[flower_compat.PULL_BACKOFF_KEY] == 1


def _supernode_time() -> object:
    return importlib.import_module(flower_compat.SUPERNODE_MODULE).time


# The shortcuts know a wait by the Flower function that sleeps and the seconds it sleeps: these
# stand-ins carry the names of Flower's functions and sleep through the patched module.


def start_client_internal(seconds: float) -> float:
    """Named as the SuperNode's main loop, whose 3 s idle poll is shortened."""
    t0 = time.monotonic()
    _supernode_time().sleep(seconds)  # type: ignore[attr-defined]
    return time.monotonic() - t0


def _push_messages(seconds: float) -> float:
    """Named as the function whose own 0.5 s wait for the ClientApp's reply is shortened."""
    t0 = time.monotonic()
    _supernode_time().sleep(seconds)  # type: ignore[attr-defined]
    return time.monotonic() - t0


def yield_object_contents(seconds: float) -> float:
    """Named as the function nested in ``_push_messages``, whose 0.5 s wait is left alone."""
    t0 = time.monotonic()
    _supernode_time().sleep(seconds)  # type: ignore[attr-defined]
    return time.monotonic() - t0


def elsewhere(seconds: float) -> float:
    t0 = time.monotonic()
    _supernode_time().sleep(seconds)  # type: ignore[attr-defined]
    return time.monotonic() - t0


def test_apply_shortens_the_named_waits_and_nothing_else(restored: None) -> None:
    flower_compat.apply(Shortcuts(idle_poll=0.02, reply_wait=0.01, pull_backoff=0.03))
    supernode = importlib.import_module(flower_compat.SUPERNODE_MODULE)
    pulls = importlib.import_module(flower_compat.PULL_MODULE)
    assert flower_compat.applied()
    assert start_client_internal(3) < 0.5
    assert _push_messages(0.5) < 0.25
    # The same lengths slept anywhere else are left alone: the object-content wait nested in
    # _push_messages, a 3 s sleep outside the idle loop; and other lengths in the named ones.
    assert yield_object_contents(0.5) >= 0.49
    assert elsewhere(3) >= 2.99
    assert _push_messages(0.2) >= 0.19
    assert elsewhere(0.2) >= 0.19
    assert supernode.time.time() == pytest.approx(time.time(), abs=1.0)
    assert pulls.pull_objects.__kwdefaults__["initial_backoff"] == 0.03
    flower_compat.restore()
    assert not flower_compat.applied() and supernode.time is time
    assert pulls.pull_objects.__kwdefaults__["initial_backoff"] == 1


def test_a_flower_whose_waits_moved_is_refused_and_left_unpatched(
    monkeypatch: pytest.MonkeyPatch, restored: None
) -> None:
    real = inspect.getsource

    def moved(obj: object) -> str:
        return real(obj).replace("time.sleep(3)", "time.sleep(IDLE)")  # type: ignore[arg-type]

    monkeypatch.setattr(flower_compat.inspect, "getsource", moved)
    with pytest.raises(FlowerInternalsChanged, match=r"has no 'time.sleep\(3\)'"):
        flower_compat.apply()
    assert not flower_compat.applied()


def test_a_wait_moved_into_another_function_is_refused(
    monkeypatch: pytest.MonkeyPatch, restored: None
) -> None:
    supernode = importlib.import_module(flower_compat.SUPERNODE_MODULE)
    monkeypatch.delattr(supernode, "_push_messages")
    with pytest.raises(FlowerInternalsChanged, match=r"has no function '_push_messages'"):
        flower_compat.apply()
    assert not flower_compat.applied()


@pytest.mark.parametrize("field", ["idle_poll", "reply_wait", "pull_backoff"])
@pytest.mark.parametrize("value", [0.0, -1.0, 60.0])
def test_shortcut_values_out_of_range_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Shortcuts(**{field: value})
