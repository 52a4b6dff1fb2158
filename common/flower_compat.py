"""The one place fedward touches Flower's internals, checked against the Flower versions it was tested on.

Flower's public API (``flwr.app``, ``flwr.serverapp``, ``flwr.clientapp``, ``flwr.server``,
``flwr.client``) is imported where it is used. Everything else fedward needs from Flower — private
modules, underscored names, proto messages, undocumented attributes — is reached only through this
module, so a Flower upgrade has one file to read:

* the reply-polling grid's types (``NodeInfo``, ``Run``) and the in-memory grid's class;
* SecAgg+: the record and key the masked vectors travel under, the legacy workflow's state and
  record names (the coordinator's SecAgg+ stage overrides);
* FedOpt's moments (``m_t``, ``v_t``), carried in resume checkpoints;
* the SuperNode's and ClientApp's entry points and Fleet client, for the site launcher;
* the SuperLink's start-up helpers, for deploy/superlink_listeners.py;
* a message's wire form (Flower's deflated objects), its id as a SuperLink sets it, the ServerApp runtime's task
  identity (in-process grids in tests);
* the SuperNode shortcuts: three fixed waits, shortened when a site opts in (below).

On import the installed ``flwr.__version__`` is checked against :data:`TESTED_FLOWER` (the
``flwr`` pin in pyproject.toml): outside it, :class:`UntestedFlowerVersion` is raised, naming the
version, instead of fedward running on internals that may have moved.

The SuperNode shortcuts. Flower 1.41/1.42's SuperNode sleeps a fixed 3 s whenever the SuperLink
has no message for it (``start_client_internal``: ``time.sleep(3)``), polls every 0.5 s for the
ClientApp's reply (``_push_messages``: ``time.sleep(0.5)``), and retries a not-yet-uploaded object
after 1 s (``flwr.supercore.inflatable.inflatable_utils.pull_objects``'s ``initial_backoff``).
None of these has a flag or an environment variable. In a round of a few seconds they are most of
the time, so a site may opt in (``fedward-supernode --flower-shortcuts`` or
``FEDWARD_FLOWER_SHORTCUTS=1``) to shorter ones. Each wait is named by the Flower function that
sleeps and the seconds it sleeps (:data:`SHORTENED_WAITS`); a sleep of the same length anywhere
else (the 0.5 s wait for an object's content, nested inside ``_push_messages``) is left alone.
Nothing changes what is sent or when a message counts as delivered; only how long an idle loop
sleeps. Before patching, :func:`check` reads Flower's code and refuses (raising
:class:`FlowerInternalsChanged`) unless every wait is still exactly where this module expects it.
The site launcher then carries on without the shortcuts, and tests/common/test_flower_compat.py
fails, so a Flower upgrade that moves them is noticed rather than silently half-patched.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import flwr
import numpy as np
from flwr.app import Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggPlusKey
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.fedopt import FedOpt
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from packaging.specifiers import SpecifierSet
from packaging.version import Version

if TYPE_CHECKING:  # loaded on first use at run time: see _LAZY
    import flwr.compat.common.recorddict_compat as recorddict_compat
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
    from flwr.superlink.grid import InMemoryGrid

TESTED_FLOWER = ">=1.41,<1.43"
"""The Flower versions fedward's use of Flower internals was tested on: pyproject.toml's pin."""


class UntestedFlowerVersion(RuntimeError):
    """The installed Flower is outside :data:`TESTED_FLOWER`; its internals may have moved."""


def check_flower_version(version: str) -> None:
    """Raise :class:`UntestedFlowerVersion` unless ``version`` is one fedward was tested on."""
    if Version(version) not in SpecifierSet(TESTED_FLOWER):
        raise UntestedFlowerVersion(
            f"fedward was tested with flwr {TESTED_FLOWER}, but flwr {version} is installed: "
            f"install a tested version (pip install 'flwr[simulation]{TESTED_FLOWER}')"
        )


check_flower_version(flwr.__version__)


# ---- names Flower does not export publicly ------------------------------------------------------

SECAGG_CONFIGS_RECORD = RECORD_KEY_CONFIGS
"""The ConfigRecord a SecAgg+ message carries its protocol fields in."""
SECAGG_MASKED_PARAMETERS = SecAggPlusKey.MASKED_PARAMETERS
"""The field of that record holding a site's masked vectors (int64, reduced mod the mod range)."""
FEDOPT_MOMENTS = ("m_t", "v_t")
"""FedOpt's (FedAdam, FedYogi, FedAdagrad) first and second moments, kept between rounds."""


