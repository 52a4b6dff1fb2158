"""The release gate: what it refuses, what a sign-off binds, and what a release holds."""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from fedward.client.app import app
from fedward.common.errors import FedwardError
from fedward.common.evaluation_config import (
    AuditConfig,
    BaselinesConfig,
    EvaluationConfig,
    TuningConfig,
)
from fedward.common.learning_config import ModelConfig
from fedward.common.models import build_model
from fedward.common.run_config import RunConfig
from fedward.server.app import coordinate
from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.release import ReleaseRefused, release
from fedward.server.release_cli import release_app
from fedward.server.release_files import (
    COPIED_FILES,
    MANIFEST_FILE,
    MANIFEST_SIG_FILE,
    RELEASES_FILE,
    SIGNOFF_FILE,
    SIGNOFFS_FILE,
)
from fedward.server.release_gate import check_release
from fedward.server.release_signing import (
    SIGNOFF_DOMAIN,
    TrustFile,
    canonical_json,
    keygen,
    load_private_key,
    load_trust,
    public_key_b64,
    sign,
)
from fedward.server.release_signoff import sign_off
from fedward.server.release_verify import verify_release, verify_release_report
from tests.server.loopback import LoopbackGrid, as_grid, server_context

# A consumer loads the release with torch.jit.load, deprecated (not removed) in torch 2.13.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated")


def _card_writer() -> Callable[[Path], Any] | None:
    """The real card writer once fedward.server.model_card exists (written concurrently)."""
    try:
        module = importlib.import_module("fedward.server.model_card")
    except ImportError:
        return None
    writer = getattr(module, "write_card", None)
    return writer if callable(writer) else None


def _minimal_card(run_dir: Path) -> None:
    """Stand-in for the model card: only the ``verdicts`` the gate reads, derived as the card does."""
    summary = json.loads((run_dir / "privacy_summary.json").read_text())
    audit_path = run_dir / "audit.json"
    audit = json.loads(audit_path.read_text()) if audit_path.exists() else None
    taking_part = [s for s in summary["sites"] if s["status"] == "ok"]
    dp = bool(summary["dp"]) and all(s["epsilon"] is not None for s in taking_part)
    passed = None if audit is None else str(audit["verdict"]).startswith("pass")
    problems = ([] if dp else ["no DP guarantee"]) + ([] if passed else ["audit not passed"])
    card = {
        "verdicts": {
            "dp_guarantee": dp,
            "audit_passed": passed,
            "release_ready": dp and bool(passed),
            "problems": problems,
        },
        "warnings": [],
    }
    (run_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    (run_dir / "model_card.md").write_text("# Model card\n")
    (run_dir / "model_card.html").write_text("<!doctype html><title>Model card</title>")


def write_card(run_dir: Path) -> None:
    writer = _card_writer()
    if writer is not None:
        writer(run_dir)
    else:
        _minimal_card(run_dir)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = RunConfig(
        rounds=2,
        model=ModelConfig(kind="mlp", hidden=[16]),
        evaluation=EvaluationConfig(bootstrap=20),
        baselines=BaselinesConfig(families=["naive_bayes"], pooled_reference=False),
        tuning=TuningConfig(budget=1),
        audit=AuditConfig(reference_models=2),
    )
    root = tmp_path_factory.mktemp("release")
    settings = CoordinatorSettings(run=run, run_dir=str(root / "run"), engine="simulation")
    path = coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings).path
    write_card(path)
    return path


