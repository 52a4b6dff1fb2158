"""The audit's verdict words, without a federation: what a leak reads like and which verdict wins."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fedward.common.evaluation_config import AuditConfig
from fedward.server import audit_verdict as av
from fedward.server.audit_report import audit_report


def test_a_bound_just_above_chance_is_never_printed_as_chance() -> None:
    # A real run's LiRA interval started at 0.50004: "[0.500, …] lies above chance" contradicts itself.
    assert av.above(0.50004, 0.5) == "0.50004"
    assert av.above(0.5531, 0.5) == "0.553"
    assert av.above(0.0004, 0.0) == "0.0004"
    (leak,) = av.attack_leaks(
        "LiRA (online)", {"auc": 0.635, "auc_lo": 0.50004, "auc_hi": 0.751}, 0.95
    )
    assert leak == (
        "LiRA (online): AUC 0.635, its 95% interval [0.50004, 0.751] lies above chance (0.5)"
    )


def test_an_interval_touching_chance_is_no_leak() -> None:
    assert av.attack_leaks("loss threshold", {"auc": 0.6, "auc_lo": 0.5, "auc_hi": 0.7}, 0.95) == []
    assert av.attack_leaks("loss threshold", {"advantage": 0.2, "advantage_lo": 0.0}, 0.95) == []


def test_without_dp_nothing_passes_and_a_leak_is_named() -> None:
    common: dict[str, Any] = {
        "attacks": True,
        "supported": True,
        "failures": [],
        "warnings": [],
        "flags": [],
    }
    assert av.site_verdict(dp=False, leaks=[], **common) == av.FAIL_NO_DP
    assert av.site_verdict(dp=False, leaks=["x"], **common) == av.FAIL_NO_DP_LEAK
    assert av.site_verdict(dp=True, leaks=["x"], **common) == av.PASS_WITH_LEAK_FLAG
    assert av.site_verdict(dp=True, leaks=[], **common) == av.PASS
    # One site without DP makes the whole model fail, whatever the others say.
    assert av.combine([av.PASS, av.FAIL_NO_DP]) == av.FAIL_NO_DP
    assert av.combine([av.PASS, av.PASS], dp=False, leak=True) == av.FAIL_NO_DP_LEAK
    assert av.combine([av.PASS_WITH_LEAK_FLAG, av.PASS]) == av.PASS_WITH_LEAK_FLAG
    assert av.combine([av.PASS, av.NOT_AUDITED]) == av.PASS_PARTIAL
    assert av.combine([av.FAIL_BUG, av.FAIL_NO_DP]) == av.FAIL_BUG
    assert not any(av.passed(v) for v in (av.FAIL_NO_DP, av.FAIL_NO_DP_LEAK, av.INCONCLUSIVE))
    assert av.verdict_class(av.FAIL_NO_DP_LEAK) == "nodp"
    assert av.verdict_class(av.PASS_WITH_LEAK_FLAG) == "flag"


def _report(sites: Mapping[str, Mapping[str, Any]], eps: dict[str, float]) -> dict[str, Any]:
    return audit_report(
        AuditConfig(),
        {"run": {"description": "the run's model (x)", "sites": sites, "epsilon": eps}},
        run_id="r",
    )


def test_a_model_no_site_audited_never_reads_as_no_leak() -> None:
    refused = {"status": "refused", "reason": "the site's ledger has no plan for this run"}
    report = _report({"cleveland": refused}, {"cleveland": 0.8})
    assert report["verdict"] == av.INCONCLUSIVE
    assert report["headline"] == (
        "INCONCLUSIVE. No site audited the run's model (x): cleveland (the site's ledger has no "
        "plan for this run)."
    )


def test_an_audit_that_measured_nothing_says_so_and_names_the_sites_left_out() -> None:
    refused = {"status": "refused", "reason": "no plan"}
    report = _report({"cleveland": {"status": "ok"}, "hungary": refused}, {"cleveland": 0.8})
    assert report["verdict"] == av.INCONCLUSIVE
    assert report["headline"] == (
        "INCONCLUSIVE. The audit of the run's model (x) measured nothing: no site could run an "
        "attack or measure a TPR at any FPR (too few audit rows; see each site's notes). "
        "Not audited: hungary (no plan)."
    )
    assert "No leak observed" not in str(report["headline"])


def test_sites_that_could_not_be_audited_stay_in_the_reports_verdict() -> None:
    flagged_partial = av.PASS_WITH_LEAK_FLAG + av.PARTIAL
    # The report's verdict is the worst of its models': the suffix is not lost on the way up.
    assert av.combine([flagged_partial]) == flagged_partial
    assert av.combine([av.PASS_PARTIAL]) == av.PASS_PARTIAL
    assert av.combine([av.PASS_PARTIAL, av.PASS]) == av.PASS_PARTIAL
    assert av.verdict_class(flagged_partial) == "flag"
    refused = {"status": "refused", "reason": "no plan"}
    report = _report({"cleveland": refused}, {"cleveland": 0.8})
    assert report["verdict"] == av.INCONCLUSIVE  # nothing audited is never a pass


def test_the_headline_puts_a_probable_bug_first_and_names_thresholds_exceeded() -> None:
    from fedward.server.audit_report import _headline

    ok = {"status": "ok"}
    bug = "a: PROBABLE BUG: the empirical ε lower bound 1.08 (at 95% confidence) exceeds …"
    model = {
        "description": "the run's model (x)",
        "dp_guarantee": True,
        "verdict": av.FAIL_BUG,
        "sites": {"a": ok},
        "flags": [bug],
        "failures": ["a: loss threshold: AUC 0.603 > 0.52 (interval from 0.5203)"],
        "leaks": ["a: canary attack: 40 of 40 guesses correct, ε lower bound 1.08"],
    }
    assert _headline(av.FAIL_BUG, {"run": model}, 0.95) == (
        f"FAIL: PROBABLE PRIVACY BUG. 1 probable privacy bug(s) in the run's model (x): {bug}. "
        "Over the run config's thresholds in the run's model (x): a: loss threshold: AUC 0.603 "
        "> 0.52 (interval from 0.5203). Leak observed in the run's model (x): a: canary attack: "
        "40 of 40 guesses correct, ε lower bound 1.08."
    )


def test_the_terminal_prints_a_dp_models_leaks_as_flags_and_the_sites_not_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedward.server.run_console import print_audit as _print_audit

    leak = "a: canary attack: 23 of 26 guesses correct, ε lower bound 0.21 at 95% confidence"
    model = {
        "dp_guarantee": True,
        "flags": [],
        "failures": [],
        "leaks": [leak],
        "sites": {"a": {"status": "ok"}, "b": {"status": "refused", "reason": "no plan"}},
    }
    report = {"verdict": av.PASS_WITH_LEAK_FLAG + av.PARTIAL, "models": {"run": model}}
    (tmp_path / "audit.json").write_text(json.dumps(report))
    _print_audit(tmp_path)
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    verdict = f"Membership audit: {av.PASS_WITH_LEAK_FLAG + av.PARTIAL}"
    flag = f"flag: leak observed within the DP guarantee: {leak}"
    assert out.index(verdict) < out.index(flag) < out.index("not audited: b: no plan")
