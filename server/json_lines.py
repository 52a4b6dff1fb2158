"""Append-only JSON-lines logs read back (the release's sign-offs, the coordinator's audit log):
one JSON object per line, where a torn or foreign line is counted, never fatal, since a log that
a crash cut short must still show every whole entry before the cut."""

from __future__ import annotations

import json
from typing import Any


def json_objects(text: str) -> tuple[list[dict[str, Any]], int]:
    """The objects of ``text``'s lines in order, and how many non-blank lines were not one."""
    objects: list[dict[str, Any]] = []
    unreadable = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            unreadable += 1
            continue
        if isinstance(value, dict):
            objects.append(value)
        else:
            unreadable += 1
    return objects, unreadable
