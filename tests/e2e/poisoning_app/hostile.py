"""The hostile federation of tests/e2e/test_poisoning.py as a Flower app: fedward's real ClientApp
with a test-only Flower client mod that poisons one site's train reply after its egress guard, and
a ServerApp that runs the five federations of ``PLAN`` one after another through fedward's own
``coordinate``. `flwr run` ships this folder to the simulation like any Flower app; the module
imports only fedward, Flower and numpy, as it runs inside `flwr-simulation` as top-level
``hostile``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedward.common.protocol import ARRAYS, CONFIG, KEY_RUN, REPLY, STATUS_OK
from fedward.common.run_config import RunConfig
from fedward.server.app import coordinate
from fedward.server.coordinator_settings import CoordinatorSettings

ROUNDS = 8
BROKEN_ROUNDS = 3
FLIP = 4.0  # |update| x 4: inside the default absolute (100) and relative (10 x median) bounds
HOSTILE = "site-2"
Attack = Callable[[ArrayRecord, ArrayRecord], ArrayRecord]


def _layers(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: np.array(v.numpy(), copy=True) for k, v in arrays.items()}


def _record(layers: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in layers.items()})


def nan_values(sent: ArrayRecord, trained: ArrayRecord) -> ArrayRecord:
    layers = _layers(trained)
    first = next(iter(layers))
    layers[first].reshape(-1)[:3] = np.nan
    return _record(layers)


def scaled(factor: float) -> Attack:
    """The site's own update times ``factor`` (negative: sign-flipped), added to the global model."""

    def attack(sent: ArrayRecord, trained: ArrayRecord) -> ArrayRecord:
        before, after = _layers(sent), _layers(trained)
        return _record(
            {k: (before[k] + factor * (after[k] - before[k])).astype(after[k].dtype) for k in after}
        )

    return attack


# run name -> (strategy, validation on, {site: attack})
PLAN: dict[str, tuple[str, bool, dict[str, Attack]]] = {
    "broken": ("fedavg", True, {"switzerland": nan_values, "cleveland": scaled(100.0)}),
    "clean-fedmedian": ("fedmedian", True, {}),
    "poisoned-fedmedian": ("fedmedian", True, {HOSTILE: scaled(-FLIP)}),
    "clean-fedavg": ("fedavg", True, {}),
    "poisoned-fedavg": ("fedavg", False, {HOSTILE: scaled(-FLIP)}),
}


def poisoning_mod(msg: Message, context: Context, call_next: Callable[..., Message]) -> Message:
    """Flower client mod: after the real ClientApp trained, rewrite the hostile site's model."""
    reply = call_next(msg, context)
    if msg.metadata.message_type != "train" or not reply.has_content():
        return reply
    info = reply.content.config_records.get(REPLY)
    if info is None or info.get("status") != STATUS_OK:
        return reply
    run = json.loads(str(msg.content.config_records[CONFIG][KEY_RUN]))
    attack = PLAN[run["name"]][2].get(str(info["site"]))
    if attack is not None:
        sent = msg.content.array_records[ARRAYS]
        reply.content[ARRAYS] = attack(sent, reply.content.array_records[ARRAYS])
    return reply


def hostile_client_app() -> ClientApp:
    """fedward's real ClientApp, every message type, with the poisoning mod around it."""
    from fedward.client.app import app as real

    hostile = ClientApp(mods=[poisoning_mod])

    def delegate(msg: Message, context: Context) -> Message:
        return real(msg, context)

    hostile.train()(delegate)
    hostile.evaluate()(delegate)
    hostile.query()(delegate)
    for message_type in ("evaluate.baselines", "evaluate.audit", "query.profile"):
        category, action = message_type.split(".")
        getattr(hostile, category)(action)(delegate)
    return hostile


def _settings(root: Path, name: str) -> CoordinatorSettings:
    strategy, validate, _ = PLAN[name]
    natural = name == "broken"
    run = RunConfig.model_validate(
        {
            "name": name,
            "rounds": BROKEN_ROUNDS if natural else ROUNDS,
            "seed": 7,
            "task": {} if natural else {"partition": "iid", "n_sites": 4},
            "strategy": {"name": strategy, "validation": {"enabled": validate}},
            "baselines": {"enabled": False},
            "audit": {"enabled": False},
        }
    )
    return CoordinatorSettings(
        run=run, output_dir=str(root), run_dir=str(root / name), engine="simulation"
    )


server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    root = Path(str(context.run_config["output-dir"]))
    for name in PLAN:
        coordinate(grid, context, _settings(root, name))


client_app = hostile_client_app()
