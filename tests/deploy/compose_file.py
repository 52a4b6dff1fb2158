"""Reading docker-compose.yml statically, as Compose would: variables with their defaults, mounts in
short and long syntax. No Docker needed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def interpolate(value: str) -> str:
    """``${NAME:-default}`` becomes its default, as with the variable unset; ``$$`` becomes ``$``.

    A variable without a default would make the file depend on the environment: that is an error.
    """

    def default(match: re.Match[str]) -> str:
        if match["op"] not in (":-", "-"):
            raise ValueError(f"compose variable ${{{match['name']}}} has no default")
        return match["default"]

    return _VARIABLE.sub(default, value).replace("$$", "$")


@dataclass(frozen=True)
class Mount:
    kind: str  # "bind" or "volume"
    source: str  # a host path (bind) or a volume name
    target: str
    read_only: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    out: list[Mount] = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = interpolate(entry).split(":")
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            out.append(Mount(kind, source, target, "ro" in mode.split(",")))
        else:
            out.append(
                Mount(
                    entry["type"],
                    interpolate(str(entry["source"])),
                    entry["target"],
                    bool(entry.get("read_only", False)),
                )
            )
    return out


def exposed_ports(service: dict[str, Any]) -> list[int]:
    return [int(str(p).split("/")[0]) for p in service.get("expose", [])]


def normalised(path: str) -> PurePosixPath:
    """A bind source relative to the compose file's folder, without ``./``."""
    return PurePosixPath(path.removeprefix("./"))