@pytest.fixture
def run_dir(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run, free to edit."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def _sign(run_dir: Path) -> dict[str, Any]:
    return sign_off(run_dir, by="Dr. Ada Byron", role="privacy officer", note="read the card")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the gate ------------------------------------------------------------------------------------


def test_the_finished_run_passes_every_check_except_the_missing_sign_off(run_dir: Path) -> None:
    check = check_release(run_dir)
    assert not check.ok and check.signoff is None
    assert len(check.problems) == 1, check.problems
    assert check.problems[0].startswith(f"{SIGNOFFS_FILE} is missing")
    with pytest.raises(ReleaseRefused, match=r"signoffs\.jsonl") as refused:
        release(run_dir, run_dir.parent / "out")
    assert refused.value.problems == check.problems
    assert not (run_dir.parent / "out").exists() or not any((run_dir.parent / "out").iterdir())


def test_a_sign_off_is_appended_with_the_hashes_of_what_it_approves(run_dir: Path) -> None:
    first = _sign(run_dir)
    second = sign_off(run_dir, by="Grace Hopper", role="clinical lead")
    lines = (run_dir / SIGNOFFS_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [first, second]
    assert first["by"] == "Dr. Ada Byron" and first["role"] == "privacy officer"
    assert first["at"].endswith("+00:00")  # UTC, ISO 8601
    assert first["sha256"]["model.pt"] == _sha(run_dir / "model.pt")
    assert first["sha256"]["model_card.json"] == _sha(run_dir / "model_card.json")
    check = check_release(run_dir)
    assert check.ok, check.problems
    assert check.signoff == second  # the latest valid sign-off is the one that counts


@pytest.mark.parametrize("name", ["", "   "])
def test_a_sign_off_without_a_name_is_refused(run_dir: Path, name: str) -> None:
    with pytest.raises(FedwardError, match="name of the person"):
        sign_off(run_dir, by=name, role="privacy officer")
    assert not (run_dir / SIGNOFFS_FILE).exists()


def test_a_sign_off_made_before_the_model_changed_does_not_count(run_dir: Path) -> None:
    _sign(run_dir)
    state = torch.load(run_dir / "model.pt", weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 0.01
    torch.save(state, run_dir / "model.pt")
    check = check_release(run_dir)
    assert not check.ok and check.signoff is None
    (problem,) = check.problems
    assert "signoffs.jsonl holds no valid sign-off" in problem and "Dr. Ada Byron" in problem
    assert "model.pt" in problem and "model_card.json" not in problem
    _sign(run_dir)  # signed again, as the model is now
    assert check_release(run_dir).ok


def test_a_sign_off_made_before_the_card_changed_does_not_count(run_dir: Path) -> None:
    _sign(run_dir)
    _edit_json(run_dir / "model_card.json", lambda card: card["warnings"].append("edited"))
    (problem,) = check_release(run_dir).problems
    assert "model_card.json" in problem and "changed after signing" in problem


@pytest.mark.parametrize("verdict", ["fail", "fail: probable privacy bug", "inconclusive"])
def test_an_audit_that_did_not_pass_is_refused(run_dir: Path, verdict: str) -> None:
    # The verdict is edited in a copy of a real report: a small heart-disease run passes its audit.
    _edit_json(run_dir / "audit.json", lambda audit: audit.update(verdict=verdict))
    write_card(run_dir)
    _sign(run_dir)
    check = check_release(run_dir)
    assert not check.ok
    assert f"audit.json's verdict is '{verdict}'" in " ".join(check.problems)
    with pytest.raises(ReleaseRefused, match=r"audit\.json"):
        release(run_dir, run_dir.parent / "out")


def test_a_run_without_an_audit_is_refused(run_dir: Path) -> None:
    (run_dir / "audit.json").unlink()
    write_card(run_dir)
    with pytest.raises(FedwardError, match="missing"):
        _sign(run_dir)  # nothing to vouch for: the audit is part of what is released
    problems = check_release(run_dir).problems
    assert any(p.startswith("audit.json is missing") and "fedward audit" in p for p in problems)


def test_a_run_trained_without_dp_is_refused(run_dir: Path) -> None:
    # A site refuses non-DP training by default, so a `privacy.dp = false` run is made here by
    # editing a copy of a DP run's records as such a run writes them; the card is then regenerated.
    _edit_json(run_dir / "run_config.json", lambda run: run["privacy"].update(dp=False))
    _edit_json(run_dir / "run_record.json", lambda rec: rec["privacy"].update(dp=False))

    def no_dp(summary: dict[str, Any]) -> None:
        summary["dp"] = False
        for site in summary["sites"]:
            site.update(epsilon=None, delta=None)

    _edit_json(run_dir / "privacy_summary.json", no_dp)
    write_card(run_dir)
    _sign(run_dir)
    problems = check_release(run_dir).problems
    assert any(
        p.startswith("privacy_summary.json says the run trained without DP") for p in problems
    )
    assert any(p.startswith("model_card.json does not state a DP guarantee") for p in problems)


def test_a_card_claiming_dp_is_not_believed_over_the_privacy_summary(run_dir: Path) -> None:
    def one_site_without_epsilon(summary: dict[str, Any]) -> None:
        summary["sites"][0]["epsilon"] = None

    _edit_json(run_dir / "privacy_summary.json", one_site_without_epsilon)
    _sign(run_dir)  # the card (written before the edit) still says dp_guarantee: true
    (problem,) = check_release(run_dir).problems
    assert "privacy_summary.json: site 'cleveland' took part but reported no finite ε" in problem


def test_a_run_without_a_card_is_refused_with_every_problem_named(run_dir: Path) -> None:
    for name in ("model_card.json", "model_card.md", "model_card.html"):
        (run_dir / name).unlink()
    problems = check_release(run_dir).problems
    for name in ("model_card.json", "model_card.md", "model_card.html", SIGNOFFS_FILE):
        assert any(p.startswith(f"{name} is missing") for p in problems), (name, problems)


# ---- the release ---------------------------------------------------------------------------------


def test_a_signed_off_run_is_released_as_one_verified_file_set(run_dir: Path) -> None:
    signed = _sign(run_dir)
    out = run_dir.parent / "releases"
    target = release(run_dir, out, by="Ops Engineer")
    record = json.loads((run_dir / "run_record.json").read_text())
    assert target == out / f"fedward-run-{record['run_id'][:8]}"
    assert [p.name for p in out.iterdir()] == [target.name]  # no staging folder left behind
    expected = {"model.ts", "signoff.json", MANIFEST_FILE, *COPIED_FILES}
    assert {p.name for p in target.iterdir()} == expected
    for name in COPIED_FILES:
        assert (target / name).read_bytes() == (run_dir / name).read_bytes(), name
    assert json.loads((target / "signoff.json").read_text()) == signed

    manifest = json.loads((target / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == expected - {MANIFEST_FILE}
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": _sha(target / name), "size": (target / name).stat().st_size}
    assert manifest["run_id"] == record["run_id"]
    assert manifest["config_hash"] == record["config_hash"]
    assert manifest["released_by"] == "Ops Engineer" and manifest["fedward_version"]
    assert manifest["released_at"].endswith("+00:00")
    assert manifest["model"]["source_sha256"] == _sha(run_dir / "model.pt")
    assert verify_release(target) == []

    (logged,) = [json.loads(x) for x in (run_dir / RELEASES_FILE).read_text().splitlines()]
    assert logged["release_dir"] == str(target.resolve())
    assert logged["manifest_sha256"] == _sha(target / MANIFEST_FILE)
    assert logged["signoff"]["by"] == "Dr. Ada Byron"


def test_the_torchscript_model_reproduces_the_trained_models_logits(run_dir: Path) -> None:
    _sign(run_dir)
    target = release(run_dir, run_dir.parent / "out")
    description = json.loads((run_dir / "model.json").read_text())
    model = build_model(
        ModelConfig(
            kind=description["kind"],
            hidden=description["hidden"],
            activation=description["activation"],
        ),
        description["n_inputs"],
        description["image_shape"],
    )
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    model.eval()
    scripted = torch.jit.load(str(target / "model.ts"))
    rows = torch.randn(32, description["n_inputs"], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.allclose(scripted(rows), model(rows), atol=1e-6, rtol=0)
        assert scripted(rows).shape == (32, 1)


def test_verify_release_names_an_edited_file(run_dir: Path) -> None:
    _sign(run_dir)
    target = release(run_dir, run_dir.parent / "out")
    with (target / "model_card.md").open("a") as fh:
        fh.write("\nAll good, trust me.\n")
    (target / "notes.txt").write_text("added later")
    problems = verify_release(target)
    assert len(problems) == 2, problems
    assert problems[0].startswith("model_card.md does not match MANIFEST.json")
    assert problems[1].startswith("notes.txt is in the release folder but not listed")


def test_releasing_twice_to_the_same_folder_is_refused(run_dir: Path) -> None:
    _sign(run_dir)
    out = run_dir.parent / "out"
    target = release(run_dir, out)
    before = {p.name: _sha(p) for p in target.iterdir()}
    with pytest.raises(ReleaseRefused, match="already exists") as refused:
        release(run_dir, out)
    assert str(target) in refused.value.problems[0]
    assert {p.name: _sha(p) for p in target.iterdir()} == before
    assert len((run_dir / RELEASES_FILE).read_text().splitlines()) == 1


# ---- the command line ----------------------------------------------------------------------------


def test_the_commands_print_every_problem_and_exit_1(run_dir: Path) -> None:
    runner = CliRunner()
    (run_dir / "audit.json").unlink()
    out = run_dir.parent / "out"
    refused = runner.invoke(release_app, ["export", str(run_dir), "--out", str(out)])
    assert refused.exit_code == 1
    assert (
        "audit.json is missing" in refused.output and "signoffs.jsonl is missing" in refused.output
    )
    no_name = runner.invoke(release_app, ["sign-off", str(run_dir), "--by", " ", "--role", "x"])
    assert no_name.exit_code == 1 and "name of the person" in no_name.output


def test_the_commands_sign_off_export_and_verify(run_dir: Path) -> None:
    runner = CliRunner()
    signed = runner.invoke(
        release_app,
        ["sign-off", str(run_dir), "--by", "Dr. Ada Byron", "--role", "privacy officer"],
    )
    assert signed.exit_code == 0, signed.output
    assert "signed off by Dr. Ada Byron" in signed.output and "still refuses" not in signed.output
    assert runner.invoke(release_app, ["check", str(run_dir)]).exit_code == 0
    out = run_dir.parent / "out"
    exported = runner.invoke(release_app, ["export", str(run_dir), "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    (target,) = out.iterdir()
    verified = runner.invoke(release_app, ["verify", str(target)])
    assert verified.exit_code == 0 and "all 9 files match" in verified.output
    (target / "audit.json").write_text("{}")
    broken = runner.invoke(release_app, ["verify", str(target)])
    assert broken.exit_code == 1 and "audit.json does not match MANIFEST.json" in broken.output


# ---- signed releases -----------------------------------------------------------------------------
#
# Each tampering below is one an attacker who can write the release folder (but holds no trusted
# key) could do; every one must fail `verify --trust`. The run is the module's finished run.


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ada (privacy officer) and ops (release engineer) in trust.toml; mallory in no trust file."""
    folder = tmp_path_factory.mktemp("keys")
    entries = []
    for stem, name, role in [
        ("ada", "Dr. Ada Byron", "privacy officer"),
        ("ops", "Ops Engineer", "release engineer"),
        ("mallory", None, None),
    ]:
        _, _, public = keygen(folder, stem)
        if name is not None:
            entries.append(
                f'[[signers]]\nname = "{name}"\nrole = "{role}"\n'
                f'public_key = "{public_key_b64(public)}"\n'
            )
    (folder / "trust.toml").write_text("\n".join(entries))
    return folder


def _trust(keys: Path) -> TrustFile:
    return load_trust(keys / "trust.toml")


def _signed_release(run_dir: Path, keys: Path, exporter: str = "ops") -> Path:
    sign_off(
        run_dir,
        by="Dr. Ada Byron",
        role="privacy officer",
        note="read the card",
        key=load_private_key(keys / "ada.key"),
    )
    return release(run_dir, run_dir.parent / "out", key=load_private_key(keys / f"{exporter}.key"))


def _rehash_manifest(target: Path, change: Callable[[dict[str, Any]], None] | None = None) -> None:
    """What a careful forger does: every listed file's hash and size recomputed, the rest kept."""
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    for name in manifest["files"]:
        path = target / name
        manifest["files"][name] = {"sha256": _sha(path), "size": path.stat().st_size}
    if change is not None:
        change(manifest)
    (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _resign_manifest(target: Path, key_file: Path) -> None:
    from fedward.server.release import _sign_manifest

    _sign_manifest(target, load_private_key(key_file))


def test_an_honest_signed_release_verifies_against_the_trust_file(
    run_dir: Path, keys: Path
) -> None:
    target = _signed_release(run_dir, keys)
    record = json.loads((run_dir / SIGNOFFS_FILE).read_text().splitlines()[-1])
    assert record["signature"]["key_fingerprint"].startswith("sha256:")
    assert record["signature"]["algorithm"] == "ed25519"
    assert (target / MANIFEST_SIG_FILE).is_file()
    assert check_release(run_dir).ok  # a signed sign-off counts for the gate
    report = verify_release_report(target, _trust(keys))
    assert report.problems == [] and report.authenticity_checked
    assert report.signers == [
        f"{MANIFEST_FILE} signed by Ops Engineer (release engineer), key "
        f"{json.loads((target / MANIFEST_SIG_FILE).read_text())['key_fingerprint']}",
        f"sign-off by Dr. Ada Byron (privacy officer), key "
        f"{record['signature']['key_fingerprint']}",
    ]
    logged = json.loads((run_dir / RELEASES_FILE).read_text().splitlines()[-1])
    assert logged["manifest_key_fingerprint"].startswith("sha256:")
    assert logged["signoff"]["key_fingerprint"] == record["signature"]["key_fingerprint"]


def test_a_consistent_rewrite_of_the_privacy_summary_fails(run_dir: Path, keys: Path) -> None:
    target = _signed_release(run_dir, keys)
    _edit_json(target / "privacy_summary.json", lambda s: s["sites"][0].update(epsilon=0.01))
    _rehash_manifest(target)
    problems = verify_release(target, _trust(keys))
    assert any(p.startswith(f"{MANIFEST_SIG_FILE}: the signature does not match") for p in problems)
    # The forger goes further: the sign-off's hash is rewritten too, and the manifest rehashed.
    new_hash = _sha(target / "privacy_summary.json")
    _edit_json(
        target / SIGNOFF_FILE, lambda r: r["sha256"].update({"privacy_summary.json": new_hash})
    )
    _rehash_manifest(target)
    problems = verify_release(target, _trust(keys))
    assert any(p.startswith(f"{MANIFEST_SIG_FILE}: the signature does not match") for p in problems)
    assert any(
        p.startswith(f"{SIGNOFF_FILE}: the signature does not match the sign-off by Dr. Ada Byron")
        for p in problems
    ), problems
    assert verify_release(target) != []  # broken signatures fail even without a trust file


def test_a_renamed_signer_fails(run_dir: Path, keys: Path) -> None:
    target = _signed_release(run_dir, keys)
    _edit_json(target / SIGNOFF_FILE, lambda r: r.update(by="Mallory"))
    _rehash_manifest(target, lambda m: m["signed_off_by"].update(by="Mallory"))
    _resign_manifest(target, keys / "ops.key")  # even with the exporter's trusted key
    (problem,) = verify_release(target, _trust(keys))
    assert problem.startswith(
        f"{SIGNOFF_FILE}: the signature does not match the sign-off by Mallory"
    )


def test_a_sign_off_resigned_with_an_untrusted_or_someone_elses_key_fails(
    run_dir: Path, keys: Path
) -> None:
    target = _signed_release(run_dir, keys)

    def resign(stem: str, by: str) -> list[str]:
        def change(record: dict[str, Any]) -> None:
            record.pop("signature")
            record["by"] = by
            key = load_private_key(keys / f"{stem}.key")
            record["signature"] = sign(key, SIGNOFF_DOMAIN, canonical_json(record))

        _edit_json(target / SIGNOFF_FILE, change)
        signed = json.loads((target / SIGNOFF_FILE).read_text())["signature"]["key_fingerprint"]
        _rehash_manifest(
            target,
            lambda m: m["signed_off_by"].update(by=by, key_fingerprint=signed),
        )
        _resign_manifest(target, keys / "ops.key")
        return verify_release(target, _trust(keys))

    (untrusted,) = resign("mallory", "Mallory")
    assert "signed with key sha256:" in untrusted and "does not list" in untrusted
    assert str(keys / "trust.toml") in untrusted
    impostor, role = resign("ops", "Dr. Ada Byron")  # a trusted key, but not Ada's
    assert impostor.startswith(
        f"{SIGNOFF_FILE} names 'Dr. Ada Byron' as the signer but is signed with the key"
    )
    assert "'Ops Engineer' (release engineer)" in impostor
    assert role.startswith(f"{SIGNOFF_FILE} gives the role 'privacy officer' but")


def test_a_changed_byte_of_the_manifest_fails(run_dir: Path, keys: Path) -> None:
    target = _signed_release(run_dir, keys)
    data = (target / MANIFEST_FILE).read_bytes()
    at = data.index(b'"released_by": "') + len(b'"released_by": "')  # still valid JSON
    changed = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
    (target / MANIFEST_FILE).write_bytes(changed)
    message = f"{MANIFEST_SIG_FILE}: the signature does not match {MANIFEST_FILE}"
    assert any(p.startswith(message) for p in verify_release(target, _trust(keys)))
    assert any(p.startswith(message) for p in verify_release(target))


def test_a_release_signed_by_keys_not_in_the_trust_file_fails(run_dir: Path, keys: Path) -> None:
    sign_off(
        run_dir,
        by="Dr. Ada Byron",
        role="privacy officer",
        key=load_private_key(keys / "mallory.key"),
    )
    target = release(run_dir, run_dir.parent / "out", key=load_private_key(keys / "mallory.key"))
    manifest_problem, signoff_problem = verify_release(target, _trust(keys))
    assert manifest_problem.startswith(f"{MANIFEST_SIG_FILE}: MANIFEST.json is signed with key")
    assert "does not list" in manifest_problem and "trust.toml" in manifest_problem
    assert signoff_problem.startswith(f"{SIGNOFF_FILE}: the sign-off by Dr. Ada Byron")
    assert "does not list" in signoff_problem
    # Without a trust file the same release only shows it is self-consistent.
    report = verify_release_report(target)
    assert report.problems == [] and not report.authenticity_checked
    assert all("a key the folder carries" in line for line in report.signers)


def test_an_unsigned_release_fails_with_a_trust_file(run_dir: Path, keys: Path) -> None:
    _sign(run_dir)
    target = release(run_dir, run_dir.parent / "out")
    problems = verify_release(target, _trust(keys))
    assert problems[0].startswith(f"{MANIFEST_SIG_FILE} is missing: the release was exported")
    assert problems[1].startswith(f"{SIGNOFF_FILE} is not signed")
    assert verify_release(target) == []


def test_a_forged_sign_off_in_the_run_folder_does_not_count(run_dir: Path, keys: Path) -> None:
    sign_off(
        run_dir, by="Dr. Ada Byron", role="privacy officer", key=load_private_key(keys / "ada.key")
    )
    lines = (run_dir / SIGNOFFS_FILE).read_text().splitlines()
    record = json.loads(lines[-1])
    record["by"] = "Mallory"
    (run_dir / SIGNOFFS_FILE).write_text(json.dumps(record) + "\n")
    check = check_release(run_dir)
    assert not check.ok
    (problem,) = check.problems
    assert problem.startswith(f"{SIGNOFFS_FILE}: the signature does not match the sign-off by")


def test_the_signing_commands_keygen_sign_export_and_verify_with_trust(
    run_dir: Path, keys: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    made = runner.invoke(release_app, ["keygen", "--out", str(tmp_path / "k"), "--name", "ada"])
    assert made.exit_code == 0, made.output
    assert stat.S_IMODE((tmp_path / "k" / "ada.key").stat().st_mode) == 0o600
    ada, ops, trust = keys / "ada.key", keys / "ops.key", str(keys / "trust.toml")
    sign_args = ["sign-off", str(run_dir), "--by", "Dr. Ada Byron", "--role", "privacy officer"]
    signed = runner.invoke(release_app, [*sign_args, "--key", str(ada)])
    assert signed.exit_code == 0, signed.output
    assert "signed with key sha256:" in signed.output and "NOT SIGNED" not in signed.output
    checked = runner.invoke(release_app, ["check", str(run_dir)])
    assert checked.exit_code == 0 and "the sign-off is signed with key sha256:" in checked.output
    out = run_dir.parent / "out"
    exported = runner.invoke(
        release_app, ["export", str(run_dir), "--out", str(out), "--key", str(ops)]
    )
    assert exported.exit_code == 0, exported.output
    assert f"{MANIFEST_SIG_FILE}  signed with key sha256:" in exported.output
    (target,) = out.iterdir()
    verified = runner.invoke(release_app, ["verify", str(target), "--trust", trust])
    assert verified.exit_code == 0, verified.output
    assert "signed by Ops Engineer (release engineer)" in verified.output
    assert "sign-off by Dr. Ada Byron (privacy officer)" in verified.output
    assert "authenticity checked against" in verified.output
    assert "AUTHENTICITY NOT CHECKED" not in verified.output
    loud = runner.invoke(release_app, ["verify", str(target)])
    assert loud.exit_code == 0 and "AUTHENTICITY NOT CHECKED (no --trust)" in loud.output
    (target / MANIFEST_FILE).write_bytes((target / MANIFEST_FILE).read_bytes() + b" ")
    broken = runner.invoke(release_app, ["verify", str(target), "--trust", trust])
    assert broken.exit_code == 1
    assert f"{MANIFEST_SIG_FILE}: the signature does not match {MANIFEST_FILE}" in broken.output


def test_the_commands_name_a_bad_key_or_trust_file(run_dir: Path, keys: Path) -> None:
    runner = CliRunner()
    base = ["sign-off", str(run_dir), "--by", "A", "--role", "privacy officer"]
    missing = runner.invoke(release_app, [*base, "--key", str(keys / "absent.key")])
    assert missing.exit_code == 1
    assert f"{keys / 'absent.key'}: signing key file not found" in missing.output
    assert not (run_dir / SIGNOFFS_FILE).exists()
    public = runner.invoke(release_app, [*base, "--key", str(keys / "ada.pub")])
    assert public.exit_code == 1 and "holds a public key" in public.output
    unsigned = runner.invoke(release_app, base)
    assert unsigned.exit_code == 0 and "WARNING: this sign-off is NOT SIGNED" in unsigned.output
    target = release(run_dir, run_dir.parent / "out")
    bad_trust = keys.parent / "bad-trust.toml"
    bad_trust.write_text('[[signers]]\nname = "A"\nrole = "r"\n')
    refused = runner.invoke(release_app, ["verify", str(target), "--trust", str(bad_trust)])
    assert refused.exit_code == 1
    assert f"{bad_trust}: signers[0]: field 'public_key' is missing" in refused.output
