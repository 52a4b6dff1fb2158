"""What an audit's figures mean for a model: intervals over members and non-members, observed
leaks, what a site's canary audit could and could not measure, and the verdicts.

A verdict states two things a privacy officer signs on: whether the model carries a DP guarantee
(a finite accountant ε at every audited site) and whether an attack observed a leak.

- Without a DP guarantee a model never passes: its verdict is "fail: no DP guarantee" and, when an
  attack observed a leak, "fail: no DP guarantee, leak observed", with what was observed.
- A **leak is observed** when a canary ε lower bound is above 0 at the audit's confidence, or an
  attack's interval excludes chance: its AUC interval excludes 0.5, its TPR-at-FPR-f interval lies
  above f, or its advantage interval lies above 0. Without DP that is a failure; with DP it is a
  flag ("pass with flag: leak observed within the DP guarantee") unless a threshold or the
  accountant's ε is exceeded, which fail as before.

Intervals computed here account for members and non-members both (the sites' own TPR intervals
count only members):

- **TPR at FPR f** (Neyman-Pearson umbrella, Tong, Feng & Li 2018): the k-th highest non-member
  score has a true FPR above f with probability P[Binomial(n, f) ≤ k − 1], whatever the scores'
  distribution; a threshold above it therefore has a true FPR of at most f, and the members above
  it give a Clopper-Pearson lower bound on the TPR at FPR f. The upper bound is the mirror image.
  Counts come from the coarse histogram the site released: a threshold inside a merged group is
  bounded by the group's edges, always on the conservative side. Each of the four one-sided
  statements is at (1 − confidence) / 4.
- **advantage** (the largest TPR − FPR over thresholds): one-sided Dvoretzky-Kiefer-Wolfowitz
  bands (Massart's constant) on the members' and the non-members' empirical curves, which hold at
  every threshold at once and so cover the threshold the attack picked; each at (1 − confidence) / 4.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

from scipy import stats

from fedward.common.audit_keys import FPR_LEVELS, fpr_label

PASS = "pass"
PASS_WITH_WARNINGS = "pass with warnings"
PASS_WITH_LEAK_FLAG = "pass with flag: leak observed within the DP guarantee"
PARTIAL = " (some sites could not be audited)"
PASS_PARTIAL = "pass" + PARTIAL
FAIL = "fail"
FAIL_BUG = "fail: probable privacy bug"
FAIL_NO_DP = "fail: no DP guarantee"
FAIL_NO_DP_LEAK = "fail: no DP guarantee, leak observed"
INCONCLUSIVE = "inconclusive"
NOT_AUDITED = "not audited"

VERDICTS = (
    FAIL_BUG,
    FAIL_NO_DP_LEAK,
    FAIL_NO_DP,
    FAIL,
    INCONCLUSIVE,
    NOT_AUDITED,
    PASS_WITH_LEAK_FLAG,
    PASS_WITH_WARNINGS,
    PASS_PARTIAL,
    PASS,
)
"""Every verdict, worst first."""

DEFAULT_MIN_CELL = 10


def passed(verdict: str) -> bool:
    """Whether a verdict lets a model be released (a pass, possibly with warnings or a flag)."""
    return verdict.startswith("pass")


def verdict_class(verdict: str) -> str:
    """The CSS class of a verdict: nodp and fail are red, flag and inconclusive amber."""
    if "no DP guarantee" in verdict:
        return "nodp"
    if verdict.startswith("fail"):
        return "fail"
    if verdict == PASS_WITH_LEAK_FLAG or "leak observed" in verdict:
        return "flag"
    if verdict.startswith("pass"):
        return "pass"
    return "inconclusive"


def finite(x: Any) -> TypeGuard[float]:
    """A real number, not a bool, not NaN or infinite."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# ---- intervals over members and non-members ----------------------------------------------------


def _groups(hist: Mapping[str, Any], side: str) -> list[tuple[int, int, int]]:
    """(start, end, count) per released group; a group spans [start, end)."""
    starts = [int(s) for s in hist.get(f"{side}_starts") or []]
    counts = [int(c) for c in hist.get(f"{side}_counts") or []]
    if not starts:
        return []
    ends = [*starts[1:], int(hist["bins"])]
    return list(zip(starts, ends, counts, strict=True))


