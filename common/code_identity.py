"""Which fedward code is running: a hash of the installed source, for approvals and manifests.

`flwr run` ships an app package to every site; the site only runs code it approved. The hash covers
the packages a site executes (fedward.client and fedward.common), file by file, so the same release
installed anywhere gives the same value.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SITE_PACKAGES = ("fedward.client", "fedward.common")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(name)
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=4)
def code_hash(packages: tuple[str, ...] = SITE_PACKAGES) -> str:
    digest = hashlib.sha256()
    for name in packages:
        root = _package_dir(name)
        for path in sorted(root.rglob("*.py")):
            rel = f"{name}/{path.relative_to(root).as_posix()}"
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def fedward_version() -> str:
    try:
        return version("fedward")
    except PackageNotFoundError:
        return "unknown"
