"""The model card's judgements: the release gate's verdicts, caveats, trade-offs, the ethics
register's entries checked against what ran, and the sign-off and release state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedward.common.card_config import CardConfig
from fedward.server.companions import LOSO_PREFIX
from fedward.server.pooled_metrics import n_weighted, pooled_coverage
from fedward.server.privacy_figures import trained_rounds_text
from fedward.server.release_files import SIGNOFFS_FILE
from fedward.server.release_signoff import signoff_signature_problem
from fedward.server.report_card_sections import PANEL_METRICS, model_epsilon_scope, model_epsilons
from fedward.server.report_format import finite

# The release line's states, in the order a model moves through them.
RELEASE_STATES = ("not eligible", "eligible for sign-off", "signed off", "released")
# Claims an ethics entry can make that only some runs make true, and the control behind each.
_DP_CLAIM = re.compile(r"\bDP\b|DP-SGD|differential(ly)?[ -]priva", re.IGNORECASE)
_CONTROL_CLAIMS = {
    "leave_one_site_out": (
        re.compile(r"leave[- ]one[- ]site[- ]out", re.IGNORECASE),
        "leave-one-site-out evaluation did not run for this run",
    ),
    "label_shuffle": (
        re.compile(r"label[- ]shuffl|shuffled labels|permuted labels", re.IGNORECASE),
        "the label-shuffle control did not run for this run",
    ),
}
# The release line's states, in the order a model moves through them.


def card_verdicts(
    privacy: Mapping[str, Any], record: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The release gate's three answers and every reason against release; also the top warnings."""
    problems: list[str] = []
    warnings: list[str] = []
    taking_part = [s for s in privacy["sites"] if s.get("status") == "ok"]
    no_eps = [s["site"] for s in taking_part if not finite(s.get("epsilon"))]
    if not privacy["dp"]:
        text = (
            "NO DIFFERENTIAL PRIVACY: this model was trained without DP, so it carries no "
            "privacy guarantee for the patients it was trained on; it must not be released."
        )
        warnings.append(text)
        problems.append("the run trained without differential privacy")
    elif not taking_part:
        problems.append("no site took part, so there is no DP guarantee to state")
        warnings.append("No site took part in the run: the model has no DP guarantee.")
    elif no_eps:
        problems.append(f"no finite ε reported by {', '.join(no_eps)}: no DP guarantee there")
        warnings.append(
            f"NO DP GUARANTEE for {', '.join(no_eps)}: the site(s) took part but reported no ε."
        )
    dp_guarantee = bool(privacy["dp"]) and bool(taking_part) and not no_eps
    audit = privacy["audit"]
    audit_passed: bool | None
    if not audit["done"]:
        audit_passed = None
        problems.append("no membership-inference audit: audit.json is missing")
        warnings.append(
            "NOT AUDITED: no membership-inference audit was done for this run "
            "(audit.json is missing); run `fedward audit RUN_DIR`."
        )
    else:
        audit_passed = bool(audit["passed"])
        verdict = audit["verdict"]
        if "probable privacy bug" in verdict or audit["flags"]:
            warnings.append(
                f"AUDIT FAILED (verdict: {verdict}): an attack measured more leakage than the "
                "accountant's ε allows; the training did not add the noise it claims, or the "
                "accounting is wrong. Do not use or release this model."
                + "".join(f" {f}." for f in audit["flags"])
            )
            problems.append(f"the membership-inference audit's verdict is '{verdict}'")
        elif not audit_passed:
            warnings.append(
                f"AUDIT {'FAILED' if verdict.startswith('fail') else 'NOT PASSED'} (verdict: "
                f"{verdict}): the released model did not pass its membership-inference audit."
                + "".join(f" {f}." for f in audit["failures"])
            )
            problems.append(f"the membership-inference audit's verdict is '{verdict}'")
    if record.get("status") != "finished":
        problems.append(f"the run's status is '{record.get('status')}', not 'finished'")
    verdicts = {
        "dp_guarantee": dp_guarantee,
        "audit_passed": audit_passed,
        "release_ready": dp_guarantee and audit_passed is True and not problems,
        "problems": problems,
    }
    return verdicts, warnings


