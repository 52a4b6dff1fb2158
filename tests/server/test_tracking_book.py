"""The coordinator's book of sites: how each thing a site's reply says is recorded, whatever carried it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedward.common.run_config import RunConfig
from fedward.server.ledger_heads import LedgerHeads
from fedward.server.run_folder import PROGRESS_FILE, RunFolder
from fedward.server.tracking_book import Panels, SiteBook


@pytest.fixture
def book(tmp_path: Path) -> SiteBook:
    folder = RunFolder.at(tmp_path / "run", RunConfig(rounds=2), run_id=1, engine="test")
    heads = LedgerHeads(tmp_path / "ledger_heads.json")
    return SiteBook(folder, histogram_bins=20, min_sites=2, heads=heads)


def _events(book: SiteBook) -> list[dict]:
    lines = (book.folder.path / PROGRESS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_site_refusal_is_recorded_and_stops_the_site_being_asked(book: SiteBook) -> None:
    rec = book.site(7, "hungary")
    book.note_refusal(
        rec, 1, "train", "refused", "budget spent",
        details={"epsilon_remaining": 0.0}, budget_left=0.0, exclude=True, event="refused",
        epsilon_remaining=0.0,
    )  # fmt: skip
    assert (rec.status, rec.reason, rec.epsilon_remaining) == ("refused", "budget spent", 0.0)
    assert rec.refusals == [
        {"round": 1, "phase": "train", "status": "refused", "reason": "budget spent",
         "epsilon_remaining": 0.0}
    ]  # fmt: skip
    assert book.excluded == {7}
    assert _events(book)[-1]["event"] == "site-refused"


def test_a_site_error_is_recorded_but_the_site_is_asked_again(book: SiteBook) -> None:
    rec = book.site(7, "hungary")
    book.note_refusal(
        rec, 1, "train", "error", "disk full",
        details={}, budget_left=None, exclude=False, event="error",
    )  # fmt: skip
    assert rec.status == "error" and rec.epsilon_remaining is None
    assert book.excluded == set()
    assert _events(book)[-1] | {"t": 0} == {
        "t": 0, "event": "site-error", "round": 1, "site": "hungary", "reason": "disk full",
        "phase": "train",
    }  # fmt: skip


def test_a_failed_reply_fails_the_site_for_this_round_only(book: SiteBook) -> None:
    rec = book.site(7)
    book.fail(rec, 2, "train, round 2: crashed")
    assert (rec.status, rec.reason, rec.label) == ("failed", "train, round 2: crashed", "node 7")
    assert book.excluded == set()


def test_a_ledger_rolled_back_is_caught_and_the_coordinator_refuses_the_site(
    book: SiteBook,
) -> None:
    rec = book.site(7, "hungary")
    assert book.observe_ledger(rec, 3, "abc") is None
    problem = book.observe_ledger(rec, 2, "abd")
    assert problem is not None and "rolled back" in problem
    book.refuse(rec, 2, f"ledger check failed: {problem}", phase="train")
    assert rec.status == "refused" and 7 in book.excluded
    assert _events(book)[-1]["phase"] == "train"


def test_a_coordinator_refusal_can_be_announced_without_a_phase(book: SiteBook) -> None:
    rec = book.site(7, "hungary")
    book.refuse(rec, 2, "ledger check failed", announce=False)
    assert "phase" not in _events(book)[-1]


def test_too_few_sites_names_those_left_out(book: SiteBook) -> None:
    rec = book.site(7, "hungary")
    rec.status, rec.reason = "refused", "no"
    book.excluded.add(7)
    assert book.too_few(3, 2) is None
    assert book.too_few(3, 1) == (
        "round 3: only 1 site(s) can still take part, fewer than the run's minimum of 2; "
        "left out: hungary (refused: no)"
    )
    assert book.remaining([7, 8]) == [8]


def test_each_round_attempt_has_its_own_id(book: SiteBook) -> None:
    first, again = book.start_round(1), book.start_round(1)
    assert first != again and book.attempts == {1: again}


def test_a_site_that_drops_out_is_recorded_and_reclaimed_under_a_new_node_id(
    book: SiteBook,
) -> None:
    book.site(7, "hungary")
    book.record_dropouts(2, "train", {7}, [])
    old = book.sites[7]
    assert old.status == "dropped" and old.dropouts[0]["reason"] == (
        "no reply before the round's timeout"
    )
    back = book.reclaim(book.site(9, "hungary"))
    assert back is old and back.node_id == 9 and set(book.sites) == {9}


def test_a_trained_round_records_the_sites_privacy_figures(book: SiteBook) -> None:
    rec = book.site(7, "hungary")
    book.note_trained(rec, 1, {"epsilon": 0.5, "dataset": "heart", "multi_row_patients": 0})
    book.note_outputs(rec, ["counts"], ["small split", "small split"])
    assert (rec.status, rec.rounds_ok, rec.trained_rounds) == ("ok", 1, [1])
    assert (rec.epsilon, rec.dataset, rec.multi_row_patients) == (0.5, "heart", False)
    assert rec.non_dp_outputs == {"counts"} and rec.warnings == ["small split"]


def test_panels_mark_undefined_metrics_and_keep_the_test_histograms(book: SiteBook) -> None:
    rec = book.site(7, "hungary")
    panels = Panels("test", 2)
    panels.add(rec, {"auroc": 0.7}, 40, ["accuracy"], {})
    entry = book.record_panels(panels)
    assert entry["sites"] == {"hungary": {"auroc": 0.7, "n": 40, "accuracy": None}}
    assert entry["histograms"] == {} and entry["pooled"] is None
    assert rec.metrics == {"test:2": {"auroc": 0.7, "n": 40, "accuracy": None}}
    assert "histograms" not in book.record_panels(Panels("test", 2), keep_histograms=False)


def test_the_summary_lists_sites_by_name(book: SiteBook) -> None:
    book.site(2, "switzerland")
    book.site(1, "cleveland")
    assert [s["site"] for s in book.site_summary()] == ["cleveland", "switzerland"]
    assert json.loads(book.to_json())["history"] == {"train": [], "tune": [], "test": []}
