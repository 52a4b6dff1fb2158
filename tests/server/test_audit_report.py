"""The membership audit end to end in-process (real ClientApp, no Ray), its verdicts and its gauges."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import RecordDict
from prometheus_client import generate_latest
from scipy import stats

from fedward.client.app import app
from fedward.client.egress_guard import EgressGuard, EgressPolicy
from fedward.client.reply_fields import REGISTRY
from fedward.client.site_audit import record_latest
from fedward.client.site_metrics import metrics_registry
from fedward.common.audit_keys import PUBLIC_KEYS
from fedward.common.datasets.bundled import write_site_files
from fedward.common.evaluation_config import (
    AuditConfig,
    BaselinesConfig,
    EvaluationConfig,
    TuningConfig,
)
from fedward.common.learning_config import ModelConfig
from fedward.common.protocol import MSG_AUDIT, REPLY
from fedward.common.run_config import RunConfig
from fedward.common.score_histograms import score_histogram
from fedward.common.site_config import load_site_config
from fedward.server.app import coordinate
from fedward.server.audit_report import audit_report, render_html, render_markdown
from fedward.server.audit_run import audit_run_folder
from fedward.server.audit_verdict import (
    FAIL_NO_DP,
    FAIL_NO_DP_LEAK,
    PASS_WITH_LEAK_FLAG,
    VERDICTS,
    advantage_interval,
    passed,
    tpr_interval,
)
from fedward.server.coordinator_settings import CoordinatorSettings
from tests.conftest import initial_arrays, make_context, make_message, wire_config
from tests.server.loopback import LoopbackGrid, as_grid, server_context

SITES = {"cleveland", "hungary", "switzerland", "va-long-beach"}


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = RunConfig(
        rounds=3,
        model=ModelConfig(kind="mlp", hidden=[16]),
        evaluation=EvaluationConfig(bootstrap=20),
        baselines=BaselinesConfig(families=["naive_bayes"], pooled_reference=False),
        tuning=TuningConfig(budget=1),
        audit=AuditConfig(reference_models=2),
    )
    root = tmp_path_factory.mktemp("audit")
    settings = CoordinatorSettings(run=run, run_dir=str(root / "run"), engine="simulation")
    return coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings).path


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_every_released_model_is_audited_at_every_site(audited_run: Path) -> None:
    report = _json(audited_run / "audit.json")
    assert set(report["models"]) == {"run", "federated_logistic"}
    # No heart-disease audit split reaches 100 rows: the 1% FPR threshold is untested, and said so.
    assert any("1% FPR could not be measured" in c for c in report["caveats"])
    privacy = {s["site"]: s for s in _json(audited_run / "privacy_summary.json")["sites"]}
    for name, model in report["models"].items():
        assert set(model["sites"]) == SITES, name
        for site, entry in model["sites"].items():
            assert entry["status"] == "ok", (name, site, entry)
            assert {"loss", "lira_offline"} <= set(entry["attacks"])
            loss = entry["attacks"]["loss"]
            assert 0.0 <= loss["auc"] <= 1.0 and loss["auc_lo"] <= loss["auc"] <= loss["auc_hi"]
            assert entry["canary"]["epsilon_lb"] >= 0.0
            assert entry["canary"]["epsilon_max"] >= entry["canary"]["epsilon_lb"]
            # A heart-disease site's audit split cannot support TPR at 0.1% FPR, and says so.
            assert any("0.1%" in n for n in entry["notes"])
            assert entry["verdict"] in VERDICTS
            # The canary audit's counts, its ceiling and what it cannot measure, per site.
            assert entry["canary_guesses"] == entry["canary"]["guesses"] >= 2
            assert entry["canary_correct"] == (
                str(entry["canary"]["correct"])
                if entry["canary"]["correct"] is not None
                else "fewer than 10"
            )
            assert entry["canary_epsilon_max"] == entry["canary"]["epsilon_max"]
            assert any("whatever the model leaks" in c for c in entry["cannot_measure"])
            # TPR and advantage intervals over members and non-members both.
            assert loss["advantage_lo"] <= loss["advantage"] <= loss["advantage_hi"]
            assert loss["tpr_at_fpr_10_both_lo"] <= loss["tpr_at_fpr_10_both_hi"]
            assert entry["dp_guarantee"] is True
        assert set(model["pooled"]) >= {"loss", "lira_offline"}
        # The default DP run passes (possibly flagged), never with "no DP guarantee".
        assert model["dp_guarantee"] is True and passed(model["verdict"]), model["verdict"]
    assert passed(report["verdict"]) and report["dp_guarantee"] is True
    run_eps = {s: e["epsilon_accountant"] for s, e in report["models"]["run"]["sites"].items()}
    assert run_eps == {s: privacy[s]["epsilon"] for s in SITES}
    # Under DP the canary model's claimed ε is the site's mechanism's, close to the run's.
    for site, entry in report["models"]["run"]["sites"].items():
        assert entry["canary"]["epsilon_claimed"] == pytest.approx(run_eps[site], rel=0.5)
        assert not entry["flags"], entry["flags"]
    non_dp = _json(audited_run / "run_record.json")["privacy"]["non_dp_outputs"]
    assert any(o.startswith("membership audit figures") for o in non_dp)


def test_reports_are_written_for_people_and_machines(audited_run: Path) -> None:
    md = (audited_run / "audit.md").read_text()
    assert md.startswith("# Membership-inference audit") and "Verdict:" in md
    assert (
        "| site | canary guesses | correct | ε lower bound | minimum detectable leak (largest ε it could certify)"
        in md
    )
    assert "NO DP GUARANTEE" not in md
    html = (audited_run / "audit.html").read_text()
    assert (
        len(re.findall(r'<img alt="ROC of the audit at [^"]+" src="data:image/png;base64,', html))
        == 8
    )
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched


def test_a_finished_run_can_be_audited_again(audited_run: Path) -> None:
    first = _json(audited_run / "audit.json")
    (audited_run / "audit.json").unlink()
    report = audit_run_folder(as_grid(LoopbackGrid(app, 4)), server_context(), audited_run)
    again = _json(audited_run / "audit.json")
    assert set(again["models"]) == set(first["models"]) and report["verdict"] == again["verdict"]
    assert set(again["models"]["run"]["sites"]) == SITES


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run_config\.json"):
        audit_run_folder(as_grid(LoopbackGrid(app, 4)), server_context(), tmp_path)


def test_an_audit_reply_passes_the_egress_guard_and_holds_no_row_data(tmp_path: Path) -> None:
    run = RunConfig(
        rounds=1, evaluation=EvaluationConfig(bootstrap=20), audit=AuditConfig(reference_models=2)
    )
    ctx = make_context({"partition-id": 0, "num-partitions": 4})
    state = str(tmp_path / "state")
    train = RecordDict({"arrays": initial_arrays(run), "config": wire_config(run, state_dir=state)})
    trained = app(make_message(train, "train"), ctx)
    assert trained.content[REPLY]["status"] == "ok"
    content = RecordDict(
        {"arrays": trained.content["arrays"], "config": wire_config(run, state_dir=state)}
    )
    reply = app(make_message(content, MSG_AUDIT), ctx)
    info = dict(reply.content[REPLY])
    assert info["status"] == "ok", info
    EgressGuard(EgressPolicy(min_cell_size=10)).check(reply.content, site="cleveland")
    mia = {k for k in info if k.startswith("mia_")}
    assert mia and mia <= set(PUBLIC_KEYS)
    for key, value in info.items():
        if isinstance(value, list) and key != "mia_notes":
            assert len(value) <= run.audit.bins + 1, key  # bins of counts, never rows
    assert not reply.content.array_records
    assert "mia_loss_scores" not in REGISTRY and "mia_member_index" not in REGISTRY


def test_the_audit_switched_off_is_refused(tmp_path: Path) -> None:
    run = RunConfig(rounds=1, audit=AuditConfig(enabled=False))
    content = RecordDict(
        {"arrays": initial_arrays(run), "config": wire_config(run, state_dir=str(tmp_path))}
    )
    info = dict(
        app(
            make_message(content, MSG_AUDIT), make_context({"partition-id": 0, "num-partitions": 4})
        ).content[REPLY]
    )
    assert info["status"] == "refused"
    assert isinstance(info["reason"], str) and "switched off" in info["reason"]


# ---- verdicts -----------------------------------------------------------------------------------


def _info(
    auc: float, lo: float, hi: float, *, lb: float = 0.0, claimed: float | None = 1.0
) -> dict[str, Any]:
    return {
        "status": "ok",
        "mia_loss_auc": auc,
        "mia_loss_auc_lo": lo,
        "mia_loss_auc_hi": hi,
        "mia_loss_tpr_at_fpr_10": 0.2,
        "mia_canary_epsilon_lb": lb,
        "mia_canary_epsilon_claimed": claimed,
        "mia_canary_epsilon_lb_confidence": 0.95,
        "mia_notes": [],
    }


def _verdict(info: dict[str, Any], epsilon: float | None = 1.0) -> dict[str, Any]:
    return audit_report(
        AuditConfig(), {"run": {"sites": {"a": info}, "epsilon": {"a": epsilon}}}, run_id="r"
    )


def _canary(correct: int | None, guesses: int, lb: float, claimed: float | None) -> dict[str, Any]:
    return {
        "min_cell_size": 10,
        "mia_canary_n": 196,
        "mia_canary_guesses": guesses,
        "mia_canary_correct": correct,
        "mia_canary_epsilon_lb": lb,
        "mia_canary_epsilon_lb_confidence": 0.95,
        "mia_canary_epsilon_max": 2.81,
        "mia_canary_epsilon_claimed": claimed,
    }


def test_leakage_beyond_the_threshold_fails_only_when_its_interval_is_above_it() -> None:
    failed = _verdict(_info(0.9, 0.8, 0.95))
    assert failed["verdict"] == "fail"
    assert "AUC 0.900 > 0.6" in failed["models"]["run"]["failures"][0]
    noisy = _verdict(_info(0.65, 0.45, 0.8))
    assert noisy["models"]["run"]["verdict"] == "pass with warnings"
    assert _verdict(_info(0.52, 0.4, 0.63))["verdict"] == "pass"


def test_an_empirical_bound_above_the_accountant_is_flagged_as_a_probable_bug() -> None:
    report = _verdict(_info(0.52, 0.4, 0.63, lb=2.3, claimed=1.0))
    assert report["verdict"] == "fail: probable privacy bug"
    flag = report["models"]["run"]["flags"][0]
    assert "PROBABLE BUG" in flag and "2.30" in flag and "1.00" in flag
    assert "PROBABLE BUG" in render_markdown(report)


def test_a_site_that_could_not_be_audited_is_reported() -> None:
    report = audit_report(
        AuditConfig(),
        {
            "run": {
                "sites": {"a": _info(0.5, 0.4, 0.6), "b": {"status": "refused", "reason": "x"}},
                "epsilon": {"a": 1.0},
            }
        },
        run_id="r",
    )
    assert report["models"]["run"]["sites"]["b"]["verdict"] == "not audited"
    assert report["models"]["run"]["verdict"] == "pass (some sites could not be audited)"
    assert "not audited: x" in render_markdown(report)


def test_a_model_without_dp_never_passes_even_when_nothing_leaks(tmp_path: Path) -> None:
    clean = {**_info(0.5, 0.4, 0.6, claimed=None), **_canary(None, 4, 0.0, None)}
    report = _verdict(clean, epsilon=None)
    model = report["models"]["run"]
    assert report["verdict"] == model["verdict"] == FAIL_NO_DP and not passed(report["verdict"])
    assert report["dp_guarantee"] is False and model["sites"]["a"]["dp_guarantee"] is False
    assert (
        model["failures"][0].startswith("NO DP GUARANTEE")
        and "(no accountant ε at a)" in (model["failures"][0])
    )
    assert "beyond chance" in model["failures"][0] and not model["leaks"]
    assert report["headline"].startswith("FAIL: NO DP GUARANTEE.")
    md = render_markdown(report)
    assert "> **⚠ NO DP GUARANTEE" in md and "**Verdict: FAIL: NO DP GUARANTEE**" in md
    html = render_html(report, {"run": {"a": 1e-5}})
    assert '<p class="banner" id="no-dp" role="alert">NO DP GUARANTEE' in html
    assert 'class="verdict nodp" id="verdict">Verdict: fail: no DP guarantee<' in html


def test_the_terminal_ends_with_the_no_dp_verdict_and_what_was_observed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedward.server.run_console import print_audit as _print_audit

    info = {**_info(0.91, 0.86, 0.95, claimed=None), **_canary(83, 98, 1.03, None)}
    (tmp_path / "audit.json").write_text(json.dumps(_verdict(info, epsilon=None)))
    _print_audit(tmp_path)
    out = " ".join(capsys.readouterr().out.split())
    assert "Membership audit: fail: no DP guarantee, leak observed" in out
    assert "NO DP GUARANTEE: run was trained without differential privacy" in out
    assert "a: leak observed: canary attack: 83 of 98 guesses correct" in out


def test_an_overfit_model_without_dp_fails_with_what_was_observed() -> None:
    # The overfit recipe at one site: 83 of 98 canary guesses right, ε lower bound 1.03.
    info = {**_info(0.91, 0.86, 0.95, claimed=None), **_canary(83, 98, 1.03, None)}
    report = _verdict(info, epsilon=None)
    model = report["models"]["run"]
    assert report["verdict"] == FAIL_NO_DP_LEAK
    assert model["sites"]["a"]["verdict"] == FAIL_NO_DP_LEAK
    leak = "canary attack: 83 of 98 guesses correct, ε lower bound 1.03 at 95% confidence"
    assert model["leaks"][0] == f"a: {leak}"
    assert f"a: leak observed: {leak}" in model["failures"]
    assert any("AUC 0.910" in f and "above chance" in f for f in model["failures"])
    assert "83 of 98" in report["headline"] and "no DP guarantee" in report["headline"]
    assert f"a: leak observed: {leak}" in render_markdown(report)


def test_a_leak_under_dp_is_a_flag_within_the_guarantee() -> None:
    info = {**_info(0.55, 0.51, 0.6, claimed=2.0), **_canary(60, 98, 0.4, 2.0)}
    report = _verdict(info, epsilon=2.0)
    model = report["models"]["run"]
    assert report["verdict"] == model["verdict"] == PASS_WITH_LEAK_FLAG and passed(
        report["verdict"]
    )
    assert not model["failures"] and not model["flags"] and len(model["leaks"]) == 2
    assert any("would exclude chance" in c for c in report["caveats"])  # false alarms, counted
    assert "flag: leak observed within the DP guarantee: a: canary attack: 60 of 98" in (
        render_markdown(report)
    )
    # The same figures without DP fail.
    assert _verdict(info, epsilon=None)["verdict"] == FAIL_NO_DP_LEAK


def test_an_attack_below_chance_is_a_warning_not_a_leak() -> None:
    report = _verdict(_info(0.31, 0.19, 0.46))
    model = report["models"]["run"]
    assert report["verdict"] == "pass with warnings" and not model["leaks"]
    assert "miscalibrated" in model["warnings"][0]


def test_each_site_states_its_canary_guesses_its_ceiling_and_what_it_cannot_measure() -> None:
    entry = _verdict({**_info(0.5, 0.4, 0.6), **_canary(None, 4, 0.0, 3.0)}, epsilon=3.0)["models"][
        "run"
    ]["sites"]["a"]
    assert entry["canary_guesses"] == 4 and entry["canary_correct"] == "fewer than 10"
    assert entry["canary_epsilon_max"] == 2.81
    assert entry["canary_summary"].startswith("196 canaries, 4 guesses, fewer than 10 correct")
    cannot = " ".join(entry["cannot_measure"])
    assert "an ε above 2.81" in cannot
    assert "whether the accountant's ε 3.00 holds" in cannot
    assert "from 4 guesses: a bound of 0.00 is no evidence of privacy" in cannot
    md = render_markdown(_verdict({**_info(0.5, 0.4, 0.6), **_canary(None, 4, 0.0, 3.0)}, 3.0))
    assert "| a | 4 | fewer than 10 | 0.00 | 2.81 | 3.00 |" in md


def _shifted(rng: np.random.Generator, m: int, n: int, shift: float) -> tuple[float, Any]:
    """Members' scores shifted by ``shift``: the exact advantage and the coarse histogram."""
    member = np.r_[np.ones(m, dtype=bool), np.zeros(n, dtype=bool)]
    scores = np.r_[rng.normal(shift, 1, m), rng.normal(0, 1, n)]
    order = np.argsort(-scores)
    advantage = float(np.max(np.cumsum(member[order]) / m - np.cumsum(~member[order]) / n))
    ranks = (stats.rankdata(scores) - 1) / (m + n - 1)
    hist = score_histogram(member.astype(int), ranks, 20).coarsen(10).to_record()
    return advantage, hist


