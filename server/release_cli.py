"""`fedward release …`: sign off a run, check it, export it through the release gate, verify it.

A refusal exits with code 1 and prints every problem, so the person at the terminal sees all that
stands between the run and a release at once instead of fixing one thing per attempt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from fedward.common.errors import FedwardError

release_app = typer.Typer(
    help="Release a finished run's model: only with its DP guarantee, a passed membership audit "
    "and a recorded sign-off, as one file set with a manifest of hashes.",
    no_args_is_help=True,
)

RunDir = Annotated[Path, typer.Argument(help="A finished run folder.", show_default=False)]


def _fail(headline: str, problems: list[str]) -> NoReturn:
    typer.echo(headline, err=True)
    for problem in problems:
        typer.echo(f"  - {problem}", err=True)
    raise typer.Exit(1)


@release_app.command("sign-off")
def sign_off(
    run_dir: RunDir,
    by: Annotated[str, typer.Option("--by", help="Full name of the person signing off.")],
    role: Annotated[
        str, typer.Option("--role", help="Their role, e.g. 'privacy officer', 'clinical lead'.")
    ],
    note: Annotated[str, typer.Option(help="Anything the sign-off is conditional on.")] = "",
) -> None:
    """Record that you approve this run's model and card, as they are now, for release."""
    from fedward.server.release import check_release
    from fedward.server.release import sign_off as record_sign_off

    try:
        record = record_sign_off(run_dir, by=by, role=role, note=note)
    except FedwardError as exc:
        _fail("sign-off not recorded:", [str(exc)])
    typer.echo(f"signed off by {record['by']} ({record['role']}) at {record['at']}")
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
    from fedward.server.release import check_release

    result = check_release(run_dir)
    if not result.ok:
        _fail(f"{run_dir} may not be released:", result.problems)
    assert result.signoff is not None
    typer.echo(
        f"{run_dir} may be released (signed off by {result.signoff['by']}, "
        f"{result.signoff['role']}, at {result.signoff['at']})"
    )


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
) -> None:
    """Export the model through the release gate: TorchScript, preprocessing, card, manifest."""
    from fedward.server.release import MANIFEST_FILE, ReleaseRefused
    from fedward.server.release import release as export

    try:
        target = export(run_dir, out, by=by)
    except ReleaseRefused as exc:
        _fail(f"release of {run_dir} refused:", exc.problems)
    except FedwardError as exc:
        _fail(f"release of {run_dir} failed:", [str(exc)])
    manifest = json.loads((target / MANIFEST_FILE).read_text(encoding="utf-8"))
    typer.echo(f"released {manifest['run_name']} (run {manifest['run_id']}) to {target}")
    for name, entry in sorted(manifest["files"].items()):
        typer.echo(f"  {name}  {entry['size']} bytes  sha256 {entry['sha256']}")


@release_app.command("verify")
def verify(
    release_dir: Annotated[
        Path, typer.Argument(help="A release folder (holds MANIFEST.json).", show_default=False)
    ],
) -> None:
    """Check every file of a release against its MANIFEST.json."""
    from fedward.server.release import MANIFEST_FILE, verify_release

    problems = verify_release(release_dir)
    if problems:
        _fail(f"{release_dir} does not match its {MANIFEST_FILE}:", problems)
    manifest = json.loads((release_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    typer.echo(f"{release_dir}: all {len(manifest['files'])} files match {MANIFEST_FILE}")
