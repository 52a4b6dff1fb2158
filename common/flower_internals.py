"""The only place fedward touches Flower's internals: three fixed waits of the SuperNode, shortened.

Flower 1.41/1.42's SuperNode sleeps a fixed 3 s whenever the SuperLink has no message for it
(``flwr.supernode.start_client_internal``: ``time.sleep(3)``), polls every 0.5 s for the
ClientApp's reply (``time.sleep(0.5)``), and retries a not-yet-uploaded object after 1 s
(``flwr.supercore.inflatable.inflatable_utils.pull_objects``'s ``initial_backoff``). None of
these has a flag or an environment variable. In a round of a few seconds they are most of the
time, so a site may opt in (``fedward-supernode --flower-shortcuts`` or
``FEDWARD_FLOWER_SHORTCUTS=1``) to shorter ones.

Nothing here changes what is sent or when a message counts as delivered; only how long an idle
loop sleeps. Before patching, :func:`check` reads Flower's source and refuses (raising
:class:`FlowerInternalsChanged`) unless every wait is still exactly where this module expects it.
The site launcher then carries on without the shortcuts, and tests/common/test_flower_internals.py
fails, so a Flower upgrade that moves them is noticed rather than silently half-patched.
"""

from __future__ import annotations

import inspect
import time
import types
from dataclasses import dataclass
from typing import Any

SUPERNODE_MODULE = "flwr.supernode.start_client_internal"
PULL_MODULE = "flwr.supercore.inflatable.inflatable_utils"
# What Flower's source must say, verbatim, for the shortcuts to apply.
IDLE_POLL = "time.sleep(3)"
REPLY_WAIT = "time.sleep(0.5)"
PULL_BACKOFF_KEY = "initial_backoff"
_original_backoff: list[float] = []


class FlowerInternalsChanged(RuntimeError):
    """Flower no longer looks the way the shortcuts expect; they were not applied."""


@dataclass(frozen=True)
class Shortcuts:
    """The waits, in seconds, used in place of Flower's fixed 3 s, 0.5 s and 1 s."""

    idle_poll: float = 0.5
    reply_wait: float = 0.1
    pull_backoff: float = 0.05

    def __post_init__(self) -> None:
        for name in ("idle_poll", "reply_wait", "pull_backoff"):
            value = getattr(self, name)
            if not 0.01 <= value <= 10:
                raise ValueError(f"Shortcuts.{name} must be between 0.01 and 10 s, got {value}")


class _ShortenedTime(types.ModuleType):
    """Stands in for the ``time`` module inside Flower's SuperNode loop: identical, except that the
    two fixed sleeps this module knows about are shorter."""

    def __init__(self, waits: dict[float, float]) -> None:
        super().__init__("time")
        self._waits = waits

    def sleep(self, seconds: float) -> None:
        time.sleep(self._waits.get(seconds, seconds))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _modules() -> tuple[types.ModuleType, types.ModuleType]:
    import importlib

    return importlib.import_module(SUPERNODE_MODULE), importlib.import_module(PULL_MODULE)


def check() -> None:
    """Raise :class:`FlowerInternalsChanged` unless Flower's waits are where they are expected."""
    supernode, pulls = _modules()
    problems = []
    source = inspect.getsource(supernode)
    if supernode.time is not time and not isinstance(supernode.time, _ShortenedTime):
        problems.append(f"{SUPERNODE_MODULE} no longer uses the time module as 'time'")
    for wait in (IDLE_POLL, REPLY_WAIT):
        if wait not in source:
            problems.append(f"{SUPERNODE_MODULE} has no '{wait}'")
    defaults = getattr(pulls.pull_objects, "__kwdefaults__", None) or {}
    if PULL_BACKOFF_KEY not in defaults:
        problems.append(f"{PULL_MODULE}.pull_objects has no keyword '{PULL_BACKOFF_KEY}'")
    if problems:
        raise FlowerInternalsChanged(
            "the SuperNode shortcuts do not fit this Flower version: " + "; ".join(problems)
        )


def apply(shortcuts: Shortcuts | None = None) -> Shortcuts:
    """Shorten the waits in this process (the SuperNode, and ClientApps forked from it)."""
    shortcuts = shortcuts or Shortcuts()
    check()
    supernode, pulls = _modules()
    supernode.time = _ShortenedTime(  # type: ignore[attr-defined]
        {3: shortcuts.idle_poll, 0.5: shortcuts.reply_wait}
    )
    if not _original_backoff:
        _original_backoff.append(pulls.pull_objects.__kwdefaults__[PULL_BACKOFF_KEY])
    pulls.pull_objects.__kwdefaults__[PULL_BACKOFF_KEY] = shortcuts.pull_backoff
    return shortcuts


def applied() -> bool:
    supernode, _ = _modules()
    return isinstance(supernode.time, _ShortenedTime)


def restore() -> None:
    """Undo :func:`apply` (tests)."""
    supernode, pulls = _modules()
    supernode.time = time  # type: ignore[attr-defined]
    if _original_backoff:
        pulls.pull_objects.__kwdefaults__[PULL_BACKOFF_KEY] = _original_backoff[0]
