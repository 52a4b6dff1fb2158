"""`fedward coordinator sites add | list | remove`: the operator binds each site's node key to its
name in the coordinator's state folder, next to registering the key with the SuperLink."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from fedward.common.cli import exit_1_on
from fedward.server.site_registry import SiteRegistry, SiteRegistryError

console = Console()

sites_app = typer.Typer(
    help="The sites this coordinator trusts: which node key speaks for which site name.",
    no_args_is_help=True,
)

StateOption = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        help="The coordinator's state folder (the ServerApp's coordinator-state-dir, by default "
        "OUTPUT-DIR/coordinator-state; in the image /var/lib/fedward/runs/coordinator-state).",
    ),
]
_DEFAULT_STATE = Path("runs") / "coordinator-state"


def _registry(state_dir: Path) -> SiteRegistry:
    with exit_1_on(SiteRegistryError, "error", console):
        return SiteRegistry(state_dir)


@sites_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The site's name, as its site config states it.")],
    key: Annotated[Path, typer.Argument(help="The site's node public key (KEY.pub).")],
    state_dir: StateOption = _DEFAULT_STATE,
    replace: Annotated[
        bool, typer.Option("--replace", help="Bind a registered site to a new key (rotation).")
    ] = False,
) -> None:
    """Bind NAME to the node key KEY.pub: replies from that key are NAME's, whatever they claim."""
    registry = _registry(state_dir)
    with exit_1_on(SiteRegistryError, "not added", console):
        site = registry.add(name, key, replace=replace)
    console.print(
        f"site '{escape(site.name)}' bound to key {site.fingerprint[:16]}… in "
        f"{escape(str(registry.path))}. Register the same key with the SuperLink too: "
        f"`flwr supernode register {escape(str(key))} FEDERATION`.",
        soft_wrap=True,
    )


@sites_app.command("list")
def list_sites(state_dir: StateOption = _DEFAULT_STATE) -> None:
    """The registered sites and their key fingerprints."""
    registry = _registry(state_dir)
    if not registry.active:
        console.print(
            f"no sites registered in {escape(str(registry.path))}: a site is the name it "
            "reports (`fedward coordinator sites add NAME KEY.pub`)"
        )
        return
    for site in sorted(registry.sites.values(), key=lambda s: s.name):
        console.print(
            f"{escape(site.name)}\tsha256:{site.fingerprint}\tadded {site.added_at}\t"
            f"{escape(site.key_file)}",
            soft_wrap=True,
        )


@sites_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The site to forget.")],
    state_dir: StateOption = _DEFAULT_STATE,
) -> None:
    """Unbind NAME: its key no longer speaks for any site (unregister it at the SuperLink too)."""
    registry = _registry(state_dir)
    with exit_1_on(SiteRegistryError, "not removed", console):
        registry.remove(name)
    console.print(
        f"site '{escape(name)}' removed from {escape(str(registry.path))}; unregister its key at "
        "the SuperLink too (`flwr supernode unregister NODE_ID FEDERATION`)."
    )
