"""The sites' training-data profiles, collected once per run for the model card.

Each site answers ``query.profile`` with split sizes, prevalence, missingness and feature summaries
of its training split, small cells already suppressed (and checked again by its egress guard). The
coordinator only files them: ``profiles.json`` in the run folder.
"""

from __future__ import annotations

import json
from logging import WARNING
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedward.common.protocol import CONFIG, MSG_PROFILE, STATUS_OK
from fedward.server.federation import ROUND_TIMEOUT_S, Federation, FederationResult
from fedward.server.site_tracking import _reply_info

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
    for reply in grid.send_and_receive(messages, timeout=ROUND_TIMEOUT_S):
        rec = result.tracker._site(reply.metadata.src_node_id)
        if reply.has_error():
            sites[rec.label] = {"status": "failed", "reason": reply.error.reason}
            log(WARNING, "site %s failed its profile: %s", rec.label, reply.error.reason)
            continue
        info = _reply_info(reply)
        if str(info.get("status")) != STATUS_OK:
            sites[rec.label] = {"status": info.get("status"), "reason": info.get("reason")}
            continue
        rec.non_dp_outputs.update(str(x) for x in info.get("non_dp_outputs", []))
        min_cell = max(min_cell, int(info.get("min_cell_size", 0)))
        sites[rec.label] = {"status": STATUS_OK, **json.loads(str(info["training_profile"]))}
    profiles = {
        "sites": dict(sorted(sites.items())),
        "min_cell_size": min_cell,
        "non_dp": "Training-split profiles are non-DP aggregates: values that would reveal a count "
        "under a site's minimum cell size are suppressed (null); minima, maxima and quantiles are "
        "never collected.",
    }
    main.folder.write_json(PROFILES_FILE, profiles)
    return profiles
