"""`fedward simulate` on Flower's simulation engine: sites with their own files, two of them faulty.

One federation is started for the whole module; each test reads a different part of its run folder.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from typing import Any

import pytest

from fedward.client.accounting import EPSILON_TOLERANCE
from fedward.common.datasets.bundled import write_site_files
from tests.e2e.processes import BIN

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("sim")
    configs = write_site_files("heart-disease", tmp / "sites", seed=5)
    by_name = {p.parent.name: p for p in configs}
    # switzerland declares a schema that differs from the run's: one category more for 'cp'
    swiss = by_name["switzerland"]
    schema_text = (tmp / "sites" / "schema.toml").read_text()
    schema = tomllib.loads(schema_text)
    for feat in schema["features"]:
        if feat["name"] == "cp":
            feat["categories"].append("atypical chest pain")
    import tomli_w

    (swiss.parent / "schema.toml").write_bytes(tomli_w.dumps(schema).encode())
    swiss.write_text(
        swiss.read_text().replace('schema_file = "../schema.toml"', 'schema_file = "schema.toml"')
    )
    # va-long-beach misspells the label column
    va_data = by_name["va-long-beach"].parent / "data.csv"
    lines = va_data.read_text().splitlines()
    lines[0] = lines[0].replace(",num", ",nmu")
    va_data.write_text("\n".join(lines) + "\n")

    # The defaults but for the membership audit's reference models: two instead of four, which
    # also halves `fedward audit` below (test_deployment.py audits with the default four).
    run_toml = tmp / "run.toml"
    run_toml.write_text("[audit]\nreference_models = 2\n")
    out = tmp / "runs"
    args = [str(BIN / "fedward"), "simulate", "--rounds", "2", "--out", str(out), "--seed", "5"]
    # --tune-deep: three trials of the run's model choose its settings (and spend ε on it).
    args += ["--tuning-budget", "3", "--tune-deep", "--config", str(run_toml)]
    for p in configs:
        args += ["--site-config", str(p)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    # A model, but two sites left out: not success (4), and not a failure without a model (3, 1).
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    return {"dir": run_dir, "stdout": done.stdout, "configs": by_name, "stderr": done.stderr}


def _json(run: dict[str, Any], name: str) -> Any:
    return json.loads((run["dir"] / name).read_text())


def test_faulty_sites_are_reported_and_left_out(federation: dict[str, Any]) -> None:
    left = {x["site"]: x for x in _json(federation, "run_record.json")["left_out"]}
    assert set(left) == {"switzerland", "va-long-beach"}
    swiss = left["switzerland"]
    assert swiss["status"] == "refused" and "first at column cp" in swiss["reason"]
    assert "schema differs" in swiss["reason"]
    va = left["va-long-beach"]
    assert "label column num is missing" in va["reason"]
    # The file's own header cells and its path stay at the site: its log has the close match.
    assert "nmu" not in json.dumps(va) and "data.csv" not in json.dumps(va)


def test_the_other_sites_finish_the_run(federation: dict[str, Any]) -> None:
    metrics = _json(federation, "metrics.json")
    assert set(metrics["test"]["sites"]) == {"cleveland", "hungary"}
    assert [r["round"] for r in metrics["tune"]] == [1, 2]
    assert all(r["aggregated"] for r in metrics["train"])
    assert (federation["dir"] / "checkpoints" / "round-0002.pt").is_file()


def test_run_record_lists_every_non_dp_output(federation: dict[str, Any]) -> None:
    privacy = _json(federation, "run_record.json")["privacy"]
    assert privacy["epsilon_covers"] == [
        "the tuning trials that chose the model's settings (DP-SGD)",
        "model updates (DP-SGD)",
    ]
    assert "train_loss" not in privacy["non_dp_outputs"]  # under DP it is not sent
    assert {
        "metric panel (tune)",
        "score histogram (tune)",
        "metric panel (test)",
    } <= set(privacy["non_dp_outputs"])


def test_manifest_records_what_reproduces_the_run(federation: dict[str, Any]) -> None:
    manifest = _json(federation, "manifest.json")
    assert manifest["engine"] == "simulation" and manifest["seed"] == 5
    assert len(manifest["config_hash"]) == 64
    assert {"flwr", "torch", "opacus", "fedward"} <= set(manifest["packages"])


def test_simulate_ends_with_a_table_and_the_run_folder(federation: dict[str, Any]) -> None:
    out = federation["stdout"]
    assert "Sealed test split" in out and "cleveland" in out
    assert str(federation["dir"]) in out.replace("\n", "")
    assert "switzerland left out" in out
    # The last line says what to do: which file says why the sites are out.
    last = " ".join(out.rsplit("run folder: ", 1)[1].split())
    assert "finished without 2 of 4 sites (switzerland, va-long-beach) (exit 4)" in last
    assert "'left_out' in" in last and "run_record.json" in last


def test_privacy_summary_gives_run_and_lifetime_epsilon_per_site(
    federation: dict[str, Any],
) -> None:
    summary = _json(federation, "privacy_summary.json")
    assert summary["privacy_unit"].startswith("record")
    sites = {s["site"]: s for s in summary["sites"]}
    for name in ("cleveland", "hungary"):
        s = sites[name]
        assert 0 < s["epsilon"] < s["epsilon_model"] <= 1.0 + EPSILON_TOLERANCE
        # The lifetime also holds every trial, the chosen and the others.
        assert s["epsilon_lifetime"] >= s["epsilon_model"]
        assert s["epsilon_remaining"] == pytest.approx(s["epsilon_budget"] - s["epsilon_lifetime"])
    # Simulation keeps its sites' ledgers inside the run folder: a new run starts a new budget.
    assert (federation["dir"] / "site-state" / "cleveland" / "ledger.sqlite").is_file()


def test_the_released_models_epsilon_composes_the_trials_that_chose_it(
    federation: dict[str, Any],
) -> None:
    tuning = _json(federation, "tuning.json")
    assert len(tuning["trials"]) == 3 and tuning["chosen"] is not None
    covers = _json(federation, "run_record.json")["privacy"]["epsilon_covers"]
    assert covers[0] == "the tuning trials that chose the model's settings (DP-SGD)"
    summary = _json(federation, "privacy_summary.json")
    assert "tuning trials" in summary["figures"]["epsilon_model"]
    eps = sorted(
        s["epsilon_model"] for s in summary["sites"] if s["site"] in ("cleveland", "hungary")
    )
    card = (federation["dir"] / "model_card.md").read_text()
    assert "target ε (per site, the released model)" in card
    span = f"{eps[0]:.2f}" if f"{eps[0]:.2f}" == f"{eps[1]:.2f}" else f"{eps[0]:.2f}–{eps[1]:.2f}"
    assert f"{span} at the sites that took part (composing the tuning" in card
    out = " ".join(federation["stdout"].split())
    assert "ε above: the released model's, per site (target 1.0), composing the tuning" in out


def test_pooled_figures_never_contradict_the_sites(federation: dict[str, Any]) -> None:
    test = _json(federation, "metrics.json")["test"]
    pooled, sites = test["pooled"], test["sites"]
    covered = [p for name, p in sites.items() if name not in pooled["sites_left_out"]]
    n = sum(p["n"] for p in covered)
    for key in ("accuracy", "balanced_accuracy", "brier", "ece"):
        if pooled[key] is None:
            assert pooled["omitted"][key], key  # left out, and the reason is given
            continue
        lo, hi = pooled["bounds"].get(key, (pooled[key], pooled[key]))
        assert lo - 1e-12 <= pooled[key] <= hi + 1e-12, key
    if pooled["accuracy"] is not None and all(p.get("accuracy") is not None for p in covered):
        weighted = sum(p["accuracy"] * p["n"] for p in covered) / n
        assert pooled["accuracy"] == pytest.approx(weighted, abs=1e-9)


def test_baselines_report_covers_the_sites_that_trained(federation: dict[str, Any]) -> None:
    report = _json(federation, "baselines.json")
    assert report["budget"]["configurations_per_family"] == 3
    for key, sec in report["families"].items():
        assert set(sec["sites"]) == {"cleveland", "hungary"}, key
        for entry in sec["sites"].values():
            assert entry["status"] == "ok" and entry["panel"]["auroc"] is not None, key
    assert (
        report["verdict"] in federation["stdout"].replace("\n", " ")
        or "Baselines:" in (federation["stdout"])
    )
    # The baselines' outputs are listed as non-DP outputs of the run.
    privacy = _json(federation, "run_record.json")["privacy"]
    assert any("baseline" in o for o in privacy["non_dp_outputs"])
    assert (federation["dir"] / "baselines.md").is_file()


def test_the_run_ends_with_a_membership_audit_of_what_it_would_release(
    federation: dict[str, Any],
) -> None:
    report = _json(federation, "audit.json")
    sites = report["models"]["run"]["sites"]
    assert {s for s, e in sites.items() if e["status"] == "ok"} == {"cleveland", "hungary"}
    assert "Membership audit:" in federation["stdout"]
    assert (federation["dir"] / "audit.html").is_file()


def test_fedward_audit_audits_a_finished_run_again(federation: dict[str, Any]) -> None:
    path = federation["dir"] / "audit.json"
    before = path.stat().st_mtime
    done = subprocess.run(
        [str(BIN / "fedward"), "audit", str(federation["dir"])],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert path.stat().st_mtime > before
    assert "Membership audit:" in done.stdout
    report = _json(federation, "audit.json")
    assert report["models"]["run"]["sites"]["cleveland"]["status"] == "ok"


def test_refusals_leave_no_traceback_on_the_console(federation: dict[str, Any]) -> None:
    # Ray's ClientAppActor tracebacks of the refusing site go to the run's log file instead.
    assert "Traceback" not in federation["stdout"] + federation["stderr"]
    assert "Manually terminating" not in federation["stdout"] + federation["stderr"]
    assert "Traceback" in (federation["dir"] / "simulation.log").read_text()


def test_the_sites_data_warnings_are_printed_with_their_counts(federation: dict[str, Any]) -> None:
    warnings = _json(federation, "run_record.json")["warnings"]
    assert warnings  # the bundled hospitals have clipped values and an empty column
    out = " ".join(federation["stdout"].split())
    for warning in warnings[:8]:
        assert f"warning: {' '.join(warning.split())}" in out
