"""The model card of a finished run (in-process federation, no Ray): its schema, its sections, its
privacy statement, and what it says first when something is wrong or was not done."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from fedward.client.app import app
from fedward.common.card_config import CardConfig
from fedward.common.evaluation_config import (
    AuditConfig,
    BaselinesConfig,
    EvaluationConfig,
    TuningConfig,
)
from fedward.common.run_config import RunConfig
from fedward.server.app import coordinate
from fedward.server.audit_report import audit_report
from fedward.server.card_cli import card
from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.model_card import (
    CARD_HTML,
    CARD_JSON,
    CARD_MD,
    MITCHELL_SECTIONS,
    build_card,
    card_schema,
    mitchell_section,
    render_html,
    render_markdown,
    write_card,
)
from fedward.server.release import release
from fedward.server.release_signoff import sign_off
from fedward.server.report_card_files import RunNotFinished
from fedward.server.report_card_sections import PRIVACY_SITE_KEYS
from tests.server.loopback import LoopbackGrid, as_grid, server_context

SITES = {"cleveland", "hungary", "switzerland", "va-long-beach"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = RunConfig(
        rounds=2,
        evaluation=EvaluationConfig(bootstrap=20),
        baselines=BaselinesConfig(families=["naive_bayes"]),
        tuning=TuningConfig(budget=1),
        audit=AuditConfig(reference_models=2),
    )
    root = tmp_path_factory.mktemp("card")
    settings = CoordinatorSettings(run=run, run_dir=str(root / "run"), engine="simulation")
    folder = coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings).path
    write_card(folder)
    return folder


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished run's folder that a test may edit."""
    return Path(
        shutil.copytree(
            finished_run,
            tmp_path / "run",
            ignore=shutil.ignore_patterns("site-state", "checkpoints"),
        )
    )


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _edit(path: Path, **changes: Any) -> None:
    data = _json(path)
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def _validate(card_data: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(card_schema()).validate(card_data)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = card_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_written_card_validates_against_its_schema(finished_run: Path) -> None:
    written = _json(finished_run / CARD_JSON)
    _validate(written)
    assert written == json.loads(json.dumps(build_card(finished_run)))


def test_the_schema_rejects_a_card_without_its_privacy_section(finished_run: Path) -> None:
    broken = _json(finished_run / CARD_JSON)
    del broken["privacy"]
    with pytest.raises(jsonschema.ValidationError, match="privacy"):
        _validate(broken)


def test_every_mitchell_section_is_in_the_json_the_markdown_and_the_html(
    finished_run: Path,
) -> None:
    written = _json(finished_run / CARD_JSON)
    md = (finished_run / CARD_MD).read_text(encoding="utf-8")
    html = (finished_run / CARD_HTML).read_text(encoding="utf-8")
    assert len(MITCHELL_SECTIONS) == 9
    for title in MITCHELL_SECTIONS:
        assert mitchell_section(written, title), title
        assert f"\n## {title}\n" in md, title
        assert f"<h2>{title}</h2>" in html, title


def test_the_card_is_shaped_like_model_card_toolkit(finished_run: Path) -> None:
    written = _json(finished_run / CARD_JSON)
    details = written["model_details"]
    assert {"name", "overview", "version", "owners", "references", "licenses", "citations"} <= set(
        details
    )
    assert details["version"]["name"] == written["provenance"]["run_id"]
    assert set(written["model_parameters"]["data"]) == {"train", "eval"}
    assert {s["site"] for s in written["model_parameters"]["data"]["eval"]["sites"]} == SITES
    ethics = written["considerations"]["ethical_considerations"]
    config = _json(finished_run / "run_config.json")["card"]["ethics"]
    assert [e["name"] for e in ethics] == [e["concern"] for e in config]
    # A DP run: the register's DP entry is true and stated as written.
    assert (ethics[0]["mitigation_strategy"], ethics[0]["status"]) == (
        config[0]["mitigation"],
        config[0]["status"],
    )
    assert "note" not in ethics[0]
    # Leave-one-site-out did not run here, so the default entry claiming it is rewritten.
    assert "leave-one-site-out evaluation was not run" in ethics[1]["mitigation_strategy"]
    assert "did not run" in ethics[1]["note"]


def test_the_metrics_are_the_test_panels_with_their_intervals(finished_run: Path) -> None:
    written = _json(finished_run / CARD_JSON)
    test = _json(finished_run / "metrics.json")["test"]
    metrics = {
        (m["slice"], m["type"]): m for m in written["quantitative_analysis"]["performance_metrics"]
    }
    for site in SITES:
        panel = test["sites"][site]
        auroc = metrics[(f"site={site}", "auroc")]
        assert auroc["value"] == panel["auroc"]
        assert auroc["confidence_interval"] == {
            "lower_bound": panel["auroc_lo"],
            "upper_bound": panel["auroc_hi"],
        }
        if (f"site={site}", "balanced_accuracy") in metrics:  # absent where a cell is small
            assert metrics[(f"site={site}", "balanced_accuracy")]["threshold"] == 0.5
    assert metrics[("pooled", "auroc")]["value"] == test["pooled"]["auroc"]
    assert "confidence_interval" not in metrics[("pooled", "auroc")]
    assert written["quantitative_analysis"]["score_histograms"] == test["histograms"]


def test_the_privacy_section_states_the_privacy_summary(finished_run: Path) -> None:
    privacy = _json(finished_run / CARD_JSON)["privacy"]
    summary = _json(finished_run / "privacy_summary.json")
    record = _json(finished_run / "run_record.json")["privacy"]
    assert privacy["dp"] is summary["dp"] is True
    assert privacy["privacy_unit"] == summary["privacy_unit"]
    assert privacy["target_epsilon"] == summary["target_epsilon"]
    assert privacy["clipping_norm"] == summary["max_grad_norm"]
    assert privacy["central_dp"] == summary["central_dp"] and privacy["central_dp_used"] is False
    assert privacy["secure_aggregation"] == summary["secure_aggregation"]
    assert privacy["secure_aggregation_used"] is False
    assert privacy["sites"] == [{k: s.get(k) for k in PRIVACY_SITE_KEYS} for s in summary["sites"]]
    for site in privacy["sites"]:
        for key in ("epsilon", "delta", "epsilon_lifetime", "delta_lifetime"):
            assert site[key] is not None and site[key] > 0, (site["site"], key)
        assert site["noise_multiplier"] > 0 and 0 < site["sample_rate"] <= 1
        assert privacy["tuning_epsilon"][site["site"]] == site["epsilon_tuning"]
    assert privacy["non_dp_outputs"] == record["non_dp_outputs"]
    assert privacy["encrypted_inference"]["offered"] is False
    audit = _json(finished_run / "audit.json")
    assert privacy["audit"]["done"] and privacy["audit"]["verdict"] == audit["verdict"]
    for site, entry in privacy["audit"]["models"]["run"]["sites"].items():
        source = audit["models"]["run"]["sites"][site]
        assert entry["epsilon_accountant"] == source["epsilon_accountant"]
        assert entry["epsilon_lower_bound"] == source["canary"]["epsilon_lb"]


def test_the_verdicts_agree_with_the_run(finished_run: Path) -> None:
    written = _json(finished_run / CARD_JSON)
    verdicts = written["verdicts"]
    passed = _json(finished_run / "audit.json")["verdict"].startswith("pass")
    assert verdicts["dp_guarantee"] is True
    assert verdicts["audit_passed"] is passed
    assert verdicts["release_ready"] is passed and (verdicts["problems"] == []) is passed
    assert (written["warnings"] == []) is passed
    md = (finished_run / CARD_MD).read_text(encoding="utf-8")
    audit = _json(finished_run / "audit.json")
    assert passed and audit["dp_guarantee"] is True  # the default DP run passes its audit
    assert f"membership audit passed: yes ({audit['verdict']})" in md
    # Eligible, not released: nobody has signed off this run.
    assert verdicts["release"]["state"] == "eligible for sign-off"
    assert "release: eligible for sign-off: nobody has signed off yet" in md
    assert "ready for release" not in md


def test_privacy_comes_right_after_the_warnings_and_verdicts(finished_run: Path) -> None:
    md = (finished_run / CARD_MD).read_text(encoding="utf-8")
    verdicts = md.index("**DP guarantee:")
    privacy = md.index("\n## Privacy\n")
    assert verdicts < privacy < min(md.index(f"\n## {t}\n") for t in MITCHELL_SECTIONS)
    html = (finished_run / CARD_HTML).read_text(encoding="utf-8")
    sections = re.findall(r'<section id="([^"]+)">', html)
    assert sections[0] == "privacy" and sections[1] == "model-details", sections
    assert html.index('id="verdicts"') < html.index('<section id="privacy">')


def test_the_html_is_one_self_contained_page_with_its_plots(finished_run: Path) -> None:
    html = (finished_run / CARD_HTML).read_text(encoding="utf-8")
    written = _json(finished_run / CARD_JSON)
    names = [g["name"] for g in written["quantitative_analysis"]["graphics"]["collection"]]
    assert {"roc", "precision_recall", "calibration", "privacy_utility"} <= set(names)
    assert {f"audit_roc_{s}" for s in SITES} <= set(names)
    images = re.findall(
        r'<img class="plot" id="plot-([^"]+)" alt="[^"]+" src="data:image/png;base64,', html
    )
    assert images and sorted(images) == sorted(names)
    assert re.search(r'<section id="privacy">', html)
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from the network
    assert "default-src 'none'" in html


def test_regenerating_the_card_gives_the_same_bytes(finished_run: Path, run_copy: Path) -> None:
    again = write_card(run_copy)
    # A regenerated card does not void a sign-off by itself (release.py hashes the card files).
    assert [p.read_bytes() for p in again] == [(finished_run / p.name).read_bytes() for p in again]


def test_a_failed_audit_is_said_first_in_json_markdown_and_html(run_copy: Path) -> None:
    _edit(run_copy / "audit.json", verdict="fail: probable privacy bug")
    json_path, md_path, html_path = write_card(run_copy)
    text = json_path.read_text(encoding="utf-8")
    written = json.loads(text)
    _validate(written)
    assert text.lstrip("{ \n").startswith('"warnings"')
    assert "fail: probable privacy bug" in written["warnings"][0]
    assert written["verdicts"]["audit_passed"] is False
    assert written["verdicts"]["release_ready"] is False
    assert written["verdicts"]["release"]["state"] == "not eligible"
    md = md_path.read_text(encoding="utf-8")
    assert "release: not eligible for sign-off" in md
    first = md.splitlines()[0]
    assert first.startswith("> **⚠ WARNING") and "fail: probable privacy bug" in first
    html = html_path.read_text(encoding="utf-8")
    banner = re.search(r'<body>\s*<div class="banner" id="warnings" role="alert">(.*?)</div>', html)
    assert banner and "fail: probable privacy bug" in banner.group(1)


def _non_dp_audit(correct: int, lb: float) -> dict[str, Any]:
    """The audit a model trained without DP gets: no accountant ε at any site."""
    info = {
        "status": "ok",
        "min_cell_size": 10,
        "mia_loss_auc": 0.5,
        "mia_loss_auc_lo": 0.4,
        "mia_loss_auc_hi": 0.6,
        "mia_loss_tpr_at_fpr_10": 0.1,
        "mia_canary_guesses": 98,
        "mia_canary_correct": correct,
        "mia_canary_epsilon_lb": lb,
        "mia_canary_epsilon_lb_confidence": 0.95,
        "mia_canary_epsilon_max": 2.81,
    }
    return audit_report(
        AuditConfig(),
        {"run": {"sites": dict.fromkeys(SITES, info), "epsilon": dict.fromkeys(SITES)}},
        run_id="r",
    )


@pytest.mark.parametrize(
    ("correct", "lb", "verdict"),
    [(49, 0.0, "fail: no DP guarantee"), (83, 1.03, "fail: no DP guarantee, leak observed")],
)
def test_a_run_without_dp_is_said_first(
    run_copy: Path, correct: int, lb: float, verdict: str
) -> None:
    _edit(run_copy / "privacy_summary.json", dp=False)
    (run_copy / "audit.json").write_text(json.dumps(_non_dp_audit(correct, lb)), encoding="utf-8")
    written = json.loads(write_card(run_copy)[0].read_text(encoding="utf-8"))
    _validate(written)
    assert written["warnings"][0].startswith("NO DIFFERENTIAL PRIVACY")
    assert written["verdicts"]["dp_guarantee"] is False
    assert written["verdicts"]["audit_passed"] is False
    assert written["verdicts"]["release_ready"] is False
    md = (run_copy / CARD_MD).read_text(encoding="utf-8")
    assert md.startswith("> **⚠ WARNING: NO DIFFERENTIAL PRIVACY")
    # The card's headline states the audit's verdict, never a pass, and what was observed.
    assert f"membership audit passed: no ({verdict})" in md
    assert f"AUDIT FAILED (verdict: {verdict})" in " ".join(written["warnings"])
    assert ("83 of 98 guesses correct" in " ".join(written["warnings"])) is (lb > 0)
    html = (run_copy / CARD_HTML).read_text(encoding="utf-8")
    assert f"membership audit passed: no ({verdict})" in html


def test_missing_reports_are_said_not_done_and_the_card_is_still_written(run_copy: Path) -> None:
    for name in ("baselines.json", "audit.json", "profiles.json"):
        (run_copy / name).unlink()
    json_path, md_path, html_path = write_card(run_copy)
    written = _json(json_path)
    _validate(written)
    for section in (
        written["baselines"],
        written["privacy"]["audit"],
        written["training_data_profiles"],
    ):
        assert section["done"] is False and section["status"] == "not done"
    assert "baselines.json is missing" in written["baselines"]["reason"]
    assert written["verdicts"]["audit_passed"] is None
    assert written["verdicts"]["release_ready"] is False
    assert any("NOT AUDITED" in w for w in written["warnings"])
    assert not any(
        g["name"].startswith("audit_roc_")
        for g in written["quantitative_analysis"]["graphics"]["collection"]
    )
    md = md_path.read_text(encoding="utf-8")
    html = html_path.read_text(encoding="utf-8")
    for what in (
        "Baselines: not done",
        "Membership-inference audit: not done",
        "Training-data profiles: not done",
    ):
        assert what in md and what in html, what


def test_an_unfinished_run_folder_is_refused_naming_the_missing_file(
    run_copy: Path, tmp_path: Path
) -> None:
    (run_copy / "model.json").unlink()
    with pytest.raises(RunNotFinished, match=r"model\.json is missing"):
        build_card(run_copy)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"manifest\.json is missing"):
        build_card(empty)


