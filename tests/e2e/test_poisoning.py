"""A hostile site in a real federation: Flower's simulation engine, the bundled heart-disease data
in four sites, fedward's real ServerApp code and ClientApp, DP-SGD with Opacus (ε = 1).

The hostile site is fedward's own ClientApp with one test-only Flower client mod around it: the
site trains honestly, then the mod rewrites the model in its train reply, after the site's egress
guard, as a compromised site could. Five federations share one simulation (Ray and its workers
start once); the mod tells them apart by the run name in the run config every train message
carries:

* ``broken`` (the four real hospitals, FedAvg, default validation): switzerland sends NaNs and
  cleveland its update scaled a hundredfold; both must be dropped every round and named in the run
  record.
* ``clean-*`` / ``poisoned-*`` (the same 920 patients split IID into four sites): ``site-2`` sends
  its update sign-flipped and scaled by ``FLIP``, small enough to pass the default bounds, so only
  the aggregation rule stands between it and the model. FedMedian (Yin et al. 2018) must keep the
  final test AUROC within 0.02 of its clean run; plain FedAvg without validation is visibly hurt.

Why IID: on the four real hospitals, which differ a lot, FedMedian does not hold 0.02 against this
attack (clean 0.781, poisoned 0.541 after 4 rounds; even a site returning the global model
unchanged moves it by 0.03): the median of four is the mean of the middle two, and one extreme
update shifts it by about half the honest sites' spread. See docs/architecture.md, "Hostile or
broken updates".

Every site's DP noise is seeded by (run seed, site, round) in simulation, so a clean and a poisoned
run differ only by the poisoning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedward.common.protocol import ARRAYS, CONFIG, KEY_RUN, REPLY, STATUS_OK
from fedward.common.run_config import RunConfig
from fedward.server.app import coordinate
from fedward.server.coordinator_settings import CoordinatorSettings

pytestmark = pytest.mark.slow

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


@pytest.fixture(scope="module")
def federations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    root = tmp_path_factory.mktemp("poisoning")
    plans = {name: _settings(root, name) for name in PLAN}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        for settings in plans.values():
            coordinate(grid, context, settings)

    run_simulation(
        server_app=server,
        client_app=hostile_client_app(),
        num_supernodes=4,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False},
        },
    )
    out: dict[str, dict[str, Any]] = {}
    for name in PLAN:
        run_dir = root / name
        assert (run_dir / "metrics.json").is_file(), f"federation {name} did not finish"
        out[name] = {
            "metrics": json.loads((run_dir / "metrics.json").read_text()),
            "record": json.loads((run_dir / "run_record.json").read_text()),
        }
    figures = {name: _auroc(run) for name, run in out.items()}
    print("\nfinal pooled test AUROC:", json.dumps(figures, indent=1))
    return out


def _auroc(run: dict[str, Any]) -> float:
    return float(run["metrics"]["test"]["pooled"]["auroc"])


def test_a_nan_site_and_a_scaled_site_are_dropped_and_named_in_the_run_record(
    federations: dict[str, dict[str, Any]],
) -> None:
    record = federations["broken"]["record"]
    left = {x["site"]: x for x in record["left_out"]}
    assert set(left) == {"switzerland", "cleveland"}
    assert left["switzerland"]["status"] == "rejected"
    nan_reason = "update from site switzerland: layer '0.weight' has 3 non-finite value(s)"
    assert nan_reason in left["switzerland"]["reason"]
    assert left["cleveland"]["status"] == "rejected"
    assert "update from site cleveland: update norm" in left["cleveland"]["reason"]
    assert "exceeds" in left["cleveland"]["reason"]
    sites = {s["site"]: s for s in record["sites"]}
    for name in ("switzerland", "cleveland"):
        assert [r["round"] for r in sites[name]["rejected_updates"]] == list(
            range(1, BROKEN_ROUNDS + 1)
        )
        assert sites[name]["epsilon"] > 0  # the site spent its budget even though it was dropped
    assert sorted(record["participating"]) == ["hungary", "va-long-beach"]
    train = federations["broken"]["metrics"]["train"]
    assert all(r["aggregated"] for r in train)  # the two honest sites carry every round
    assert 0.5 < _auroc(federations["broken"]) <= 1.0


def test_the_poisoning_update_passes_the_default_bounds(
    federations: dict[str, dict[str, Any]],
) -> None:
    """So the FedMedian figure below is the robust aggregator's doing, not the validator's."""
    sites = {s["site"]: s for s in federations["poisoned-fedmedian"]["record"]["sites"]}
    assert sites[HOSTILE]["status"] == "ok" and sites[HOSTILE]["rejected_updates"] == []
    for entry in federations["poisoned-fedmedian"]["metrics"]["train"]:
        norms = {site: panel["update_norm"] for site, panel in entry["sites"].items()}
        honest = sorted(n for site, n in norms.items() if site != HOSTILE)
        assert 2 * honest[1] < norms[HOSTILE] < 100.0  # a large update, yet inside both bounds


def test_fedmedian_keeps_the_final_auroc_within_0_02_of_the_clean_run(
    federations: dict[str, dict[str, Any]],
) -> None:
    clean = _auroc(federations["clean-fedmedian"])
    poisoned = _auroc(federations["poisoned-fedmedian"])
    assert abs(poisoned - clean) <= 0.02, (clean, poisoned)


def test_plain_fedavg_without_validation_is_visibly_hurt(
    federations: dict[str, dict[str, Any]],
) -> None:
    clean = _auroc(federations["clean-fedavg"])
    poisoned = _auroc(federations["poisoned-fedavg"])
    assert poisoned < clean - 0.1, (clean, poisoned)