# The coordinator's SecAgg+ internals load on first use, so a site's processes never import
# Flower's legacy server workflow: name -> (module, attribute).
_LAZY = {
    "InMemoryGrid": ("flwr.superlink.grid", "InMemoryGrid"),
    "MAIN_CONFIGS_RECORD": ("flwr.server.workflow.constant", "MAIN_CONFIGS_RECORD"),
    "MAIN_PARAMS_RECORD": ("flwr.server.workflow.constant", "MAIN_PARAMS_RECORD"),
    "WorkflowKey": ("flwr.server.workflow.constant", "Key"),
    "WorkflowState": (
        "flwr.server.workflow.secure_aggregation.secaggplus_workflow",
        "WorkflowState",
    ),
    "recorddict_compat": ("flwr.compat.common.recorddict_compat", ""),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = getattr(module, attr) if attr else module
    globals()[name] = value
    return value


def is_in_memory_grid(grid: object) -> bool:
    """Whether ``grid`` is the simulation engine's in-memory grid (it polls without waiting)."""
    return type(grid).__name__ == "InMemoryGrid"


# ---- FedOpt's moments ---------------------------------------------------------------------------


def fedopt_moments(strategy: Strategy) -> dict[str, dict[str, np.ndarray]] | None:
    """FedOpt's moments by name (``m_t``, ``v_t``, those set so far); None for another strategy."""
    if not isinstance(strategy, FedOpt):
        return None
    moments: dict[str, dict[str, np.ndarray]] = {}
    for attr in FEDOPT_MOMENTS:
        value = getattr(strategy, attr)
        if value is not None:
            moments[attr] = value
    return moments


def set_fedopt_moment(strategy: Strategy, attr: str, value: dict[str, np.ndarray]) -> None:
    """Put back one of FedOpt's moments (a resumed run continues with the state it had)."""
    if attr not in FEDOPT_MOMENTS:
        raise ValueError(f"FedOpt has no moment {attr!r}; it keeps {', '.join(FEDOPT_MOMENTS)}")
    setattr(strategy, attr, value)


# ---- messages on the wire -----------------------------------------------------------------------


def wire_objects(message: Message) -> dict[str, bytes]:
    """The message as Flower 1.42 transfers it between SuperLink and SuperNode: each distinct
    object (message, records, arrays, array chunks), deflated to bytes, by its id."""
    return {oid: obj.deflate() for oid, obj in get_all_nested_objects(message).items()}


def message_from_wire(object_id: str, objects: dict[str, bytes], message_id: str) -> Message:
    """The message the other side rebuilds from :func:`wire_objects`'s output, nothing shared in
    memory; ``message_id`` as the SuperLink assigned it (a message's id is not in its objects)."""
    message = inflate_object_from_contents(object_id, dict(objects), keep_object_contents=False)
    if not isinstance(message, Message):
        raise TypeError(f"object {object_id} inflated to a {type(message).__name__}, not a Message")
    set_message_id(message, message_id)
    return message


def over_the_wire(message: Message) -> Message:
    """``message`` after a round trip through Flower's wire encoding: an encoding fault raises."""
    return message_from_wire(message.object_id, wire_objects(message), message.metadata.message_id)


def set_message_id(message: Message, message_id: str) -> None:
    """Give a message the id a SuperLink would (Flower's Metadata has no public setter)."""
    message.metadata.__dict__["_message_id"] = message_id


def set_task_identity(run_id: int, node_id: int = 0, task_id: int = 1) -> None:
    """What the ServerApp runtime sets before a strategy runs (an in-process grid has none)."""
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id
    TaskIdentity.task_id = task_id


# ---- the site's SuperNode and ClientApp processes -----------------------------------------------

CLIENTAPP_MODULES = ("flwr.supernode.cli.flwr_clientapp", "flwr.supernode.runtime.run_clientapp")
"""What a ``flwr-clientapp`` process imports: preloaded once by the site launcher's zygote."""


def run_flwr_clientapp() -> None:
    """Flower's ``flwr-clientapp`` entry point, reading ``sys.argv``."""
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    flwr_clientapp()


def run_flower_supernode() -> None:
    """Flower's ``flower-supernode`` entry point, reading ``sys.argv``."""
    from flwr.supernode.cli import flower_supernode

    flower_supernode()


def fleet_http_client() -> type | None:
    """Flower's HTTP Fleet client class (the site launcher wraps its ActivateNode); None if gone."""
    try:
        from flwr.supernode.fleet_http_client import FleetHttpClient
    except ImportError:
        return None
    return FleetHttpClient


def deactivate_node_request(node_id: int) -> Any:
    """The Fleet API's DeactivateNode request for ``node_id``."""
    from flwr.proto.fleet_pb2 import DeactivateNodeRequest

    return DeactivateNodeRequest(node_id=node_id)


# ---- the coordinator's SuperLink ----------------------------------------------------------------


def superlink_config() -> Any:
    """The SuperLink's configuration as ``flower-superlink`` parses it from ``sys.argv``."""
    from flwr.superlink.cli.flower_superlink import _parse_superlink_lifespan_config

    return _parse_superlink_lifespan_config()


def superlink_app(config: Any) -> tuple[Any, dict[str, Any]]:
    """Flower's SuperLink ASGI app for ``config``, and the uvicorn log config Flower serves it with."""
    from flwr.supercore.http_logging import get_uvicorn_log_config
    from flwr.supercore.logger import console_handler
    from flwr.superlink.cli.flower_superlink import SuperLinkLifespan
    from flwr.superlink.main import create_app

    return create_app(config, SuperLinkLifespan), get_uvicorn_log_config(console_handler.level)


# ---- the SuperNode shortcuts --------------------------------------------------------------------

SUPERNODE_MODULE = "flwr.supernode.start_client_internal"
PULL_MODULE = "flwr.supercore.inflatable.inflatable_utils"
# What Flower's source must say, verbatim, for the shortcuts to apply.
IDLE_POLL = "time.sleep(3)"
REPLY_WAIT = "time.sleep(0.5)"
IDLE_POLL_IN = "start_client_internal"
REPLY_WAIT_IN = "_push_messages"
PULL_BACKOFF_KEY = "initial_backoff"
SHORTENED_WAITS = {(IDLE_POLL_IN, 3.0): IDLE_POLL, (REPLY_WAIT_IN, 0.5): REPLY_WAIT}
"""Each wait the shortcuts shorten: (the Flower function that sleeps, seconds) -> its source."""
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
    """Stands in for the ``time`` module inside Flower's SuperNode loop: identical, except that a
    sleep made by a function :data:`SHORTENED_WAITS` names, for the seconds it names, is shorter."""

    def __init__(self, waits: dict[tuple[str, float], float]) -> None:
        super().__init__("time")
        self._waits = waits

    def sleep(self, seconds: float) -> None:
        caller = sys._getframe(1).f_code.co_name
        time.sleep(self._waits.get((caller, seconds), seconds))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _modules() -> tuple[types.ModuleType, types.ModuleType]:
    return importlib.import_module(SUPERNODE_MODULE), importlib.import_module(PULL_MODULE)


def _wait_problem(module: types.ModuleType, function: str, seconds: float, wait: str) -> str | None:
    """Why ``module.function`` does not itself make the sleep ``wait``; None when it does."""
    where = f"{SUPERNODE_MODULE}.{function}"
    fn: Callable[..., Any] | None = getattr(module, function, None)
    if fn is None or not hasattr(fn, "__code__"):
        return f"{SUPERNODE_MODULE} has no function '{function}'"
    if wait not in inspect.getsource(fn):
        return f"{where} has no '{wait}'"
    code = fn.__code__
    if seconds not in code.co_consts or "sleep" not in code.co_names:
        return f"{where} no longer sleeps {seconds:g} s in its own body"
    return None


def check() -> None:
    """Raise :class:`FlowerInternalsChanged` unless Flower's waits are where they are expected."""
    supernode, pulls = _modules()
    problems = []
    if supernode.time is not time and not isinstance(supernode.time, _ShortenedTime):
        problems.append(f"{SUPERNODE_MODULE} no longer uses the time module as 'time'")
    for (function, seconds), wait in SHORTENED_WAITS.items():
        problem = _wait_problem(supernode, function, seconds, wait)
        if problem is not None:
            problems.append(problem)
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
        {(IDLE_POLL_IN, 3.0): shortcuts.idle_poll, (REPLY_WAIT_IN, 0.5): shortcuts.reply_wait}
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


__all__ = [
    "CLIENTAPP_MODULES",
    "FEDOPT_MOMENTS",
    "MAIN_CONFIGS_RECORD",
    "MAIN_PARAMS_RECORD",
    "SECAGG_CONFIGS_RECORD",
    "SECAGG_MASKED_PARAMETERS",
    "SHORTENED_WAITS",
    "TESTED_FLOWER",
    "FlowerInternalsChanged",
    "InMemoryGrid",
    "NodeInfo",
    "Run",
    "Shortcuts",
    "UntestedFlowerVersion",
    "WorkflowKey",
    "WorkflowState",
    "applied",
    "apply",
    "check",
    "check_flower_version",
    "deactivate_node_request",
    "fedopt_moments",
    "fleet_http_client",
    "is_in_memory_grid",
    "message_from_wire",
    "over_the_wire",
    "recorddict_compat",
    "restore",
    "run_flower_supernode",
    "run_flwr_clientapp",
    "set_fedopt_moment",
    "set_message_id",
    "set_task_identity",
    "superlink_app",
    "superlink_config",
    "wire_objects",
]