def threshold_counts(hist: Mapping[str, Any], side: str) -> tuple[list[int], list[int], int] | None:
    """For each threshold "rank bin ≥ b", b = 0..bins: (at least, at most) rows above it, total.

    Exact where b is a group edge; inside a merged group the group counts toward the upper bound
    only. None when the class was suppressed (no groups released).
    """
    if hist.get("bins") is None:
        return None
    groups = _groups(hist, side)
    if not groups:
        return None
    bins = int(hist["bins"])
    lo = [sum(c for s, _, c in groups if s >= b) for b in range(bins + 1)]
    hi = [sum(c for _, e, c in groups if e > b) for b in range(bins + 1)]
    return lo, hi, sum(c for _, _, c in groups)


def _cp_lower(k: int, n: int, a: float) -> float:
    return 0.0 if k <= 0 else float(stats.beta.ppf(a, k, n - k + 1))


def _cp_upper(k: int, n: int, a: float) -> float:
    return 1.0 if k >= n else float(stats.beta.ppf(1.0 - a, k + 1, n - k))


def tpr_interval(
    hist: Mapping[str, Any], fpr: float, confidence: float
) -> tuple[float, float] | None:
    """An interval for the true TPR at FPR ``fpr`` that counts members and non-members both.

    None when the histogram lacks a class. The lower bound is 0 when the non-members are too few
    to place a threshold whose true FPR is at most ``fpr`` with confidence; the upper bound is 1
    when they are too few to place one whose true FPR is at least ``fpr``.
    """
    pos = threshold_counts(hist, "pos")
    neg = threshold_counts(hist, "neg")
    if pos is None or neg is None:
        return None
    tp_lo, tp_hi, m = pos
    fp_lo, fp_hi, n = neg
    if m < 1 or n < 1:
        return None
    a = (1.0 - confidence) / 4.0
    # Lower: the largest k with P[Binomial(n, f) <= k - 1] <= a.
    lower = 0.0
    k = int(stats.binom.ppf(a, n, fpr))  # smallest x with cdf(x) >= a
    while k >= 0 and stats.binom.cdf(k, n, fpr) > a:
        k -= 1
    if k >= 0:  # thresholds with at most k non-members above them have true FPR <= f
        best = max(tp_lo[b] for b in range(len(fp_hi)) if fp_hi[b] <= k)
        lower = _cp_lower(best, m, a)
    # Upper: the smallest j with P[Binomial(n, f) >= j] <= a.
    upper = 1.0
    j = int(stats.binom.isf(a, n, fpr)) + 1
    while j > 1 and stats.binom.sf(j - 2, n, fpr) <= a:
        j -= 1
    if j <= n:
        eligible = [b for b in range(len(fp_lo)) if fp_lo[b] >= j]
        if eligible:
            upper = _cp_upper(min(tp_hi[b] for b in eligible), m, a)
    return lower, max(upper, lower)


def dkw_epsilon(n: int, a: float) -> float:
    """One-sided DKW band half-width (Massart): sup(F_n − F) > ε with probability ≤ a."""
    return math.sqrt(math.log(1.0 / a) / (2.0 * n))


def advantage_interval(
    advantage: float, n_members: int, n_nonmembers: int, confidence: float
) -> tuple[float, float]:
    """An interval for the attack's true advantage max(TPR − FPR) over members and non-members."""
    a = (1.0 - confidence) / 4.0
    width = dkw_epsilon(n_members, a) + dkw_epsilon(n_nonmembers, a)
    return max(0.0, advantage - width), min(1.0, advantage + width)


def class_sizes(
    hist: Mapping[str, Any] | None, info_members: Any, info_nonmembers: Any
) -> tuple[int | None, int | None]:
    """Members and non-members: the histogram's totals, else the site's released counts."""
    m = int(info_members) if finite(info_members) else None
    n = int(info_nonmembers) if finite(info_nonmembers) else None
    if hist:
        pos, neg = threshold_counts(hist, "pos"), threshold_counts(hist, "neg")
        m = pos[2] if pos is not None else m
        n = neg[2] if neg is not None else n
    return m, n


def both_sides(
    attack: Mapping[str, Any], n_members: Any, n_nonmembers: Any, confidence: float
) -> dict[str, float | None]:
    """Intervals over members and non-members for one attack's TPRs and advantage.

    Keys ``tpr_at_fpr_<f>_both_lo/_hi``, ``advantage_lo/_hi``; None where not computable.
    """
    hist = attack.get("hist")
    m, n = class_sizes(hist, n_members, n_nonmembers)
    out: dict[str, float | None] = {}
    for f in FPR_LEVELS:
        key = f"tpr_at_fpr_{fpr_label(f)}"
        interval = (
            tpr_interval(hist, f, confidence) if hist and attack.get(key) is not None else None
        )
        out[key + "_both_lo"], out[key + "_both_hi"] = interval or (None, None)
    adv = attack.get("advantage")
    if finite(adv) and m and n:
        out["advantage_lo"], out["advantage_hi"] = advantage_interval(float(adv), m, n, confidence)
    else:
        out["advantage_lo"] = out["advantage_hi"] = None
    return out


