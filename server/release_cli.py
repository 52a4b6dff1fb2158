"""`fedward release …`: make a signing key, sign off a run, check it, export it through the
release gate, verify it.

A refusal exits with code 1 and prints every problem, so the person at the terminal sees all that
stands between the run and a release at once instead of fixing one thing per attempt. A sign-off or
export without --key still works but says loudly that it is unsigned: a receiver with a trust file
will refuse it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from fedward.common.errors import FedwardError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

release_app = typer.Typer(
    help="Release a finished run's model: only with its DP guarantee, a passed membership audit "
    "and a recorded sign-off, as one file set with a manifest of hashes.",
    no_args_is_help=True,
)

RunDir = Annotated[Path, typer.Argument(help="A finished run folder.", show_default=False)]
KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="Your private signing key (NAME.key from `fedward release keygen`). Without it the "
        "record is unsigned and `release verify --trust` refuses it.",
        show_default=False,
    ),
]


def _fail(headline: str, problems: list[str]) -> NoReturn:
    typer.echo(headline, err=True)
    for problem in problems:
        typer.echo(f"  - {problem}", err=True)
    raise typer.Exit(1)


def _load_key(path: Path | None, what: str) -> Ed25519PrivateKey | None:
    from fedward.server.release_signing import load_private_key

    if path is None:
        return None
    try:
        return load_private_key(path)
    except FedwardError as exc:
        _fail(f"{what}:", [str(exc)])


def _unsigned(what: str) -> None:
    typer.echo(
        f"WARNING: {what} is NOT SIGNED (no --key): anyone who can write these files could "
        "have made it, and `fedward release verify --trust` will refuse it.",
        err=True,
    )


@release_app.command("keygen")
def keygen(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the key files.", show_default=False)
    ],
    name: Annotated[
        str,
        typer.Option("--name", help="File name for the keys: NAME.key and NAME.pub."),
    ],
    role: Annotated[
        str | None, typer.Option(help="Your role, only to fill in the trust-file entry.")
    ] = None,
) -> None:
    """Make an Ed25519 signing key: NAME.key (private, mode 0600) and NAME.pub (public)."""
    from fedward.server.release_signing import fingerprint, trust_entry
    from fedward.server.release_signing import keygen as make_key

    try:
        key_path, pub_path, public = make_key(out, name)
    except (FedwardError, OSError) as exc:
        _fail("no key written:", [str(exc)])
    typer.echo(f"private key: {key_path} (mode 0600; keep it secret, never share or copy it)")
    typer.echo(f"public key:  {pub_path}")
    typer.echo(f"fingerprint: {fingerprint(public)}")
    typer.echo(
        "give the public key to whoever keeps the trust file; its entry (set name to your name "
        "exactly as you sign with --by):"
    )
    typer.echo(trust_entry(name, role, public))


@release_app.command("sign-off")
def sign_off(
    run_dir: RunDir,
    by: Annotated[str, typer.Option("--by", help="Full name of the person signing off.")],
    role: Annotated[
        str, typer.Option("--role", help="Their role, e.g. 'privacy officer', 'clinical lead'.")
    ],
    note: Annotated[str, typer.Option(help="Anything the sign-off is conditional on.")] = "",
    key: KeyFile = None,
) -> None:
    """Record (and with --key, sign) that you approve this run's model and card, as they are now."""
    from fedward.server.release_gate import check_release
    from fedward.server.release_signoff import sign_off as record_sign_off

    private = _load_key(key, "sign-off not recorded")
    try:
        record = record_sign_off(run_dir, by=by, role=role, note=note, key=private)
    except FedwardError as exc:
        _fail("sign-off not recorded:", [str(exc)])
    typer.echo(f"signed off by {record['by']} ({record['role']}) at {record['at']}")
    if private is None:
        _unsigned("this sign-off")
    else:
        typer.echo(f"  signed with key {record['signature']['key_fingerprint']}")
    for name, digest in sorted(record["sha256"].items()):
        typer.echo(f"  {name}  sha256 {digest}")
    remaining = check_release(run_dir).problems
    if remaining:
        typer.echo("the release gate still refuses this run:")
        for problem in remaining:
            typer.echo(f"  - {problem}")


