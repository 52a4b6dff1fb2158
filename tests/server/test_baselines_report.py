"""The baselines report: a whole coordinator run in-process (real ClientApp, no Ray), and its parts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fedward.client.app import app
from fedward.client.ledger import Ledger
from fedward.common.evaluation_config import (
    BaselinesConfig,
    ControlsConfig,
    EvaluationConfig,
    TuningConfig,
)
from fedward.common.learning_config import ModelConfig
from fedward.common.run_config import RunConfig
from fedward.server.app import coordinate
from fedward.server.baselines_report import (
    REPORT_JSON,
    REPORT_MD,
    combine_differences,
    render_markdown,
    verdict,
)
from fedward.server.cli import register
from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.report_baselines_collect import families_from_reply
from tests.server.loopback import LoopbackGrid, as_grid, server_context

SITES = {"cleveland", "hungary", "switzerland", "va-long-beach"}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP run with everything on: tuning, the federated logistic baseline, both controls."""
    run = RunConfig(
        rounds=2,
        model=ModelConfig(kind="mlp", hidden=[16]),
        evaluation=EvaluationConfig(bootstrap=30),
        baselines=BaselinesConfig(families=["logistic_regression", "knn", "naive_bayes"]),
        tuning=TuningConfig(budget=2, deep=True, deep_rounds=1),
        controls=ControlsConfig(label_shuffle=True, leave_one_site_out=True),
    )
    root = tmp_path_factory.mktemp("baselines")
    settings = CoordinatorSettings(run=run, run_dir=str(root / "run"), engine="simulation")
    return coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings).path


def build_app() -> typer.Typer:
    """The coordinator's commands, registered as the `fedward.cli` entry point does."""
    cli = typer.Typer()
    register(cli)
    return cli


def _report(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / REPORT_JSON).read_text())


def test_every_family_is_reported_per_site_and_pooled_with_a_difference(full_run: Path) -> None:
    report = _report(full_run)
    assert set(report["families"]) == {
        "logistic_regression",
        "knn",
        "naive_bayes",
        "federated_logistic",
    }
    for key, sec in report["families"].items():
        assert sec["pooled"]["auroc"] is not None, key
        diff = sec["difference"]
        assert diff["lo"] <= diff["difference"] <= diff["hi"], key
        assert set(sec["sites"]) == SITES, key
    knn = report["families"]["knn"]
    assert knn["memorises_rows"] is True
    for entry in knn["sites"].values():
        assert entry["n_configurations"] == 2 and entry["params"]["n_neighbors"] >= 1
    assert report["budget"] == {
        "configurations_per_family": 2,
        "search": "random",
        "run_model_configurations": 2,
        "equal": True,
        "selected_on": report["budget"]["selected_on"],
    }
    best = report["best_baseline"]
    assert best["family"] in report["families"]
    assert "never the test split" in best["selected_on"]
    assert report["verdict"].startswith("The federated model (mlp (")


def test_tuning_trials_never_read_the_test_split_and_their_spend_is_separate(
    full_run: Path,
) -> None:
    report = _report(full_run)
    tuning = report["tuning"]
    assert len(tuning["trials"]) == 2
    assert all(t["tune_auroc"] is not None for t in tuning["trials"])
    chosen = max(tuning["trials"], key=lambda t: t["tune_auroc"])["setting"]
    assert tuning["chosen"] == chosen
    run_config = json.loads((full_run / "run_config.json").read_text())
    assert run_config["training"]["learning_rate"] == pytest.approx(
        chosen["training.learning_rate"]
    )
    for k in (1, 2):
        summary = json.loads(
            (full_run / "companions" / f"tune_{k:03d}" / "summary.json").read_text()
        )
        assert summary["purpose"] == "tuning" and summary["test"] is None
    eps = report["tuning_epsilon"]
    assert set(eps) == SITES and all(e > 0 for e in eps.values())
    # Each site's ledger holds the trials as tuning runs, apart from the run itself.
    ledger = Ledger(full_run / "site-state" / "cleveland")
    purposes = {json.loads(e.note).get("purpose") for e in ledger.entries() if e.kind == "plan"}
    assert purposes == {"tuning", "run", "baseline", "control"}


def test_controls_label_shuffle_near_chance_and_one_federation_per_left_out_site(
    full_run: Path,
) -> None:
    controls = _report(full_run)["controls"]
    shuffle = controls["label_shuffle"]
    assert shuffle["pooled_auroc"] is not None and "chance 0.5" in shuffle["reading"]
    loso = controls["leave_one_site_out"]["sites"]
    assert set(loso) == SITES
    for site, row in loso.items():
        assert row["auroc_left_out"] is not None, site
        summary = json.loads(
            (
                full_run / "companions" / f"leave_out_{site.replace('-', '_')}" / "summary.json"
            ).read_text()
        )
        assert summary["left_out"] == [site]
        trained = {s["site"] for s in summary["sites"] if s["status"] == "ok"}
        assert site not in trained or set(summary["test"]["sites"]) == {site}
        assert set(summary["test"]["sites"]) == {site}


def test_pooled_reference_and_markdown_and_cli(full_run: Path) -> None:
    report = _report(full_run)
    pooled = report["pooled_reference"]
    assert pooled is not None and pooled.get("status") != "failed", pooled
    md = (full_run / REPORT_MD).read_text()
    assert report["verdict"] in md
    assert "Leave one site out" in md and "Label shuffle" in md and "Pooled reference" in md
    out = CliRunner().invoke(build_app(), ["report", "baselines", str(full_run)])
    assert out.exit_code == 0, out.output
    assert "Verdict" in out.output and "k-nearest neighbours" in out.output
    md_out = CliRunner().invoke(build_app(), ["report", "baselines", str(full_run), "--markdown"])
    assert md_out.exit_code == 0 and "# Is the run's model justified?" in md_out.output


