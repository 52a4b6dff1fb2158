"""The coordinator's memory of every site's ledger head, so a rolled-back ledger is noticed.

A site whose ledger was restored from an old backup (or deleted) would otherwise start its lifetime
budget afresh. The coordinator keeps the last (entry count, head hash) each site reported, sends it
with every training request, and the site proves its chain still contains that entry; the
coordinator also refuses a site whose reported entry count goes backwards.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedward.common.durable_files import atomic_write_json


class LedgerHeads:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.heads: dict[str, tuple[int, str]] = {}
        if self.path.exists():
            raw = json.loads(self.path.read_text())
            self.heads = {site: (int(v[0]), str(v[1])) for site, v in raw.items()}

    def to_json(self) -> str:
        return json.dumps(
            {site: [seq, head] for site, (seq, head) in self.heads.items()}, sort_keys=True
        )

    def observe(self, site: str, seq: int, head: str) -> str | None:
        """Record a reported head; return the problem when it does not extend the last one seen."""
        known = self.heads.get(site)
        if known is not None:
            known_seq, known_head = known
            if seq < known_seq:
                return (
                    f"its ledger has {seq} entries, fewer than the {known_seq} the coordinator saw "
                    "before: it was rolled back or replaced"
                )
            if seq == known_seq and head != known_head:
                return f"its ledger entry {seq} changed since the coordinator saw it"
        self.heads[site] = (seq, head)
        return None

    def save(self) -> None:
        atomic_write_json(
            self.path, {site: [seq, head] for site, (seq, head) in self.heads.items()}
        )