# ---- what was observed -------------------------------------------------------------------------


def _pct(f: float) -> str:
    return f"{f * 100:g}%"


def above(x: float, chance: float) -> str:
    """A lower bound above ``chance`` with enough decimals to show it: a bound of 0.5003 printed
    as 0.500 would read as chance itself."""
    for digits in range(3, 10):
        text = f"{x:.{digits}f}"
        if float(text) > chance:
            return text
    return repr(x)


def attack_leaks(name: str, r: Mapping[str, Any], confidence: float) -> list[str]:
    """Every interval of one attack that excludes chance, in words."""
    out: list[str] = []
    conf = f"{confidence:.0%}"
    auc, lo, hi = r.get("auc"), r.get("auc_lo"), r.get("auc_hi")
    if finite(auc) and finite(lo) and finite(hi) and lo > 0.5:
        out.append(
            f"{name}: AUC {auc:.3f}, its {conf} interval [{above(lo, 0.5)}, {hi:.3f}] lies above "
            "chance (0.5)"
        )
    for f in FPR_LEVELS:
        key = f"tpr_at_fpr_{fpr_label(f)}"
        tlo = r.get(key + "_both_lo")
        if finite(tlo) and tlo > f and finite(r.get(key)):
            out.append(
                f"{name}: TPR at {_pct(f)} FPR {r[key]:.3f}, at least {above(tlo, f)} ({conf}, "
                f"members and non-members), above chance ({f:g})"
            )
    alo = r.get("advantage_lo")
    if finite(alo) and alo > 0 and finite(r.get("advantage")):
        out.append(
            f"{name}: advantage {r['advantage']:.3f}, at least {above(alo, 0.0)} ({conf}), above "
            "chance (0)"
        )
    return out


def below_chance(name: str, r: Mapping[str, Any], confidence: float) -> str | None:
    """A warning when an attack's whole AUC interval lies below 0.5: the attack is miscalibrated.

    Not counted as a leak: only an attacker who chose to invert the attack after seeing the result
    would gain, and LiRA's site-local reference models are known to do this (see the guide).
    """
    auc, lo, hi = r.get("auc"), r.get("auc_lo"), r.get("auc_hi")
    if not (finite(auc) and finite(lo) and finite(hi)) or hi >= 0.5:
        return None
    return (
        f"{name}: AUC {auc:.3f}, its {confidence:.0%} interval [{lo:.3f}, {hi:.3f}] lies below "
        "chance: the attack is miscalibrated at this site (members score lower than "
        "non-members); not counted as a leak"
    )


def correct_text(canary: Mapping[str, Any], min_cell: int) -> str:
    """Correct guesses as released, or "fewer than N" when the site withheld a small count."""
    correct = canary.get("correct")
    return str(int(correct)) if finite(correct) else f"fewer than {min_cell}"


def canary_leak(canary: Mapping[str, Any] | None, min_cell: int) -> str | None:
    """The canary audit's leak in words when its lower bound is above 0, else None."""
    if not canary or not finite(canary.get("epsilon_lb")) or canary["epsilon_lb"] <= 0:
        return None
    conf = canary.get("epsilon_lb_confidence")
    return (
        f"canary attack: {correct_text(canary, min_cell)} of {canary.get('guesses')} guesses "
        f"correct, ε lower bound {canary['epsilon_lb']:.2f}"
        + (f" at {float(conf):.0%} confidence" if finite(conf) else "")
    )