def test_report_command_names_the_missing_file(tmp_path: Path) -> None:
    out = CliRunner().invoke(build_app(), ["report", "baselines", str(tmp_path)])
    assert out.exit_code != 0
    # The error box wraps long paths: compare without its frame and line breaks.
    text = re.sub(r"[\s│╭╮╰╯─]+", "", out.output)
    assert "baselines.json" in text and "--no-baselines" in text


# ---- the parts ----------------------------------------------------------------------------------


def test_combined_difference_is_the_row_weighted_mean_with_independent_site_errors() -> None:
    per_site: dict[str, dict[str, float | None]] = {
        "a": {"difference": 0.10, "se": 0.02},
        "b": {"difference": -0.05, "se": 0.04},
        "c": {"difference": None, "se": None},
    }
    out = combine_differences(per_site, {"a": 300, "b": 100, "c": 50}, 0.95)
    assert out is not None
    assert out["difference"] == pytest.approx(0.75 * 0.10 + 0.25 * -0.05)
    se = (0.75**2 * 0.02**2 + 0.25**2 * 0.04**2) ** 0.5
    assert out["se"] == pytest.approx(se)
    assert out["hi"] - out["difference"] == pytest.approx(1.959964 * se, rel=1e-5)
    assert out["sites"] == ["a", "b"]
    assert combine_differences({"a": {"difference": None}}, {"a": 1}, 0.95) is None


@pytest.mark.parametrize(
    ("lo", "hi", "words"),
    [
        (0.01, 0.05, "is better than"),
        (-0.05, -0.01, "is worse than"),
        (-0.02, 0.04, "is not better than"),
    ],
)
def test_verdict_says_it_plainly(lo: float, hi: float, words: str) -> None:
    best = {
        "name": "logistic regression",
        "difference": {"difference": (lo + hi) / 2, "lo": lo, "hi": hi},
    }
    text = verdict("mlp (32, relu)", best, equal_budget=True)
    assert words in text and "logistic regression" in text
    unequal = verdict("mlp (32, relu)", best, equal_budget=False)
    assert "favours the baselines" in unequal
    assert "no verdict" in verdict("mlp", None, equal_budget=True)


def test_reply_fields_unflatten_into_families() -> None:
    info = {
        "baseline_families": ["knn"],
        "baseline_knn_status": "ok",
        "baseline_knn_auroc": 0.8,
        "baseline_knn_n": 60,
        "baseline_knn_hist_bins": 20,
        "baseline_knn_diff_auroc": 0.01,
        "baseline_knn_diff_auroc_lo": -0.02,
        "baseline_knn_params": json.dumps({"n_neighbors": 5}),
        "baseline_knn_undefined_metrics": ["recall_at_fdr"],
        "baseline_federated_logistic_diff_auroc_se": 0.01,
        "baseline_hist_gradient_boosting_status": "failed",
        "n_train": 180,
    }
    out = families_from_reply(info)
    knn = out["families"]["knn"]
    assert knn["panel"] == {"auroc": 0.8, "n": 60, "recall_at_fdr": None}
    assert knn["hist"] == {"bins": 20}
    assert knn["diff"] == {"difference": 0.01, "lo": -0.02}
    assert knn["params"] == {"n_neighbors": 5}
    assert out["families"]["federated_logistic"]["diff"] == {"se": 0.01}
    assert out["families"]["hist_gradient_boosting"]["status"] == "failed"


def test_a_family_that_failed_at_a_site_is_listed_and_the_report_still_renders() -> None:
    report = {
        "verdict": "No baseline could be fitted and compared on this data; no verdict.",
        "run_model": {
            "description": "logistic regression",
            "tuned": False,
            "configurations": 1,
            "train_seconds": 3.0,
            "test": {"sites": {"a": {"auroc": 0.7}}, "pooled": {"auroc": 0.7}},
            "epsilon": {"a": 1.0},
        },
        "budget": {"configurations_per_family": 20, "search": "random", "selected_on": "tune"},
        "families": {
            "knn": {
                "name": "k-nearest neighbours",
                "where": "local",
                "memorises_rows": True,
                "sites": {"a": {"status": "failed", "reason": "the training split has one class"}},
                "pooled": None,
                "mean_tune_auroc": None,
                "fit_seconds_total": 0.0,
                "difference": None,
            }
        },
        "best_baseline": None,
        "controls": {},
        "pooled_reference": None,
        "tuning": None,
        "failures": ["a: k-nearest neighbours: the training split has one class"],
        "privacy": "Local baselines are not DP.",
    }
    md = render_markdown(report)
    assert "not fitted: the training split has one class" in md
    assert "could not be fitted" in md


def test_privacy_summary_states_the_budget_after_every_companion(full_run: Path) -> None:
    summary = json.loads((full_run / "privacy_summary.json").read_text())
    for site in summary["sites"]:
        spent = site["companion_epsilon"]
        own = "leave_out_" + site["site"].replace("-", "_")
        assert {"federated_logistic", "label_shuffle"} <= set(spent), site["site"]
        assert own not in spent  # trained without it
        assert len([k for k in spent if k.startswith("leave_out_")]) == 3
        # Lifetime ε covers the run and every companion, so it exceeds any one of them.
        assert site["epsilon_lifetime"] > max([site["epsilon"], *spent.values()])
        assert site["epsilon_tuning"] > 0
