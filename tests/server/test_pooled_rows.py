"""Wherever pooled rows are printed, a figure the histograms cannot support is missing with its reason."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from rich.console import Console

from fedward.common.score_histograms import score_histogram
from fedward.server.pooled_metrics import pooled_panel
from fedward.server.report_card_verdicts import federated_auroc_text as _federated_auroc_text
from fedward.server.report_card_verdicts import pooled_omissions as _pooled_omissions
from fedward.server.run_console import final_table as _final_table


def _test_entry() -> dict[str, object]:
    rng = np.random.default_rng(3)
    y = (rng.random(80) < 0.5).astype(np.int64)
    s = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 80), 0, 1)
    small = (np.array([1] * 3 + [0] * 30), np.linspace(0.1, 0.9, 33))
    hists = {
        "big": score_histogram(y, s, 20).coarsen(10),
        "small": score_histogram(*small, 20).coarsen(10),
    }
    sites = {
        "big": {"n": 80.0, "accuracy": 0.8, "auroc": 0.85},
        "small": {"n": 33.0, "accuracy": None, "auroc": 0.6},
    }
    return {"sites": sites, "pooled": pooled_panel(hists, 20), "histograms": {}}


def test_the_terminal_table_names_the_left_out_site_and_each_omission(tmp_path: Path) -> None:
    test = _test_entry()
    (tmp_path / "metrics.json").write_text(json.dumps({"test": test}))
    (tmp_path / "run_record.json").write_text(json.dumps({"sites": []}))
    out = io.StringIO()
    Console(file=out, width=200).print(_final_table(tmp_path))
    text = out.getvalue()
    assert "pooled*†" in text
    assert "pooled row covers 1 of 2 sites: left out small" in text
    assert "pooled calibration error left out" in text


def test_the_card_states_coverage_and_omissions_and_quotes_no_biased_auroc() -> None:
    test = _test_entry()
    pooled = test["pooled"]
    assert isinstance(pooled, dict)
    lines = _pooled_omissions(pooled)
    assert lines[0].startswith("Pooled figures cover 1 of 2 sites: left out small")
    assert any(line.startswith("No pooled expected calibration error") for line in lines)
    text = _federated_auroc_text(test) or ""
    weighted = (0.85 * 80 + 0.6 * 33) / 113
    assert f"{weighted:.3f} weighted by test size" in text
    lo, hi = pooled["bounds"]["auroc"]
    assert f"between {lo:.3f} and {hi:.3f}" in text
    assert f"{pooled['auroc']:.3f}" not in text


def test_a_pool_built_without_names_is_named_from_the_released_histograms() -> None:
    """The coordinator pools a list; the printed coverage names the site from its empty class."""
    rng = np.random.default_rng(5)
    y = (rng.random(60) < 0.5).astype(np.int64)
    s = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 60), 0, 1)
    small = score_histogram(np.array([1] * 3 + [0] * 30), np.linspace(0.1, 0.9, 33), 20)
    hists = {"big": score_histogram(y, s, 20).coarsen(10), "small": small.coarsen(10)}
    pooled = pooled_panel(list(hists.values()), 20)
    assert pooled["sites_left_out"] == []
    assert pooled["coverage"].startswith("1 of 2 sites: 1 left out, whose histogram has")
    records = {k: h.to_record() for k, h in hists.items()}
    lines = _pooled_omissions(pooled, records)
    assert lines[0].startswith("Pooled figures cover 1 of 2 sites: left out small, whose")
