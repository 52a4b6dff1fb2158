"""A DP logistic run launched with `fedward run` against a loopback federation and followed from
outside: its progress events, the sites' ledgers, and waiting (bounded) for what a test needs."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedward.client.ledger import Ledger, LedgerEntry
from tests.e2e.processes import BIN, ProcessGroup

REPO = Path(__file__).resolve().parents[2]
SITES = ("cleveland", "hungary", "switzerland", "va-long-beach")


def logistic_run_toml(name: str, rounds: int, extra: str = "") -> str:
    """A DP logistic run with a small bootstrap, no baselines and no audit: only the federation."""
    return f"""name = "{name}"
rounds = {rounds}

[model]
kind = "logistic"

[evaluation]
bootstrap = 20

[baselines]
enabled = false

[audit]
enabled = false
{extra}"""


def start_fedward_run(
    group: ProcessGroup, env: dict[str, str], run_toml: Path, out: Path, log: Path
) -> subprocess.Popen[bytes]:
    """`fedward run` of this checkout on the federation ``fedward-test``, which it follows."""
    return group.start(
        [
            str(BIN / "fedward"),
            "run",
            str(REPO),
            "fedward-test",
            "-c",
            f"run-config='{run_toml}' output-dir='{out}'",
        ],
        env=env,
        log=log,
    )


def progress_events(run_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    path = run_dir / "progress.jsonl"
    for line in (path.read_text() if path.is_file() else "").splitlines():
        with contextlib.suppress(ValueError):  # a line being written
            out.append(json.loads(line))
    return out


def dp_rows(state: Path, run_id: str) -> list[LedgerEntry]:
    """The DP-SGD spends of one run in a site's ledger."""
    return [e for e in Ledger(state).entries() if e.kind == "dp-sgd" and e.run_id == run_id]


def wait_for(what: str, ready: Callable[[], Any], timeout: float, poll: float = 0.2) -> Any:
    """``ready()``'s first truthy value; TimeoutError saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what} within {timeout:g} s")