def canary_statement(
    canary: Mapping[str, Any] | None, epsilon: float | None, min_cell: int
) -> tuple[str, list[str]]:
    """(what the canary audit measured, what it cannot measure), in words."""
    if not canary:
        return (
            "no canary audit ran at this site (see its notes)",
            ["no canary audit: no empirical ε lower bound for this site"],
        )
    guesses = canary.get("guesses")
    lb, top = canary.get("epsilon_lb"), canary.get("epsilon_max")
    conf = canary.get("epsilon_lb_confidence")
    conf_text = f" at {float(conf):.0%} confidence" if finite(conf) else ""
    n = canary.get("n")
    n_text = str(n) if finite(n) else f"fewer than {min_cell}"
    text = (
        f"{n_text} canaries, {guesses} guesses, {correct_text(canary, min_cell)} correct: "
        f"ε lower bound {lb:.2f}{conf_text}"
        if finite(lb)
        else f"{n_text} canaries, {guesses} guesses: no bound"
    )
    cannot: list[str] = []
    if finite(top):
        text += f"; the largest ε this site's size could certify (its minimum detectable leak) is {top:.2f}"
        cannot.append(f"an ε above {top:.2f}, whatever the model leaks (all guesses right)")
        if finite(epsilon) and float(top) <= float(epsilon):
            cannot.append(
                f"whether the accountant's ε {float(epsilon):.2f} holds: it is above that ceiling"
            )
    if finite(lb) and lb <= 0:
        cannot.append(
            f"much at all from {guesses} guesses: a bound of 0.00 is no evidence of privacy"
            if finite(guesses) and guesses < 100
            else "a leak too small to reject ε = 0: a bound of 0.00 is no evidence of privacy"
        )
    return text, cannot


# ---- verdicts ----------------------------------------------------------------------------------


def site_verdict(
    *,
    dp: bool,
    attacks: bool,
    supported: bool,
    failures: Sequence[str],
    warnings: Sequence[str],
    flags: Sequence[str],
    leaks: Sequence[str],
) -> str:
    """One audited site's verdict for one model."""
    if flags:
        return FAIL_BUG
    if not dp:
        return FAIL_NO_DP_LEAK if leaks or failures else FAIL_NO_DP
    if failures:
        return FAIL
    if not attacks or not supported:
        return INCONCLUSIVE
    if leaks:
        return PASS_WITH_LEAK_FLAG
    return PASS_WITH_WARNINGS if warnings else PASS


def combine(verdicts: Iterable[str], *, dp: bool = True, leak: bool = False) -> str:
    """A model's verdict from its sites' (or the report's from its models').

    ``dp``: whether the model has a DP guarantee; ``leak``: whether any site observed a leak.
    """
    vs = set(verdicts)
    if FAIL_BUG in vs:
        return FAIL_BUG
    leak = leak or any("leak observed" in v for v in vs)
    if not dp or any("no DP guarantee" in v for v in vs):
        return FAIL_NO_DP_LEAK if leak or FAIL in vs else FAIL_NO_DP
    if any(v.startswith("fail") for v in vs):
        return FAIL
    passing = {v for v in vs if passed(v)}
    if not passing:
        return INCONCLUSIVE
    # A model's "(some sites could not be audited)" carries up to the report's verdict.
    partial = passing != vs or any(v.endswith(PARTIAL) for v in vs)
    if leak:
        return PASS_WITH_LEAK_FLAG + (PARTIAL if partial else "")
    if partial:
        return PASS_PARTIAL
    return PASS if vs == {PASS} else PASS_WITH_WARNINGS


def no_dp_statement(description: str, sites: Sequence[str], leaks: Sequence[str]) -> str:
    """The failure line of a model without a DP guarantee: why, and what was observed."""
    where = f" (no accountant ε at {', '.join(sites)})" if sites else ""
    observed = (
        f"observed: {len(leaks)} leak(s), listed below"
        if leaks
        else "observed: no attack separated members from non-members beyond chance at these "
        "sizes, which does not make the model private"
    )
    return (
        f"NO DP GUARANTEE: {description} was trained without differential privacy{where}; "
        f"nothing bounds what it reveals about its training rows; {observed}"
    )


def min_cell_of(info: Mapping[str, Any]) -> int:
    value = info.get("min_cell_size")
    return int(value) if finite(value) and value >= 1 else DEFAULT_MIN_CELL


def expected_false_alarms(n_intervals: int, confidence: float) -> float:
    """How many of ``n_intervals`` intervals would exclude chance with nothing leaking at all."""
    return n_intervals * (1.0 - confidence)


def count_intervals(sites: Mapping[str, Mapping[str, Any]]) -> int:
    """The intervals and bounds a model's leak check looked at (for the false-alarm caveat)."""
    total = 0
    for s in sites.values():
        for r in (s.get("attacks") or {}).values():
            total += sum(
                1
                for k in (
                    "auc_lo",
                    "advantage_lo",
                    *(f"tpr_at_fpr_{fpr_label(f)}_both_lo" for f in FPR_LEVELS),
                )
                if finite(r.get(k))
            )
        if s.get("canary") and finite((s.get("canary") or {}).get("epsilon_lb")):
            total += 1
    return total