def test_tpr_and_advantage_intervals_cover_over_members_and_non_members() -> None:
    rng = np.random.default_rng(0)
    shift, f = 1.0, 0.1
    true_tpr = 1 - stats.norm.cdf(stats.norm.ppf(1 - f) - shift)
    true_adv = 2 * stats.norm.cdf(shift / 2) - 1
    tpr_hits = adv_hits = 0
    widths = []
    for _ in range(100):
        advantage, hist = _shifted(rng, 300, 300, shift)
        interval = tpr_interval(hist, f, 0.95)
        assert interval is not None
        tpr_hits += interval[0] <= true_tpr <= interval[1]
        widths.append(interval[1] - interval[0])
        lo, hi = advantage_interval(advantage, 300, 300, 0.95)
        adv_hits += lo <= true_adv <= hi
    assert tpr_hits >= 95 and adv_hits >= 95
    assert np.mean(widths) < 0.5  # conservative, not vacuous, at 300 + 300 rows
    # Few non-members: no threshold can be shown to have FPR <= 10%, so the lower bound is 0.
    _, small = _shifted(rng, 200, 20, 3.0)
    few = tpr_interval(small, 0.1, 0.95)
    assert few is not None and few[0] == 0.0
    # A suppressed class gives no interval rather than a members-only one.
    assert tpr_interval({**small, "neg_starts": [], "neg_counts": []}, 0.1, 0.95) is None


