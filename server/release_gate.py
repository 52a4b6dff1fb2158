"""The release gate's checks: a finished run with its model and frozen preprocessing, a card and a
privacy summary that both state a DP guarantee, a passed membership audit, and a sign-off that
still matches the files. ``check_release`` lists every reason the model may not leave yet.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedward.common.preprocessing import SharedTransform
from fedward.server.release_files import CARD_HINT, read_object
from fedward.server.release_signoff import valid_signoff


@dataclass
class ReleaseCheck:
    """What the gate found: ``ok`` only when ``problems`` is empty and a sign-off is valid."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    signoff: dict[str, Any] | None = None


def _check_card(run: Path, problems: list[str]) -> dict[str, Any] | None:
    card = read_object(run / "model_card.json", CARD_HINT, problems)
    for name in ("model_card.md", "model_card.html"):
        if not (run / name).is_file():
            problems.append(f"{name} is missing: {CARD_HINT}.")
    if card is None:
        return None
    verdicts = card.get("verdicts")
    if not isinstance(verdicts, dict):
        problems.append(
            "model_card.json has no `verdicts` object: the card predates the release gate; "
            f"{CARD_HINT}."
        )
        return None
    if verdicts.get("dp_guarantee") is not True:
        problems.append(
            "model_card.json does not state a DP guarantee (verdicts.dp_guarantee is "
            f"{json.dumps(verdicts.get('dp_guarantee'))}): a model is released only when it was "
            "trained with DP and every participating site reported its ε."
        )
    return verdicts


def _check_privacy(run: Path, problems: list[str]) -> None:
    """The DP guarantee from the privacy summary itself, so a stale or edited card cannot claim it."""
    summary = read_object(
        run / "privacy_summary.json", "the run did not finish writing its privacy summary", problems
    )
    if summary is None:
        return
    if summary.get("dp") is not True:
        problems.append(
            "privacy_summary.json says the run trained without DP (dp = "
            f"{json.dumps(summary.get('dp'))}): a model trained without DP is never released."
        )
        return
    sites = [s for s in summary.get("sites") or [] if isinstance(s, dict)]
    taking_part = [s for s in sites if s.get("status") == "ok"]
    if not taking_part:
        problems.append("privacy_summary.json lists no participating site: no DP guarantee.")
    for s in taking_part:
        eps = s.get("epsilon")
        if not isinstance(eps, int | float) or isinstance(eps, bool) or not math.isfinite(eps):
            problems.append(
                f"privacy_summary.json: site '{s.get('site')}' took part but reported no finite ε "
                f"(epsilon = {json.dumps(eps)}), so the model has no DP guarantee for its data."
            )


def _check_audit(run: Path, verdicts: dict[str, Any] | None, problems: list[str]) -> None:
    audit = read_object(
        run / "audit.json",
        "the run's models were not audited; run `fedward audit RUN_DIR`",
        problems,
    )
    if audit is None:
        return
    verdict = str(audit.get("verdict") or "")
    if not verdict.startswith("pass"):
        why = {
            "inconclusive": "the audit could not show that the model resists membership "
            "inference (too few rows, or no attack could run)",
        }.get(verdict, "the membership-inference audit did not pass")
        problems.append(
            f"audit.json's verdict is '{verdict or '(none)'}': {why}; such a model is not released."
        )
        return
    if verdicts is not None and verdicts.get("audit_passed") is not True:
        problems.append(
            "model_card.json says the audit did not pass (verdicts.audit_passed is "
            f"{json.dumps(verdicts.get('audit_passed'))}) but audit.json's verdict is "
            f"'{verdict}': the card is out of date; {CARD_HINT}."
        )


def _check_model(run: Path, problems: list[str]) -> None:
    record = read_object(
        run / "run_record.json", "the run did not finish writing its record", problems
    )
    if record is not None and record.get("status") != "finished":
        problems.append(
            f"run_record.json says the run's status is '{record.get('status')}' "
            f"({record.get('stopped_reason') or 'no reason given'}): only a finished run's final "
            "model is released."
        )
    if not (run / "model.pt").is_file():
        problems.append("model.pt is missing: the run left no final model to release.")
    description = read_object(run / "model.json", "the run left no model description", problems)
    transform_data = read_object(
        run / "transform.json", "the run left no frozen preprocessing", problems
    )
    if description is None or transform_data is None:
        return
    try:
        fingerprint = SharedTransform.from_dict(transform_data).fingerprint()
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(f"transform.json is not a valid frozen transform ({exc}).")
        return
    if fingerprint != description.get("transform_fingerprint"):
        problems.append(
            f"transform.json does not match model.json: its fingerprint is {fingerprint[:12]}…, "
            "but model.json says the model was trained on the output of transform "
            f"{str(description.get('transform_fingerprint'))[:12]}…."
        )


def check_release(run_dir: str | Path) -> ReleaseCheck:
    """Every reason the run's model may not be released yet; ``ok`` when there is none.

    Needs: a finished run with its model; a card stating a DP guarantee (and a privacy summary
    that agrees); a membership audit whose verdict is a pass; a sign-off that matches the files.
    """
    run = Path(run_dir)
    if not run.is_dir():
        return ReleaseCheck(ok=False, problems=[f"{run} is not a run folder."])
    problems: list[str] = []
    _check_model(run, problems)
    verdicts = _check_card(run, problems)
    _check_privacy(run, problems)
    _check_audit(run, verdicts, problems)
    if (
        verdicts is not None
        and verdicts.get("release_ready") is not True
        and verdicts.get("dp_guarantee") is True
        and verdicts.get("audit_passed") is True
    ):
        listed = [str(p) for p in verdicts.get("problems") or []]
        problems.append(
            "model_card.json says the model is not ready for release"
            + (": " + "; ".join(listed) if listed else " (verdicts.release_ready is not true)")
            + "."
        )
    signoff, problem = valid_signoff(run)
    if problem is not None:
        problems.append(problem)
    return ReleaseCheck(ok=not problems, problems=problems, signoff=signoff)
