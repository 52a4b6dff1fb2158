"""A hostile site in a real federation: Flower's simulation engine reached through `flwr run` (as
`fedward simulate` reaches it), the bundled heart-disease data in four sites, fedward's real
ServerApp code and ClientApp, DP-SGD with Opacus (ε = 1).

The hostile site (``poisoning_app/hostile.py``, a Flower app folder) is fedward's own ClientApp
with one test-only Flower client mod around it: the
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
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from fedward.server.simulation_engine import run_app
from tests.e2e.poisoning_app.hostile import BROKEN_ROUNDS, HOSTILE, PLAN

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parent / "poisoning_app"


@pytest.fixture(scope="module")
def federations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    tmp = tmp_path_factory.mktemp("poisoning")
    root = tmp / "runs"
    app = shutil.copytree(APP, tmp / "app", ignore=shutil.ignore_patterns("__pycache__"))
    engine: set[psutil.Process] = set()  # every process the engine started, seen while it ran
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            engine.update(psutil.Process().children(recursive=True))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with (tmp / "simulation.log").open("w", encoding="utf-8") as log:
            finished = run_app(
                app,
                {"output-dir": str(root)},
                n_sites=4,
                flwr_home=tmp / "flwr-home",
                output=log,
                echo=log.write,
                verbose=False,
            )
    finally:
        done.set()
        watcher.join()
    assert finished.status == "finished:completed", (finished, tmp / "simulation.log")
    # The engine stopped all of it before returning: SuperLink, SuperExec, flwr-simulation, Ray.
    names = " ".join(p.name() for p in engine if p.is_running())
    _, left = psutil.wait_procs(list(engine), timeout=0.2)
    assert left == [], f"still running after the run: {names}"
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