# ---- the site's gauges --------------------------------------------------------------------------


def test_the_latest_audit_is_served_as_prometheus_gauges(tmp_path: Path) -> None:
    (cfg,) = [
        p for p in write_site_files("heart-disease", tmp_path, seed=1) if "cleveland" in str(p)
    ]
    site = load_site_config(cfg)
    figures = {"mia_loss_auc": 0.53, "mia_loss_tpr_at_fpr_1": 0.01, "mia_canary_epsilon_lb": 0.2}
    record_latest(site.state_path, "run-1", "run", figures)
    record_latest(site.state_path, "run-1", "federated_logistic", {"mia_loss_auc": 0.51})
    text = generate_latest(metrics_registry(site, rows=lambda: 303)).decode()
    assert 'fedward_site_audit_auc{attack="loss",model="run",site="cleveland"} 0.53' in text
    assert (
        'fedward_site_audit_auc{attack="loss",model="federated_logistic",site="cleveland"} 0.51'
        in text
    )
    assert 'fedward_site_audit_epsilon_lower_bound{model="run",site="cleveland"} 0.2' in text
    # A new run's audit replaces the old run's figures.
    record_latest(site.state_path, "run-2", "run", {"mia_loss_auc": 0.6})
    text = generate_latest(metrics_registry(site, rows=lambda: 303)).decode()
    assert 'model="federated_logistic"' not in text