@release_app.command("check")
def check(run_dir: RunDir) -> None:
    """Say whether the run may be released, and every reason it may not (exit code 1)."""
    from fedward.server.release_gate import check_release

    result = check_release(run_dir)
    if not result.ok:
        _fail(f"{run_dir} may not be released:", result.problems)
    assert result.signoff is not None
    signature = result.signoff.get("signature")
    typer.echo(
        f"{run_dir} may be released (signed off by {result.signoff['by']}, "
        f"{result.signoff['role']}, at {result.signoff['at']})"
    )
    if isinstance(signature, dict):
        typer.echo(f"  the sign-off is signed with key {signature.get('key_fingerprint')}")
    else:
        _unsigned("the sign-off")


@release_app.command("export")
def release(
    run_dir: RunDir,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder that receives the release folder.", show_default=False
        ),
    ],
    by: Annotated[
        str | None,
        typer.Option(help="Who performs the export (default: the account running it)."),
    ] = None,
    key: KeyFile = None,
) -> None:
    """Export the model through the release gate; with --key, sign its manifest (MANIFEST.sig)."""
    from fedward.server.release import ReleaseRefused
    from fedward.server.release import release as export
    from fedward.server.release_files import MANIFEST_FILE, MANIFEST_SIG_FILE

    private = _load_key(key, f"release of {run_dir} refused")
    try:
        target = export(run_dir, out, by=by, key=private)
    except ReleaseRefused as exc:
        _fail(f"release of {run_dir} refused:", exc.problems)
    except FedwardError as exc:
        _fail(f"release of {run_dir} failed:", [str(exc)])
    manifest = json.loads((target / MANIFEST_FILE).read_text(encoding="utf-8"))
    typer.echo(f"released {manifest['run_name']} (run {manifest['run_id']}) to {target}")
    for name, entry in sorted(manifest["files"].items()):
        typer.echo(f"  {name}  {entry['size']} bytes  sha256 {entry['sha256']}")
    if private is None:
        _unsigned(f"{MANIFEST_FILE}")
    else:
        signature = json.loads((target / MANIFEST_SIG_FILE).read_text(encoding="utf-8"))
        typer.echo(f"  {MANIFEST_SIG_FILE}  signed with key {signature['key_fingerprint']}")


@release_app.command("verify")
def verify(
    release_dir: Annotated[
        Path, typer.Argument(help="A release folder (holds MANIFEST.json).", show_default=False)
    ],
    trust: Annotated[
        Path | None,
        typer.Option(
            "--trust",
            help="Trust file listing the signers whose keys you accept (TOML, or .json). "
            "Without it only the hashes are checked, not who made the release.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check a release's files against MANIFEST.json and, with --trust, who signed it."""
    from fedward.server.release_files import MANIFEST_FILE
    from fedward.server.release_signing import load_trust
    from fedward.server.release_verify import verify_release_report

    trusted = None
    if trust is not None:
        try:
            trusted = load_trust(trust)
        except FedwardError as exc:
            _fail(f"{release_dir} not verified: the trust file is unusable:", [str(exc)])
    report = verify_release_report(release_dir, trusted)
    if report.problems:
        _fail(f"{release_dir} does not verify:", report.problems)
    manifest = json.loads((release_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    typer.echo(f"{release_dir}: all {len(manifest['files'])} files match {MANIFEST_FILE}")
    for line in report.signers:
        typer.echo(f"  {line}")
    if trusted is None:
        typer.echo(
            "WARNING: AUTHENTICITY NOT CHECKED (no --trust): the files agree with MANIFEST.json, "
            "but anyone who could write this folder could have rewritten a file, rehashed the "
            "manifest and signed it again with a key of their own. Verify with "
            "`--trust FILE` listing the signers you accept.",
            err=True,
        )
    else:
        typer.echo(f"  authenticity checked against {trust}")