def card_caveats(
    card_cfg: CardConfig,
    files_: Mapping[str, Any],
    test: Mapping[str, Any],
    privacy: Mapping[str, Any],
) -> list[str]:
    """The run config's caveats, then what the run itself shows the model cannot claim."""
    record = files_["run_record.json"]
    out = list(card_cfg.caveats)
    out.append(
        "The predictions are statistical associations learnt from the sites' records, not "
        "causal effects: they do not say what would happen to a patient under a treatment."
    )
    sites = record.get("participating") or sorted(test.get("sites") or {})
    out.append(
        f"Validated only at the sites that took part ({', '.join(sites)}), on their sealed test "
        "splits; performance at any other hospital is unknown."
    )
    by_site = {s.get("site"): s for s in privacy["sites"]}
    for left in record.get("left_out") or []:
        rounds = (by_site.get(left.get("site")) or {}).get("trained_rounds") or []
        if rounds:
            bound = (by_site.get(left.get("site")) or {}).get("epsilon_bound")
            eps = (
                f" Its ε is at least {bound['at_least']:.2f} and at most {bound['at_most']:g}: "
                f"{bound['reason']}."
                if bound
                else ""
            )
            out.append(
                f"Site {left.get('site')} trained {trained_rounds_text(rounds)}, then "
                f"{left.get('status')} ({left.get('reason')}): its data shaped the model in "
                f"those rounds, but the model was not validated on its test split.{eps}"
            )
            continue
        out.append(
            f"Site {left.get('site')} did not take part ({left.get('status')}: "
            f"{left.get('reason')}): the model was neither trained nor validated on its data."
        )
    hists = test.get("histograms") or {}
    for site, h in sorted(hists.items()):
        if h and (not h.get("pos_counts") or not h.get("neg_counts")):
            out.append(
                f"At {site} one class of the test split is smaller than the minimum cell size, "
                "so its histogram was suppressed: pooled figures leave that site out and its "
                "ROC, precision-recall and calibration curves are not drawn."
            )
    wide = [
        site
        for site, p in sorted((test.get("sites") or {}).items())
        if finite((p or {}).get("auroc_lo"))
        and finite((p or {}).get("auroc_hi"))
        and p["auroc_hi"] - p["auroc_lo"] > 0.2
    ]
    if wide:
        out.append(
            f"Small test splits at {', '.join(wide)}: their AUROC intervals are wider than 0.2, "
            "so their point estimates say little."
        )
    if test.get("pooled"):
        out.append(
            "Pooled figures come from the sites' coarsened score histograms (no interval): an "
            "approximation at bin resolution, never computed from raw scores."
        )
        out += pooled_omissions(test["pooled"], test.get("histograms") or {})
    if privacy["audit"]["done"]:
        out += [f"Audit: {c}." for c in privacy["audit"]["caveats"]]
    out += [f"Run warning: {w}" for w in record.get("warnings") or []]
    if privacy["dp"] and any(s.get("multi_row_patients") for s in privacy["sites"]):
        out.append(
            "Some sites hold several rows per patient: DP protects one row, so a patient with "
            "several rows is protected less than ε says."
        )
    return out


def pooled_omissions(
    pooled: Mapping[str, Any], histograms: Mapping[str, Any] | None = None
) -> list[str]:
    """Which sites the pooled figures cover and each figure the histograms cannot support."""
    out = []
    if coverage := pooled_coverage(pooled, histograms or {}):
        out.append(f"Pooled figures cover {coverage}.")
    for key in pooled.get("from_sites") or []:
        out.append(
            f"Pooled {PANEL_METRICS.get(key, key)} is the sites' own figures weighted by test "
            "size (exact: a mean over rows)."
        )
    bounds = pooled.get("bounds") or {}
    for key, reason in sorted((pooled.get("omitted") or {}).items()):
        span = bounds.get(key)
        where = f"; it lies between {span[0]:.3f} and {span[1]:.3f}" if span else ""
        out.append(f"No pooled {PANEL_METRICS.get(key, key)}: {reason}{where}.")
    return out


