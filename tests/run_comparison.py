"""Compare two run folders of the same config and seed: do they say the same thing?

A refactoring must not change what a run produces. Two runs of one seeded simulation differ only
in their ids, clocks, durations and the git commit they ran from, and in the last bits of a few floats (thread scheduling in
summed reductions), so this compares the JSON outputs with those normalised away and floats to a
relative tolerance, and the Markdown reports line by line after masking ids and times.

    python -m tests.run_comparison RUN_A RUN_B

Exits 0 when they agree, 1 with the first differences listed otherwise.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

JSON_FILES = (
    "metrics.json",
    "privacy_summary.json",
    "audit.json",
    "baselines.json",
    "profiles.json",
    "model_card.json",
    "model.json",
    "transform.json",
    "run_config.json",
)
TEXT_FILES = ("model_card.md", "audit.md", "baselines.md")
VOLATILE_KEYS = re.compile(
    r"(^|_)(run_id|flower_run_id|created|started|finished|elapsed_s|seconds|timestamp|time|at|"
    r"path|dir|out|run_dir|output_dir|git_commit)$|_seconds|seconds_|_s$"
)
MASKS = (
    (re.compile(r"\b[0-9a-f]{32}\b"), "<run-id>"),
    (re.compile(r"\b[0-9a-f]{40}\b"), "<git-commit>"),
    (re.compile(r"Flower run \d+"), "Flower run <n>"),
    (re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00"), "<time>"),
    (re.compile(r"\d{8}-\d{6}-"), "<stamp>-"),
    (re.compile(r"\b\d+(\.\d+)? s\b"), "<s> s"),
    (re.compile(r"/[^\s)`'\"]*/(before|after)[^\s)`'\"]*"), "<path>"),
)
REL_TOL = 1e-5


def _differences(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if VOLATILE_KEYS.search(str(key)):
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'A' if key in a else 'B'}")
                continue
            _differences(a[key], b[key], f"{where}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} items vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _differences(x, y, f"{where}[{i}]", out)
    elif isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        if not math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12):
            out.append(f"{where}: {a!r} vs {b!r}")
    elif isinstance(a, str) and isinstance(b, str):
        if _mask(a) != _mask(b):
            out.append(f"{where}: {a[:80]!r} vs {b[:80]!r}")
    elif a != b:
        out.append(f"{where}: {a!r} vs {b!r}")


def _mask(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def compare(run_a: Path, run_b: Path) -> list[str]:
    """Every difference between the two run folders that is not an id, a clock or float noise."""
    out: list[str] = []
    for name in JSON_FILES:
        fa, fb = run_a / name, run_b / name
        if fa.exists() != fb.exists():
            out.append(f"{name}: present in only one run")
            continue
        if fa.exists():
            _differences(json.loads(fa.read_text()), json.loads(fb.read_text()), name, out)
    for name in TEXT_FILES:
        fa, fb = run_a / name, run_b / name
        if fa.exists() != fb.exists():
            out.append(f"{name}: present in only one run")
            continue
        if not fa.exists():
            continue
        la, lb = _mask(fa.read_text()).splitlines(), _mask(fb.read_text()).splitlines()
        out.extend(
            f"{name}:{i + 1}: {x[:100]!r} vs {y[:100]!r}"
            for i, (x, y) in enumerate(zip(la, lb, strict=False))
            if x != y
        )
        if len(la) != len(lb):
            out.append(f"{name}: {len(la)} lines vs {len(lb)}")
    return out


def _run_folder(path: Path) -> Path:
    """A run folder, or the single run folder inside a `--out` folder."""
    if (path / "run_record.json").exists():
        return path
    runs = [p for p in path.iterdir() if (p / "run_record.json").exists()]
    if len(runs) != 1:
        raise SystemExit(f"{path}: expected one run folder, found {len(runs)}")
    return runs[0]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    diffs = compare(_run_folder(Path(argv[0])), _run_folder(Path(argv[1])))
    for line in diffs[:60]:
        print(line)
    print(f"{len(diffs)} differences" if diffs else "the runs agree")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
