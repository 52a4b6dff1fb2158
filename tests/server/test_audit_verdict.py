"""The audit's verdict words, without a federation: what a leak reads like and which verdict wins."""

from __future__ import annotations

from fedward.server import audit_verdict as av


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
    common = {"attacks": True, "supported": True, "failures": [], "warnings": [], "flags": []}
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