def card_tradeoffs(
    privacy: Mapping[str, Any], baselines: Mapping[str, Any], test: Mapping[str, Any]
) -> list[str]:
    """What was given up for what: privacy for accuracy, federation for pooling."""
    out = []
    eps = model_epsilons(privacy)
    if privacy["dp"] and eps:
        out.append(
            f"Privacy against utility: the released model's ε is between {min(eps):.2f} and "
            f"{max(eps):.2f} at the sites that took part (target "
            f"{privacy.get('target_epsilon')}; {model_epsilon_scope(privacy)}); a smaller ε "
            "means more noise in training and usually a less accurate model."
        )
    if baselines.get("done"):
        if baselines.get("verdict"):
            out.append(f"Complexity against benefit: {baselines['verdict']}")
        ref = baselines.get("pooled_reference") or {}
        if finite(ref.get("auroc")) and (fed := federated_auroc_text(test)):
            out.append(
                f"Federation against pooling (simulation only): the same model trained on all "
                f"sites' data in one place scores test AUROC {ref['auroc']:.3f}, all sites' test "
                f"rows ranked together. {fed}"
            )
    return out


def federated_auroc_text(test: Mapping[str, Any]) -> str | None:
    """The federated model's AUROC for a comparison: never the histogram point estimate alone.

    The pooled AUROC from coarsened histograms counts ties within a group as one half, which pulls
    it toward 0.5; only its bounds are stated, next to the sites' own AUROCs weighted by n.
    """
    weighted, missing = n_weighted(test.get("sites") or {}, "auroc")
    if weighted is None:
        return None
    text = f"The federated model's sites score AUROC {weighted:.3f} weighted by test size"
    text += f" (not sent by {', '.join(missing)})" if missing else ""
    text += ", each site ranking its own rows, a different measure from a pooled AUROC"
    pooled = test.get("pooled") or {}
    span = (pooled.get("bounds") or {}).get("auroc")
    if span:
        covers = f" over {pooled['coverage']}" if pooled.get("coverage") else ""
        text += (
            f"; its AUROC with all rows ranked together is known only from coarsened histograms"
            f"{covers}: between {span[0]:.3f} and {span[1]:.3f}"
        )
    return text + "."


def controls_that_ran(companion_names: list[str], baselines: Mapping[str, Any] | None) -> set[str]:
    """The controls that actually ran: reported in baselines.json, or left a companion folder."""
    ran = set(((baselines or {}).get("controls") or {}).keys())
    if "label_shuffle" in companion_names:
        ran.add("label_shuffle")
    if any(n.startswith(LOSO_PREFIX) for n in companion_names):
        ran.add("leave_one_site_out")
    return ran


def ethics_entries(
    card_cfg: CardConfig, *, dp: bool, controls_ran: set[str]
) -> list[dict[str, Any]]:
    """The run config's ethics register, with every entry that claims what did not run rewritten
    (the defaults, whose text the card owns) or flagged (an entry someone wrote)."""
    defaults = CardConfig().ethics
    out: list[dict[str, Any]] = []
    for e in card_cfg.ethics:
        entry: dict[str, Any] = {
            "name": e.concern,
            "mitigation_strategy": e.mitigation,
            "status": e.status,
        }
        text = f"{e.concern} {e.mitigation}"
        untrue = [] if dp or not _DP_CLAIM.search(text) else ["the run trained without DP"]
        untrue += [
            why
            for control, (claim, why) in _CONTROL_CLAIMS.items()
            if control not in controls_ran and claim.search(text)
        ]
        if not untrue:
            out.append(entry)
        elif e == defaults[0]:
            entry.update(
                status="open",
                mitigation_strategy="No differential privacy was applied: the model was trained "
                "without DP, so nothing bounds what its weights reveal about the patients they "
                "were trained on. Raw data did not leave the sites; the weights, the updates and "
                "the aggregates listed under Privacy did, through the egress guard.",
                note="rewritten by the card: the run config's default entry marks this concern "
                "as handled by differential privacy, which this run did not apply",
            )
            out.append(entry)
        elif e == defaults[1]:  # its one claim is leave-one-site-out, which did not run
            entry.update(
                mitigation_strategy="Per-site metrics are reported; leave-one-site-out "
                "evaluation was not run, so how the model does at a hospital it never saw is not "
                "measured; subgroup metrics are not computed in this version.",
                note="rewritten by the card: the run config's default entry says "
                "leave-one-site-out evaluation is reported, but that control did not run",
            )
            out.append(entry)
        else:
            entry.update(
                status="open" if e.status == "mitigated" else e.status,
                mitigation_strategy="NOT TRUE OF THIS RUN: "
                + "; ".join(untrue)
                + f". The run config's entry says: {e.mitigation}",
                note=f"flagged by the card: the run config's entry (status '{e.status}') claims "
                "what this run did not do; check and correct the [card] section",
            )
            out.append(entry)
    return out


