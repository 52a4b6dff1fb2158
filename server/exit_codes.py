"""Exit codes of `fedward simulate` and `fedward run`, and the last line they print.

A script tells the outcomes apart by the code alone:

- ``0``: the run finished with a model and every site took part;
- ``1``: the run failed: no run record, so no model;
- ``2``: the command was used wrongly (a bad option or config, `flwr` not found);
- ``3``: the run stopped without a final model (too few sites could still take part);
- ``4``: the run finished with a model, but some sites were left out (``run_record.json``,
  ``left_out``, says which and why);
- ``130``: interrupted (Ctrl-C; `fedward run` detaches, the run goes on at the SuperLink;
  `fedward simulate` stops the run and every process of its engine).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXIT_FINISHED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_MODEL = 3
EXIT_SITES_LEFT_OUT = 4
EXIT_INTERRUPTED = 130

RUN_RECORD = "run_record.json"


def exit_code(record: Mapping[str, Any] | None) -> int:
    """The exit code of a run from its ``run_record.json`` (``None``: the run wrote none)."""
    if record is None:
        return EXIT_FAILED
    if record.get("status") != "finished":
        return EXIT_NO_MODEL
    if record.get("left_out"):
        return EXIT_SITES_LEFT_OUT
    return EXIT_FINISHED


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's record, or ``None`` when it has none (or an unreadable one)."""
    try:
        data = json.loads((run_dir / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def closing_line(
    run_dir: Path,
    record: Mapping[str, Any] | None,
    *,
    logs: str = "run again with --verbose for the engine's logs",
) -> str:
    """The command's last line: the outcome, its exit code and what to do next (plain text).
    ``logs``: where a failed run's own logs are, as the command can say it."""
    code = exit_code(record)
    where = run_dir / RUN_RECORD
    if record is None:
        return (
            f"failed, no model (exit {code}): the run wrote no run record; see "
            f"{run_dir / 'progress.jsonl'}, and {logs}"
        )
    left = [str(x.get("site")) for x in record.get("left_out") or []]
    if code == EXIT_NO_MODEL:
        # The stop reason ends with each left-out site's reason, printed above: the names suffice.
        reason = str(record.get("stopped_reason") or "no reason given").split("; left out:")[0]
        if not left:
            return f"stopped, no model (exit {code}): {reason}; see {where}"
        return (
            f"stopped, no model (exit {code}): {reason}; {len(left)} site(s) left out "
            f"({', '.join(left)}): why each is out is under 'left_out' in {where}; fix those "
            "sites and run again"
        )
    if code == EXIT_SITES_LEFT_OUT:
        took_part = len(record.get("participating") or [])
        return (
            f"finished without {len(left)} of {took_part + len(left)} sites "
            f"({', '.join(left)}) (exit {code}): why each is out is under 'left_out' in "
            f"{where}; fix them and run again for a model of every site" + _audit_note(run_dir)
        )
    took_part = len(record.get("participating") or [])
    return (
        f"finished, all {took_part} sites took part (exit {code}): the model is "
        f"{run_dir / 'model.pt'}" + _audit_note(run_dir)
    )


def _audit_note(run_dir: Path) -> str:
    """The last line never lets a model whose membership audit did not pass look releasable."""
    try:
        verdict = str(json.loads((run_dir / "audit.json").read_text(encoding="utf-8"))["verdict"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if verdict.startswith("pass"):
        return ""
    return (
        f"; NOT RELEASABLE: its membership audit did not pass ({verdict}); see "
        f"{run_dir / 'audit.html'}"
    )
