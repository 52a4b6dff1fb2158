"""Nothing raw leaves: every reply every site sent during a full federation, inspected.

One run that asks the sites every question the coordinator can ask (DP preprocessing aggregates,
a tuning trial, training and tune evaluation, the sealed test read, the federated logistic
baseline, the label-shuffle control, the baseline suite, data profiles and the membership audit)
over the real ClientApp behind an in-process grid. Each reply is captured as it leaves the site,
outside the ClientApp's own egress mod, and checked again here against the allow-list with the
model the coordinator sent: zero violations, and not one reply that the site's guard had to turn
into a refusal (that would mean the site tried to send something the allow-list does not allow).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, Context, Message

from fedward.client.app import app
from fedward.common.config import RunConfig
from fedward.common.datasets.bundled import write_site_files
from fedward.common.egress import (
    ARRAYS_RECORD,
    FEDWARD_RECORD,
    REFUSED_STATUS,
    EgressViolation,
    guard_for,
)
from fedward.common.protocol import MSG_AUDIT, MSG_BASELINES, MSG_PROFILE
from fedward.server.app import CoordinatorSettings, coordinate
from tests.hostile.canaries import CANARIES, plant
from tests.server.loopback import LoopbackGrid, server_context

pytestmark = pytest.mark.slow


@dataclass
class Sent:
    """One reply as it left a site, with the message it answered."""

    asked: Message
    reply: Message
    site: int


class CapturingApp:
    """The site's ClientApp, recording what it hands back to the network."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def __call__(self, msg: Message, context: Context) -> Message:
        reply = app(msg, context)
        self.sent.append(Sent(msg, reply, context.node_id))
        return reply


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> tuple[CapturingApp, Path]:
    run = RunConfig(
        rounds=2,
        model={"kind": "mlp", "hidden": [8]},
        preprocessing={"source": "dp-aggregates"},
        evaluation={"bootstrap": 20},
        baselines={"families": ["naive_bayes", "logistic_regression"], "pooled_reference": False},
        tuning={"budget": 1},
        controls={"label_shuffle": True},
        audit={"reference_models": 2},
    )
    capture = CapturingApp()
    root = tmp_path_factory.mktemp("egress")
    # The four hospitals' own files, each carrying canaries in a cell, its header, its name and
    # its folder: nothing of them may appear in any byte a site sends.
    configs = write_site_files("heart-disease", root / "sites", seed=0)
    for config in configs:
        plant(config, auto_approve=True)
    settings = CoordinatorSettings(
        run=run,
        run_dir=str(root / "run"),
        engine="simulation",
        sim_site_configs=[str(c) for c in configs],
    )
    path = coordinate(LoopbackGrid(capture, 4), server_context(), settings).path
    return capture, path


def test_the_run_asked_every_kind_of_question(federation: tuple[CapturingApp, Path]) -> None:
    capture, path = federation
    kinds = Counter(s.asked.metadata.message_type for s in capture.sent)
    assert (path / "model_card.md").is_file()
    # preprocessing aggregates, training, tune/test evaluation, baselines, profiles, the audit
    assert set(kinds) == {
        "query",
        "train",
        "evaluate",
        MSG_BASELINES,
        MSG_PROFILE,
        MSG_AUDIT,
    }, kinds
    assert kinds["train"] >= 4 * 2 and kinds["evaluate"] >= 4 * 3, kinds
    assert len(capture.sent) >= 60, kinds


def test_every_reply_passes_the_allow_list_and_none_was_refused(
    federation: tuple[CapturingApp, Path],
) -> None:
    capture, _ = federation
    violations: list[str] = []
    refused: list[str] = []
    for s in capture.sent:
        assert not s.reply.has_error(), s.reply.error
        content = s.reply.content
        status = content.get(FEDWARD_RECORD)
        if status is not None and status.get("status") == REFUSED_STATUS:
            refused.append(
                f"site {s.site}, {s.asked.metadata.message_type}: {status.get('reason')!r}"
            )
            continue
        record = content.config_records.get(FEDWARD_RECORD)
        site = str(record["site"]) if record is not None else f"node {s.site}"
        dataset = str(record.get("dataset", "")) if record is not None else ""
        try:
            guard_for(s.asked, site=site, dataset=dataset).check(content, site=site)
        except EgressViolation as exc:
            violations.append(f"{s.asked.metadata.message_type}: {exc}")
    assert refused == []
    assert violations == []


def test_no_reply_carries_anything_shaped_like_the_sites_rows(
    federation: tuple[CapturingApp, Path],
) -> None:
    """No array in any reply is larger than the largest one the coordinator sent with the question."""
    capture, _ = federation
    for s in capture.sent:
        content = s.reply.content
        sent_arrays = s.asked.content.get(ARRAYS_RECORD)
        largest = (
            max(a.numpy().size for a in sent_arrays.values())
            if isinstance(sent_arrays, ArrayRecord)
            else 0
        )
        for name, record in content.items():
            if isinstance(record, ArrayRecord):
                for key, arr in record.items():
                    assert arr.numpy().size <= largest, (s.site, name, key)


def test_no_byte_on_the_wire_carries_a_canary_or_a_site_path(
    federation: tuple[CapturingApp, Path],
) -> None:
    """Every reply serialised as Flower sends it: no planted cell, header, file or folder name."""
    from flwr.common.serde import message_to_proto

    capture, path = federation
    root = str(path.parent).encode()
    scanned = 0
    for s in capture.sent:
        wire = message_to_proto(s.reply).SerializeToString()
        scanned += len(wire)
        for canary in CANARIES:
            assert canary.encode() not in wire, (canary, s.asked.metadata.message_type)
        assert root not in wire, s.asked.metadata.message_type
    assert scanned > 0