def _signoff(rec: Mapping[str, Any], current: Mapping[str, str | None]) -> dict[str, Any]:
    """One sign-off as the card states it: who, when, signed or not, and what changed since."""
    signature = rec.get("signature")
    signed = "signature" in rec
    problem = signoff_signature_problem(dict(rec), SIGNOFFS_FILE) if signed else None
    hashes = rec.get("sha256") if isinstance(rec.get("sha256"), dict) else {}
    # The card files always differ: this card is written after the sign-off it names.
    changed = [
        f
        for f, now in current.items()
        if now is None or not isinstance(hashes, dict) or hashes.get(f) != now
    ]
    return {
        "by": str(rec.get("by") or "(no name)"),
        "role": str(rec.get("role") or "no role"),
        "at": str(rec.get("at") or "an unknown time"),
        "signed": signed,
        "signature_valid": None if not signed else problem is None,
        "key_fingerprint": signature.get("key_fingerprint")
        if isinstance(signature, dict)
        else None,
        "changed_since": changed,
    }


def _signoff_text(s: Mapping[str, Any]) -> str:
    text = f"signed off by {s['by']} ({s['role']}) on {s['at']}"
    if not s["signed"]:
        text += ", NOT signed with a key (a receiver with a trust file refuses it)"
    elif s["signature_valid"]:
        text += f", signed with key {s['key_fingerprint']}"
    else:
        text += ", its signature DOES NOT VERIFY (the record was changed after signing)"
    return text


def release_state(records: Mapping[str, Any], verdicts: Mapping[str, Any]) -> dict[str, Any]:
    """Where the model stands now, from signoffs.jsonl and releases.jsonl (release_records)."""
    signoffs, releases = records["signoffs"], records["releases"]
    signoff = _signoff(signoffs[-1], records["hashes"]) if signoffs else None
    problems = len(verdicts["problems"])
    release: dict[str, Any] | None = None
    if releases:
        last = releases[-1]
        by = last.get("signoff") if isinstance(last.get("signoff"), dict) else {}
        release = {
            "name": Path(str(last.get("release_dir") or "unknown")).name,
            "release_dir": last.get("release_dir"),
            "at": str(last.get("released_at") or "an unknown time"),
            "by": str(last.get("released_by") or "(no name)"),
            "manifest_key_fingerprint": last.get("manifest_key_fingerprint"),
            "signed_off_by": by,
        }
        state = "released"
        who = by or {}
        line = (
            f"released as {release['name']} on {release['at']} by {release['by']} (signed off "
            f"by {who.get('by') or '(no name)'}, {who.get('role') or 'no role'}, on "
            f"{who.get('at') or 'an unknown time'}"
            + (
                f", with key {who['key_fingerprint']}"
                if who.get("key_fingerprint")
                else ", without a signing key"
            )
            + "; MANIFEST "
            + (
                f"signed with key {release['manifest_key_fingerprint']}"
                if release["manifest_key_fingerprint"]
                else "not signed"
            )
            + "). The release holds the card as it was signed off, not this regenerated one"
        )
    elif signoff is not None:
        state = "signed off"
        line = _signoff_text(signoff)
        if signoff["changed_since"]:
            line += (
                f"; {', '.join(signoff['changed_since'])} changed after it, so it no longer counts"
            )
        line += (
            "; this card was written after that sign-off, so the sign-off vouches for an "
            "earlier card: sign off again before a release"
        )
    elif verdicts["release_ready"]:
        state = "eligible for sign-off"
        line = (
            "eligible for sign-off: nobody has signed off yet; nothing is released without a "
            "person's sign-off (`fedward release sign-off RUN_DIR --by NAME --role ROLE --key "
            "KEY`)"
        )
    else:
        state = "not eligible"
        line = f"not eligible for sign-off: {problems} problem(s) against release, listed below"
    if state in ("released", "signed off") and not verdicts["release_ready"]:
        line += f"; the card now finds {problems} problem(s) against release, listed below"
    return {
        "state": state,
        "line": line,
        "signoffs": len(signoffs),
        "latest_signoff": signoff,
        "releases": len(releases),
        "latest_release": release,
    }