def test_the_card_command_prints_the_warnings_and_the_paths(run_copy: Path) -> None:
    cli = typer.Typer()
    cli.command()(card)
    _edit(run_copy / "audit.json", verdict="fail")
    result = CliRunner().invoke(cli, [str(run_copy)])
    assert result.exit_code == 0, result.output
    assert "WARNING: AUDIT FAILED" in " ".join(result.output.split())
    flat = "".join(result.output.split())  # rich may fold a long path anywhere
    for name in (CARD_JSON, CARD_MD, CARD_HTML):
        assert name in flat
    (run_copy / "metrics.json").unlink()
    refused = CliRunner().invoke(cli, [str(run_copy)], env={"COLUMNS": "200"})
    assert refused.exit_code != 0
    assert "metrics.json is missing" in " ".join(re.sub(r"[│╭╮╰╯─]", " ", refused.output).split())


def _as_non_dp(run: Path) -> None:
    """Turn a copy of the DP run into the records a `privacy.dp = false` run writes (a site
    refuses non-DP training by default, so the federation itself is not re-run)."""
    config = _json(run / "run_config.json")
    config["privacy"]["dp"] = False
    (run / "run_config.json").write_text(json.dumps(config), encoding="utf-8")
    record = _json(run / "run_record.json")
    record["privacy"].update(dp=False, target_epsilon=None, epsilon_covers=[])
    (run / "run_record.json").write_text(json.dumps(record), encoding="utf-8")
    summary = _json(run / "privacy_summary.json")
    summary.update(dp=False, target_epsilon=None)
    for site in summary["sites"]:
        for key in PRIVACY_SITE_KEYS:
            if key not in ("site", "status", "reason", "refusals"):
                site[key] = None
    (run / "privacy_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    (run / "audit.json").write_text(json.dumps(_non_dp_audit(49, 0.0)), encoding="utf-8")


def test_a_non_dp_card_carries_no_dp_text_and_lists_the_weights(run_copy: Path) -> None:
    _as_non_dp(run_copy)
    config = _json(run_copy / "run_config.json")
    written_by_hand = {
        "concern": "Re-identification from the model",
        "status": "mitigated",
        "mitigation": "DP-SGD bounds what the weights reveal.",
    }
    config["card"] = {"ethics": [*CardConfig().model_dump()["ethics"], written_by_hand]}
    (run_copy / "run_config.json").write_text(json.dumps(config), encoding="utf-8")
    json_path, md_path, html_path = write_card(run_copy)
    written = _json(json_path)
    _validate(written)
    privacy = written["privacy"]
    assert privacy["dp"] is False
    assert privacy["privacy_unit"] is privacy["clipping_norm"] is None
    assert privacy["accountant_requested"] is privacy["accountant_note"] is None
    assert privacy["target_epsilon"] is None
    assert privacy["non_dp_outputs"][0].startswith("the model weights (model.pt)")
    record = _json(run_copy / "run_record.json")["privacy"]
    assert privacy["non_dp_outputs"][2:] == record["non_dp_outputs"]
    ethics = written["considerations"]["ethical_considerations"]
    assert ethics[0]["status"] == "open"
    assert ethics[0]["mitigation_strategy"].startswith("No differential privacy was applied")
    assert "rewritten by the card" in ethics[0]["note"]
    assert ethics[2]["status"] == "open"
    assert ethics[2]["mitigation_strategy"].startswith(
        "NOT TRUE OF THIS RUN: the run trained without DP"
    )
    assert "flagged by the card" in ethics[2]["note"]
    assert not any(e["status"] == "mitigated" for e in ethics)
    refs = [r["reference"] for r in written["model_details"]["references"]]
    assert "https://doi.org/10.1145/2976749.2978318" not in refs  # DP-SGD's paper
    md = md_path.read_text(encoding="utf-8")
    html = html_path.read_text(encoding="utf-8")
    for text in (md, html):
        for dp_text in (
            "sample-level DP-SGD",
            "(sample-level DP)",
            "(DP-SGD)",
            "clipping norm",
            "accountant requested",
            "target ε",
            "ε run",
            "| mitigated |",
            "<td>mitigated</td>",
        ):
            assert dp_text not in text, dp_text
        assert "the model weights (model.pt)" in text
        assert "Outputs without any DP guarantee" in text
        assert "gradient clipping and noise" in text and "none: plain training" in text
    # Only the hand-written entry's quoted claim names DP-SGD, flagged as not true.
    flagged = [line for line in md.splitlines() if "DP-SGD" in line]
    assert len(flagged) == 1 and "NOT TRUE OF THIS RUN" in flagged[0], flagged


def test_leave_one_site_out_and_label_shuffle_are_described_only_when_they_ran(
    run_copy: Path,
) -> None:
    config = _json(run_copy / "run_config.json")
    shuffle_claim = {
        "concern": "Leakage between splits",
        "status": "mitigated",
        "mitigation": "The label-shuffle control scores chance.",
    }
    config["card"] = {"ethics": [*CardConfig().model_dump()["ethics"], shuffle_claim]}
    (run_copy / "run_config.json").write_text(json.dumps(config), encoding="utf-8")
    written = build_card(run_copy)
    ethics = written["considerations"]["ethical_considerations"]
    assert "leave-one-site-out evaluation was not run" in ethics[1]["mitigation_strategy"]
    assert ethics[2]["mitigation_strategy"].startswith(
        "NOT TRUE OF THIS RUN: the label-shuffle control did not run"
    )
    assert ethics[2]["status"] == "open"
    assert not any("leave-one-site-out" in f for f in written["factors"]["evaluation"])
    assert "left_out=" not in render_markdown(written)

    # The controls ran: baselines.json reports leave-one-site-out, companions/ holds the shuffle.
    baselines = _json(run_copy / "baselines.json")
    baselines.setdefault("controls", {})["leave_one_site_out"] = {
        "sites": {
            "cleveland": {
                "auroc_left_out": 0.81,
                "auroc_left_out_lo": 0.7,
                "auroc_left_out_hi": 0.9,
                "auroc_with_site": 0.85,
                "status": "finished",
            }
        },
        "reading": "AUROC on each site's test split of a model trained without that site.",
    }
    (run_copy / "baselines.json").write_text(json.dumps(baselines), encoding="utf-8")
    (run_copy / "companions" / "label_shuffle").mkdir(parents=True)
    written = json.loads(json.dumps(build_card(run_copy)))
    _validate(written)
    ethics = written["considerations"]["ethical_considerations"]
    defaults = CardConfig().ethics
    assert ethics[1]["mitigation_strategy"] == defaults[1].mitigation  # true now: stated as written
    assert "note" not in ethics[1] and "note" not in ethics[2]
    assert ethics[2]["mitigation_strategy"] == shuffle_claim["mitigation"]
    assert any("leave-one-site-out" in f for f in written["factors"]["evaluation"])
    md = render_markdown(written)
    assert "| left_out=cleveland | 0.810 [0.700, 0.900]" in md
    assert "`left_out=SITE` is a model trained without that site" in md
    assert "<code>left_out=SITE</code>" in render_html(written, figures={})


def _release_line(run: Path) -> str:
    """The card's release line as a regenerated card would state it; built in memory, so the
    card files a sign-off hashes stay as they were (plots left out of the HTML: not under test)."""
    written = json.loads(json.dumps(build_card(run)))
    _validate(written)
    md = render_markdown(written)
    html = render_html(written, figures={})
    line = written["verdicts"]["release"]["line"]
    assert f"release: {line}" in md
    assert "ready for release" not in md and "ready for release" not in html
    return str(written["verdicts"]["release"]["state"]) + " | " + line


def test_the_release_line_reads_the_real_state(run_copy: Path, tmp_path: Path) -> None:
    assert _release_line(run_copy).startswith("eligible for sign-off | eligible for sign-off")

    unsigned = sign_off(run_copy, by="Dr. Ada Byron", role="privacy officer")
    line = _release_line(run_copy)
    assert line.startswith(
        f"signed off | signed off by Dr. Ada Byron (privacy officer) on {unsigned['at']}, NOT "
        "signed with a key"
    )
    assert "this card was written after that sign-off" in line

    key = Ed25519PrivateKey.generate()
    signed = sign_off(run_copy, by="Grace Hopper", role="clinical lead", key=key)
    fingerprint = signed["signature"]["key_fingerprint"]
    line = _release_line(run_copy)
    assert f"signed off by Grace Hopper (clinical lead) on {signed['at']}, signed with key " in line
    assert fingerprint in line

    # The signer renamed after signing: the card says the signature does not verify.
    log = run_copy / "signoffs.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    forged = json.loads(lines[-1])
    forged["by"] = "Mallory"
    log.write_text("\n".join([*lines, json.dumps(forged)]) + "\n", encoding="utf-8")
    assert "signed off by Mallory (clinical lead)" in (line := _release_line(run_copy))
    assert "its signature DOES NOT VERIFY" in line

    # The gate skips the forged record and counts Grace Hopper's; once released, the line says
    # where the model went.
    target = release(run_copy, tmp_path / "out", by="ops", key=key)
    line = _release_line(run_copy)
    assert line.startswith(f"released | released as {target.name} on ")
    assert f"by ops (signed off by Grace Hopper, clinical lead, on {signed['at']}" in line
    assert f"MANIFEST signed with key {fingerprint}" in line


def test_own_data_is_named_and_claims_a_licence_only_where_one_is_declared(
    run_copy: Path,
) -> None:
    config = _json(run_copy / "run_config.json")
    config["task"]["dataset"] = "ward-exports"
    (run_copy / "run_config.json").write_text(json.dumps(config), encoding="utf-8")
    json_path, md_path, _ = write_card(run_copy)
    details = _json(json_path)["model_details"]
    assert "(ward-exports)" in details["overview"] and "heart" not in details["overview"]
    (licence,) = details["licenses"]
    assert "licensed" not in licence["custom_text"] and "CC BY" not in md_path.read_text()

    config["card"] = {"data_license": "CC BY-NC 4.0"}
    (run_copy / "run_config.json").write_text(json.dumps(config), encoding="utf-8")
    json_path, _, _ = write_card(run_copy)
    (licence,) = _json(json_path)["model_details"]["licenses"]
    assert licence["custom_text"].endswith("The training data are licensed CC BY-NC 4.0.")
