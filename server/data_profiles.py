"""The sites' training-data profiles, collected once per run for the model card.

Each site answers ``query.profile`` with split sizes, prevalence, missingness and feature summaries
of its training split, small cells already suppressed (and checked again by its egress guard). The
coordinator only files them: ``profiles.json`` in the run folder.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedward.common.protocol import CONFIG, MSG_PROFILE, STATUS_OK
from fedward.server.federation import Federation, FederationResult

PROFILES_FILE = "profiles.json"


def collect_profiles(grid: Grid, main: Federation, result: FederationResult) -> dict[str, Any]:
    """Ask every site that trained for its profile; write and return profiles.json's content."""
    nodes = [n for n, rec in result.tracker.sites.items() if rec.status == STATUS_OK]
    messages = [
        Message(
            RecordDict({CONFIG: ConfigRecord(dict(main.config()))}),
            dst_node_id=n,
            message_type=MSG_PROFILE,
        )
        for n in nodes
    ]
    sites: dict[str, Any] = {}
    min_cell = 0
    for site, info in result.tracker.ask(
        grid, messages, "profile", main.run.strategy.round_timeout
    ).items():
        if info.get("status") != STATUS_OK:
            sites[site] = info
            continue
        min_cell = max(min_cell, int(info.get("min_cell_size", 0)))
        sites[site] = {"status": STATUS_OK, **json.loads(str(info["training_profile"]))}
    profiles = {
        "sites": dict(sorted(sites.items())),
        "min_cell_size": min_cell,
        "non_dp": "Training-split profiles are non-DP aggregates: values that would reveal a count "
        "under a site's minimum cell size are suppressed (null); minima, maxima and quantiles are "
        "never collected.",
    }
    main.folder.write_json(PROFILES_FILE, profiles)
    return profiles
