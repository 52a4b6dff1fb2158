"""Nothing raw leaves: every reply every site sent during a full federation, inspected.

One run that asks the sites every question the coordinator can ask (DP preprocessing aggregates,
a tuning trial, training and tune evaluation, the sealed test read, the federated logistic
baseline, the label-shuffle control, the baseline suite, data profiles and the membership audit)
over the real ClientApp behind an in-process grid that puts every message through Flower's wire
encoding. Each reply is inspected as it went on the wire, decoded from the bytes the site sent,
and checked here against the allow-list with the model the coordinator sent: zero violations.
Each is also compared with the reply the site's handlers made, recorded before the site's own
egress guard saw it: they are the same bytes, so the guard never had to act (had it turned a reply
into a refusal, the check above would only have seen the refusal).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, Context, Message

from fedward.client.app import app, site_egress
from fedward.client.egress import REFUSED_STATUS
from fedward.client.egress_guard import ARRAYS_RECORD, FEDWARD_RECORD, EgressViolation, guard_for
from fedward.common.datasets.bundled import write_site_files
from fedward.common.evaluation_config import (
    AuditConfig,
    BaselinesConfig,
    ControlsConfig,
    EvaluationConfig,
    TuningConfig,
)
from fedward.common.flower_compat import message_from_wire, wire_objects
from fedward.common.learning_config import ModelConfig, PreprocessingConfig
from fedward.common.protocol import MSG_AUDIT, MSG_BASELINES, MSG_PROFILE
from fedward.common.run_config import RunConfig
from fedward.server.app import coordinate
from fedward.server.coordinator_settings import CoordinatorSettings
from tests.hostile.canaries import CANARIES, plant
from tests.server.loopback import Exchange, LoopbackGrid, as_grid, server_context

pytestmark = pytest.mark.slow


@dataclass
class Sent:
    """One reply: the message it answered, what the handlers made, what crossed the wire."""

    asked: Message
    made: Message
    made_objects: dict[str, bytes]
    wire: Exchange
    site: int

    @property
    def reply(self) -> Message:
        """The reply as the coordinator decoded it from the wire."""
        return self.wire.wire_reply()


class CapturingApp:
    """The site's ClientApp, recording each reply as its handlers made it, before the guard."""

    def __init__(self) -> None:
        self.asked: list[tuple[Message, int]] = []
        self.made: list[tuple[Message, dict[str, bytes]]] = []
        self.guard = site_egress.guard

    def __call__(self, msg: Message, context: Context) -> Message:
        self.asked.append((msg, context.node_id))
        return app(msg, context)

    def before_the_guard(self, msg: Message, context: Context, reply: Message) -> Message:
        objects = wire_objects(reply)  # bytes now: the guard may change the reply in place
        self.made.append((message_from_wire(reply.object_id, objects, ""), objects))
        return self.guard(msg, context, reply)


@dataclass
class Federation:
    sent: list[Sent]
    path: Path


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    run = RunConfig(
        rounds=2,
        model=ModelConfig(kind="mlp", hidden=[8]),
        preprocessing=PreprocessingConfig(source="dp-aggregates"),
        evaluation=EvaluationConfig(bootstrap=20),
        baselines=BaselinesConfig(
            families=["naive_bayes", "logistic_regression"], pooled_reference=False
        ),
        tuning=TuningConfig(budget=1),
        controls=ControlsConfig(label_shuffle=True),
        audit=AuditConfig(reference_models=2),
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
    grid = LoopbackGrid(capture, 4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(site_egress, "guard", capture.before_the_guard)
        path = coordinate(as_grid(grid), server_context(), settings).path
    # One guard call per message, in order: else the capture no longer sees the site's replies.
    assert len(capture.made) == len(capture.asked) == len(grid.wire)
    sent = [
        Sent(asked, made, objects, wire, site)
        for (asked, site), (made, objects), wire in zip(
            capture.asked, capture.made, grid.wire, strict=True
        )
    ]
    yield Federation(sent, path)


def test_the_run_asked_every_kind_of_question(federation: Federation) -> None:
    path = federation.path
    kinds = Counter(s.asked.metadata.message_type for s in federation.sent)
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
    assert len(federation.sent) >= 60, kinds


def test_the_guard_never_acted_what_went_on_the_wire_is_what_the_handlers_made(
    federation: Federation,
) -> None:
    changed = [
        f"site {s.site}, {s.asked.metadata.message_type}"
        for s in federation.sent
        if s.wire.reply != s.made_objects or s.wire.reply_id != s.made.object_id
    ]
    assert changed == []


def test_every_reply_passes_the_allow_list_and_none_was_refused(
    federation: Federation,
) -> None:
    violations: list[str] = []
    refused: list[str] = []
    for s in federation.sent:
        reply = s.reply
        assert not reply.has_error(), reply.error
        content = reply.content
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


def test_no_reply_carries_anything_shaped_like_the_sites_rows(federation: Federation) -> None:
    """No array in any reply is larger than the largest one the coordinator sent with the question."""
    for s in federation.sent:
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


def test_no_byte_on_the_wire_carries_a_canary_or_a_site_path(federation: Federation) -> None:
    """Every reply's bytes as Flower sent them: no planted cell, header, file or folder name."""
    root = str(federation.path.parent).encode()
    scanned = 0
    for s in federation.sent:
        wire = b"".join(s.wire.reply.values())
        scanned += len(wire)
        for canary in CANARIES:
            assert canary.encode() not in wire, (canary, s.asked.metadata.message_type)
        assert root not in wire, s.asked.metadata.message_type
    assert scanned > 0
