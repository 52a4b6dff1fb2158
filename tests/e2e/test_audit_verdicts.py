"""Audit verdicts that mean something, on real `fedward simulate` runs (issue 18, item 3).

A model deliberately overfit without DP (MLP 256-256, Adam, batch 16, 10 local epochs) must FAIL
its membership audit with "no DP guarantee, leak observed" everywhere a person reads the verdict:
audit.json, audit.md, audit.html, the card's headline and the terminal's last lines. The default
DP run must still pass. Both federations are started once per session (tests/e2e/conftest.py).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from fedward.server import audit_verdict as av
from tests.e2e.conftest import FinishedRun

pytestmark = pytest.mark.slow

SITES = {"cleveland", "hungary", "switzerland", "va-long-beach"}
RED = "\x1b[31m"  # rich's "red" under FORCE_COLOR
GREEN = "\x1b[32m"


def _json(run: FinishedRun, name: str) -> Any:
    return json.loads((run.dir / name).read_text(encoding="utf-8"))


def _canary_leak(entry: dict[str, Any]) -> str:
    """The leak line a site's canary figures must produce, rebuilt from audit.json's figures."""
    c = entry["canary"]
    return (
        f"canary attack: {c['correct']} of {c['guesses']} guesses correct, ε lower bound "
        f"{c['epsilon_lb']:.2f} at {c['epsilon_lb_confidence']:.0%} confidence"
    )


class _ById(HTMLParser):
    """The class attribute and text of the elements with an id (enough for audit.html's top)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, dict[str, str]] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.found[a["id"] or ""] = {"class": a.get("class") or "", "text": ""}
            self._open.append(a["id"] or "")
        elif self._open:
            self._open.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for name in self._open:
            if name:
                self.found[name]["text"] += data


def _html_ids(run: FinishedRun) -> dict[str, dict[str, str]]:
    parser = _ById()
    parser.feed((run.dir / "audit.html").read_text(encoding="utf-8"))
    return parser.found


# ---- the overfit model without DP fails -------------------------------------------------------


def test_the_recipe_memorises_its_training_rows(overfit_run: FinishedRun) -> None:
    # Not a failed run: a model came out, from every site.
    assert overfit_run.returncode == 0, overfit_run.stdout[-3000:]
    train = _json(overfit_run, "metrics.json")["train"]
    assert len(train) == 12
    losses = [r["pooled"]["train_loss"] for r in train]
    # Memorisation: the training loss falls by more than two thirds, under 0.12.
    assert losses[-1] < 0.12 and losses[-1] < losses[0] / 3, losses
    assert _json(overfit_run, "run_config.json")["privacy"]["dp"] is False


def test_audit_json_fails_the_model_without_dp_with_the_leaks_it_saw(
    overfit_run: FinishedRun,
) -> None:
    report = _json(overfit_run, "audit.json")
    assert report["verdict"] == av.FAIL_NO_DP_LEAK == "fail: no DP guarantee, leak observed"
    assert not av.passed(report["verdict"])
    assert report["dp_guarantee"] is False
    model = report["models"]["run"]
    assert model["verdict"] == av.FAIL_NO_DP_LEAK and model["dp_guarantee"] is False
    # The first failure says why, names every site without an accountant ε, and counts the leaks.
    assert model["failures"][0] == (
        f"NO DP GUARANTEE: {model['description']} was trained without differential privacy (no "
        "accountant ε at cleveland, hungary, switzerland, va-long-beach); nothing bounds what it "
        f"reveals about its training rows; observed: {len(model['leaks'])} leak(s), listed below"
    )
    sites = model["sites"]
    assert set(sites) == SITES
    canary_leaks = 0
    for name, entry in sites.items():
        assert entry["status"] == "ok", (name, entry)
        assert entry["dp_guarantee"] is False and entry["epsilon_accountant"] is None
        # No site of a model without DP passes, leak or not.
        assert entry["verdict"] == (av.FAIL_NO_DP_LEAK if entry["leaks"] else av.FAIL_NO_DP)
        # Under no DP every leak is a failure, never a flag.
        assert [f"leak observed: {x}" for x in entry["leaks"]] == entry["failures"][
            : len(entry["leaks"])
        ]
        if entry["canary"]["epsilon_lb"] > 0:
            assert entry["leaks"][0] == _canary_leak(entry)
            canary_leaks += 1
    # The canary attack itself separated members: most sites certify a positive ε lower bound.
    assert canary_leaks >= 3, {s: e["canary"] for s, e in sites.items()}
    what = model["description"]
    assert report["headline"].startswith(
        f"FAIL: NO DP GUARANTEE, LEAK OBSERVED. {what[0].upper()}{what[1:]} has no DP guarantee "
        f"(trained without DP). Leak observed in {what}: {model['leaks'][0]}"
    )


def test_each_site_states_its_canary_guesses_and_what_it_cannot_measure(
    overfit_run: FinishedRun,
) -> None:
    for name, e in _json(overfit_run, "audit.json")["models"]["run"]["sites"].items():
        c = e["canary"]
        guesses, correct, lb, top = c["guesses"], c["correct"], c["epsilon_lb"], c["epsilon_max"]
        assert e["canary_guesses"] == guesses and e["canary_correct"] == str(correct), name
        assert guesses > 0 and 0 <= correct <= guesses and 0 <= lb < top, (name, c)
        assert e["canary_epsilon_max"] == top
        assert e["canary_summary"] == (
            f"{c['n']} canaries, {guesses} guesses, {correct} correct: ε lower bound {lb:.2f} "
            f"at 95% confidence; the largest ε this site's size could certify (its minimum detectable leak) is {top:.2f}"
        )
        assert e["cannot_measure"][0] == (
            f"an ε above {top:.2f}, whatever the model leaks (all guesses right)"
        )


def test_audit_md_says_no_dp_guarantee_first_and_lists_every_leak(
    overfit_run: FinishedRun,
) -> None:
    md = (overfit_run.dir / "audit.md").read_text(encoding="utf-8")
    report = _json(overfit_run, "audit.json")
    lines = md.splitlines()
    assert lines[2].startswith("> **⚠ NO DP GUARANTEE: a model this audit covers was trained")
    assert lines[4].startswith("**Verdict: FAIL: NO DP GUARANTEE, LEAK OBSERVED** (")
    assert f"**{report['headline']}**" in lines
    model = report["models"]["run"]
    assert f"## {model['description']}: fail: no DP guarantee, leak observed" in lines
    assert f"- **{model['failures'][0]}**" in lines
    for leak in model["leaks"]:
        site, what = leak.split(": ", 1)
        assert f"- {site}: leak observed: {what}" in lines
    # Never offered as a flag "within the DP guarantee": there is none.
    assert "within the DP guarantee" not in md
    for site, e in model["sites"].items():
        c = e["canary"]
        row = f"| {site} | {c['guesses']} | {c['correct']} | {c['epsilon_lb']:.2f} | "
        row += f"{c['epsilon_max']:.2f} | none (no DP) |"
        assert any(line.startswith(row) for line in lines), row


def test_audit_html_shows_the_red_no_dp_state(overfit_run: FinishedRun) -> None:
    ids = _html_ids(overfit_run)
    assert ids["no-dp"]["class"] == "banner"
    assert ids["no-dp"]["text"].startswith("NO DP GUARANTEE: a model this audit covers")
    assert ids["verdict"] == {
        "class": "verdict nodp",
        "text": "Verdict: fail: no DP guarantee, leak observed",
    }
    assert ids["headline"]["class"] == "nodp"
    assert ids["headline"]["text"] == _json(overfit_run, "audit.json")["headline"]
    html = (overfit_run.dir / "audit.html").read_text(encoding="utf-8")
    # The red of the no-DP state is in the page's own style sheet (the browser test renders it).
    assert re.search(r"\.nodp \{ background: #c00; color: #fff;", html)
    assert "flag: leak observed within the DP guarantee" not in html


def test_the_card_headline_fails_the_model(overfit_run: FinishedRun) -> None:
    card = _json(overfit_run, "model_card.json")
    assert next(iter(card)) == "warnings"  # what is wrong comes first
    assert card["warnings"][0].startswith("NO DIFFERENTIAL PRIVACY: this model was trained without")
    audit_warning = (
        "AUDIT FAILED (verdict: fail: no DP guarantee, leak observed): the released model did "
        "not pass its membership-inference audit. NO DP GUARANTEE: "
    )
    assert card["warnings"][1].startswith(audit_warning)
    assert card["verdicts"]["dp_guarantee"] is False
    assert card["verdicts"]["audit_passed"] is False
    assert card["verdicts"]["release_ready"] is False
    assert (
        "the membership-inference audit's verdict is 'fail: no DP guarantee, leak observed'"
        in card["verdicts"]["problems"]
    )
    md = (overfit_run.dir / "model_card.md").read_text(encoding="utf-8").splitlines()
    assert md[0].startswith("> **⚠ WARNING: NO DIFFERENTIAL PRIVACY:")
    assert md[2].startswith(f"> **⚠ WARNING: {audit_warning}")
    headline = next(line for line in md if line.startswith("**DP guarantee:"))
    assert headline.startswith(
        "**DP guarantee: no · membership audit passed: no (fail: no DP guarantee, leak observed)"
    )
    assert md.index(headline) < md.index("## Privacy")


def test_the_terminal_ends_with_the_failure_in_red(overfit_run: FinishedRun) -> None:
    raw = overfit_run.raw_stdout
    tail = overfit_run.stdout.rsplit("Membership audit:", 1)[1]
    # The audit's block is the last thing before the card, the run folder and the closing line.
    assert len(tail.splitlines()) <= 40, tail
    assert tail.split("\n", 1)[0].strip() == "fail: no DP guarantee, leak observed"
    assert f"{RED}fail: no DP guarantee, leak observed" in raw
    words = " ".join(tail.split())
    model = _json(overfit_run, "audit.json")["models"]["run"]
    assert " ".join(model["failures"][0].split()) in words
    for leak in model["leaks"]:
        site, what = leak.split(": ", 1)
        assert f"{site}: leak observed: {what}" in words, leak
    assert re.search(r"Model card: \S+model_card\.html run folder: ", words)
    # The very last line, which a script or a hurried reader sees, says it is not releasable.
    last = " ".join(overfit_run.stdout.rsplit("run folder: ", 1)[1].split())
    assert "NOT RELEASABLE: its membership audit did not pass (fail: no DP guarantee" in last


# ---- the default DP run passes ----------------------------------------------------------------


def test_the_default_dp_run_passes_its_audit(dp_run: FinishedRun) -> None:
    assert dp_run.returncode == 0, dp_run.stdout[-3000:]
    report = _json(dp_run, "audit.json")
    assert report["verdict"] == av.PASS and report["dp_guarantee"] is True
    assert report["headline"] == (
        "PASS. No leak observed in the run's model (logistic regression) (it has a DP guarantee)."
    )
    model = report["models"]["run"]
    assert model["verdict"] == av.PASS and model["failures"] == [] and model["leaks"] == []
    for name, e in model["sites"].items():
        assert e["verdict"] == av.PASS and e["dp_guarantee"] is True, name
        assert 0 < e["epsilon_accountant"] <= 1.0, name
        c = e["canary"]
        # A DP model's canaries barely move: the bound is 0 and the report says what that is worth.
        assert c["epsilon_lb"] == 0.0, (name, c)
        worth = (
            f"much at all from {c['guesses']} guesses"
            if c["guesses"] < 100
            else "a leak too small to reject ε = 0"
        )
        assert f"{worth}: a bound of 0.00 is no evidence of privacy" in e["cannot_measure"], name
    assert set(model["sites"]) == SITES
    ids = _html_ids(dp_run)
    assert "no-dp" not in ids and ids["verdict"]["class"] == "verdict pass"


def test_the_dp_card_and_terminal_say_pass(dp_run: FinishedRun) -> None:
    card = _json(dp_run, "model_card.json")
    assert card["verdicts"]["dp_guarantee"] is True and card["verdicts"]["audit_passed"] is True
    assert not any("AUDIT" in w or "DIFFERENTIAL" in w for w in card["warnings"])
    md = (dp_run.dir / "model_card.md").read_text(encoding="utf-8")
    assert "**DP guarantee: yes · membership audit passed: yes (pass) · release: " in md
    tail = dp_run.stdout.rsplit("Membership audit:", 1)[1]
    assert tail.split("\n", 1)[0].strip() == "pass"
    assert f"{GREEN}pass" in dp_run.raw_stdout
    assert RED not in dp_run.raw_stdout.rsplit("Membership audit:", 1)[1].split("caveat")[0]
