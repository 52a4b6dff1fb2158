"""A curious coordinator's extraction attempts, against sites whose files carry planted canaries.

Every attempt is an ordinary message a coordinator can send: crafted run configs, huge split
minimums, unapproved requests, repeated queries under new run ids, unknown fields, malformed
records, weights that isolate rows. Each reply is serialised exactly as Flower puts it on the
wire (``message_to_proto``) and its bytes are scanned: no canary planted in a cell, the header
line, the file name or its folder may appear, nor the site's paths; and every reply passes the
site's egress guard again, so no count below the minimum cell is derivable from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, ConfigRecordValues, Message, RecordDict
from flwr.common.serde import message_to_proto

from fedward.client.app import app
from fedward.client.egress_guard import FEDWARD_RECORD, REASON_SOURCE, guard_for
from fedward.common.datasets.bundled import write_site_files
from fedward.common.evaluation_config import AuditConfig, EvaluationConfig
from fedward.common.protocol import (
    KEY_AUDIT_MODEL,
    KEY_BASELINES,
    KEY_LEDGER_HEADS,
    KEY_PURPOSE,
    KEY_RUN,
    KEY_SCHEMA,
    KEY_SPLIT,
    MSG_AUDIT,
    MSG_BASELINES,
    MSG_PROFILE,
)
from fedward.common.run_config import RunConfig
from fedward.common.site_messages import SiteMessage
from tests.conftest import initial_arrays, make_context, make_message, wire_config
from tests.hostile.canaries import (
    CANARIES,
    CELL_CANARY,
    FILE_CANARY,
    FOLDER_CANARY,
    plant,
)


@dataclass(frozen=True)
class Federation:
    open_site: Path  # auto-approves, as a demo site would: its refusals come from its data
    closed_site: Path  # approves nothing: every request is refused before its data are read
    headerless: Path
    latin1: Path
    ragged: Path
    root: Path


def _rewrite(site_toml: Path, edit: Callable[[list[str]], bytes]) -> Path:
    data = site_toml.parent / FOLDER_CANARY / f"{FILE_CANARY}.csv"
    data.write_bytes(edit(data.read_text().splitlines()))
    return site_toml


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("curious")
    configs = write_site_files("heart-disease", root, seed=0)
    for i, config in enumerate(configs):
        plant(config, auto_approve=i != 1)
    headerless = _rewrite(
        configs[2],
        # No header line: the first patient's row (with the cell and number canaries) is read as one.
        lambda ls: ("\n".join(ls[1:]) + "\n").encode(),
    )
    latin1 = _rewrite(
        configs[3], lambda ls: ("\n".join([*ls[:5], ls[5] + "é", *ls[6:]]) + "\n").encode("latin-1")
    )
    extra = write_site_files("heart-disease", root / "more", seed=0)
    plant(extra[0], auto_approve=True)
    ragged = _rewrite(
        extra[0], lambda ls: ("\n".join([*ls[:40], ls[40] + ",1,2,3", *ls[41:]]) + "\n").encode()
    )
    return Federation(configs[0], configs[1], headerless, latin1, ragged, root)


RUN = RunConfig(
    rounds=2, evaluation=EvaluationConfig(bootstrap=10), audit=AuditConfig(reference_models=2)
)


def _content(
    run: RunConfig,
    state: Path,
    *,
    arrays: bool = True,
    run_id: str = "run-1",
    extra: Mapping[str, ConfigRecordValues] | None = None,
) -> RecordDict:
    config = wire_config(run, state_dir=str(state), run_id=run_id)
    config.update(extra or {})  # extra fields go last, as wire_config(**extra) puts them
    content = RecordDict({"config": config})
    if arrays:
        content["arrays"] = initial_arrays(run)
    return content


def _send(site: Path, content: RecordDict, kind: str = "train") -> Message:
    return app(make_message(content, kind), make_context({"site-config": str(site)}))


def _wire_bytes(reply: Message) -> bytes:
    return message_to_proto(reply).SerializeToString()


def _assert_nothing_leaks(reply: Message, asked: Message, fed: Federation) -> dict[str, object]:
    wire = _wire_bytes(reply)
    if reply.has_error():
        reason = reply.error.reason
        assert reason is not None
        info: dict[str, object] = json.loads(reason)
    else:
        info = dict(reply.content[FEDWARD_RECORD])
    for canary in CANARIES:
        assert canary.encode() not in wire, (canary, info)
    assert str(fed.root).encode() not in wire, info
    assert b"JaneDoe" not in wire and not re.search(rb"(line|row) \d", wire), info
    if not reply.has_error():
        record = reply.content[FEDWARD_RECORD]
        site, dataset = str(record["site"]), str(record.get("dataset", ""))
        guard_for(asked, site=site, dataset=dataset).check(reply.content, site=site)
    return info


def _attempt(
    fed: Federation, site: Path, content: RecordDict, kind: str = "train"
) -> dict[str, object]:
    asked = make_message(content, kind)
    reply = app(asked, make_context({"site-config": str(site)}))
    return _assert_nothing_leaks(reply, asked, fed)


def _code(info: dict[str, object]) -> str:
    return SiteMessage.from_json(str(info[REASON_SOURCE])).code


def _run(**changes: object) -> RunConfig:
    return RunConfig.model_validate({**RUN.model_dump(), **changes})


SPLIT_PROBES = [
    {"splits": {"min_per_class": 1000}},
    {"splits": {"min_rows": 10**7}},
    {"splits": {"min_per_class": 60}},
    {"splits": {"test": 0.4, "tune": 0.3, "audit": 0.1}},
]


@pytest.mark.parametrize(
    "changes", SPLIT_PROBES, ids=["per-class", "rows", "per-class-60", "held-out-95"]
)
@pytest.mark.parametrize("kind", ["train", "evaluate", MSG_PROFILE, MSG_AUDIT, MSG_BASELINES])
def test_an_unapproved_request_is_refused_before_the_data_are_read(
    federation: Federation, tmp_path: Path, changes: dict[str, object], kind: str
) -> None:
    info = _attempt(federation, federation.closed_site, _content(_run(**changes), tmp_path), kind)
    assert info["status"] == "refused" and _code(info) == "run-not-approved", info
    assert "negatives" not in str(info) and "rows" not in str(info["reason"])


@pytest.mark.parametrize("changes", SPLIT_PROBES[:2], ids=["per-class", "rows"])
def test_an_impossible_split_at_an_approving_site_names_the_setting_not_the_counts(
    federation: Federation, tmp_path: Path, changes: dict[str, object]
) -> None:
    info = _attempt(federation, federation.open_site, _content(_run(**changes), tmp_path))
    assert _code(info) == "split-impossible", info
    assert not any(ch.isdigit() for ch in str(info["reason"]).split("splits.")[0])


@pytest.mark.parametrize(
    ("name", "edit", "kind", "code"),
    [
        (
            "non-dp",
            lambda c: c["config"].__setitem__(KEY_RUN, _run(privacy={"dp": False}).to_json()),
            "train",
            "non-dp-refused",
        ),
        (
            "split-audit",
            lambda c: c["config"].__setitem__(KEY_SPLIT, "audit"),
            "evaluate",
            "split-not-allowed",
        ),
        (
            "unknown-purpose",
            lambda c: c["config"].__setitem__(KEY_PURPOSE, "exfiltrate"),
            "train",
            "policy-refused",
        ),
        (
            "bad-schema",
            lambda c: c["config"].__setitem__(KEY_SCHEMA, "{not json"),
            "train",
            "message-invalid",
        ),
        (
            "negative-round",
            lambda c: c["config"].__setitem__("server-round", -3),
            "train",
            "message-invalid",
        ),
        (
            "forged-head",
            lambda c: c["config"].__setitem__(
                KEY_LEDGER_HEADS, json.dumps({"cleveland": [5, "ab" * 32]})
            ),
            "train",
            "ledger-rolled-back",
        ),
        (
            "audit-path",
            lambda c: c["config"].__setitem__(KEY_AUDIT_MODEL, "../../etc/passwd"),
            MSG_AUDIT,
            "message-invalid",
        ),
        (
            "baseline-budget",
            lambda c: c["config"].__setitem__(KEY_BASELINES, json.dumps({"budget": 1000})),
            MSG_BASELINES,
            "policy-refused",
        ),
        (
            "baseline-family",
            lambda c: c["config"].__setitem__(
                KEY_BASELINES, json.dumps({"families": ["knn_rows"]})
            ),
            MSG_BASELINES,
            "policy-refused",
        ),
        (
            "wrong-weights",
            lambda c: c.__setitem__("arrays", ArrayRecord({"w": torch.zeros(3, 3)})),
            "evaluate",
            "weights-mismatch",
        ),
        ("unknown-type", None, "query.dump", "message-type-unknown"),
        (
            "unknown-run-key",
            lambda c: c["config"].__setitem__(
                KEY_RUN, json.dumps({**json.loads(RUN.to_json()), "dump_rows": True})
            ),
            "train",
            "coordinator-config-invalid",
        ),
    ],
)
def test_a_crafted_request_gets_a_templated_refusal_and_nothing_else(
    federation: Federation,
    tmp_path: Path,
    name: str,
    edit: Callable[[RecordDict], None] | None,
    kind: str,
    code: str,
) -> None:
    content = _content(RUN, tmp_path)
    if edit is not None:
        edit(content)
    info = _attempt(federation, federation.open_site, content, kind)
    assert info["status"] == "refused" and _code(info) == code, (name, info)


@pytest.mark.parametrize(
    ("site", "code"),
    [
        ("headerless", "header-mismatch"),
        ("latin1", "data-not-utf8"),
        ("ragged", "data-unparseable"),
    ],
)
def test_a_broken_file_is_refused_without_its_cells_or_lines(
    federation: Federation, tmp_path: Path, site: str, code: str
) -> None:
    info = _attempt(federation, getattr(federation, site), _content(RUN, tmp_path))
    assert _code(info) == code, info
    if site == "headerless":
        assert "columns, none named like the label column" in str(info["reason"])


def test_answers_to_ordinary_questions_carry_no_canary_and_no_small_count(
    federation: Federation, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    trained = _send(federation.open_site, _content(RUN, state))
    assert trained.content[FEDWARD_RECORD]["status"] == "ok"
    assert "train_loss" not in trained.content["metrics"]  # under DP nothing per round escapes ε
    arrays = trained.content["arrays"]
    for run_id in ("r1", "r2", "r3"):  # repeated queries under new run ids
        content = RecordDict(
            {"arrays": arrays, "config": wire_config(RUN, state_dir=str(state), run_id=run_id)}
        )
        info = _attempt(federation, federation.open_site, content, "evaluate")
        assert info["status"] == "ok"
    profile = _attempt(
        federation, federation.open_site, _content(RUN, state, arrays=False), MSG_PROFILE
    )
    assert profile["status"] == "ok"


def test_weights_that_isolate_rows_give_only_coarse_histograms(
    federation: Federation, tmp_path: Path
) -> None:
    arrays = initial_arrays(RUN)
    huge = ArrayRecord(
        {k: torch.full(tuple(a.shape), 50.0) for k, a in arrays.to_torch_state_dict().items()}
    )
    content = RecordDict({"arrays": huge, "config": wire_config(RUN, state_dir=str(tmp_path))})
    info = _attempt(federation, federation.open_site, content, "evaluate")
    counts = [*info.get("hist_pos_counts", []), *info.get("hist_neg_counts", [])]  # type: ignore[misc]
    assert all(c == 0 or c >= 10 for c in counts)


def test_unknown_fields_in_the_request_change_nothing_that_leaves(
    federation: Federation, tmp_path: Path
) -> None:
    extra: dict[str, ConfigRecordValues] = {"fedward.dump-rows": "all", "fedward.debug": 1}
    content = _content(RUN, tmp_path, run_id="unknown-fields", extra=extra)
    info = _attempt(federation, federation.open_site, content)
    assert info["status"] == "ok" and not any("dump" in k for k in info)


def test_an_error_reply_is_checked_on_its_way_out(federation: Federation) -> None:
    from flwr.app import Error

    from fedward.client.app import site_egress

    msg = make_message(_content(RUN, federation.root / "s"), "train")
    leaking = Message(Error(code=0, reason=f"failed on {CELL_CANARY}"), reply_to=msg)
    reply = site_egress(
        msg, make_context({"site-config": str(federation.open_site)}), lambda m, c: leaking
    )
    assert CELL_CANARY.encode() not in _wire_bytes(reply)
    assert isinstance(ConfigRecord, type)
