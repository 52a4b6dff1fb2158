"""The reports' Jinja templates: shipped as package data, escaped in HTML only."""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from fedward.server.report_templates import render, template_environment

TEMPLATES = ("card.md.j2", "card.html.j2", "audit.md.j2", "audit.html.j2", "baselines.md.j2")


def test_every_template_ships_as_package_data() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "templates/*.j2" in pyproject["tool"]["setuptools"]["package-data"]["fedward.server"]
    shipped = {p.name for p in files("fedward.server").joinpath("templates").iterdir()}
    assert set(TEMPLATES) <= shipped


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_parses(name: str) -> None:
    template_environment(name.endswith(".md.j2")).get_template(name)


def test_html_is_escaped_and_markdown_is_not() -> None:
    report: dict[str, Any] = {
        "run_id": "r",
        "verdict": "pass <b>",
        "headline": None,
        "thresholds": {"max_tpr_at_1pct_fpr": 0.1, "max_auc": 0.6, "confidence": 0.95},
        "models": {},
        "caveats": [],
        "how": "how",
        "non_dp": "non-DP",
    }
    context = {
        "report": report,
        "verdict_text": "v",
        "intervals_text": "i",
        "canary_header": "c",
        "rows": [],
        "extras": {},
    }
    assert "pass <b>" in render("audit.md.j2", **context)
    html = render("audit.html.j2", **context, canaries=[], plots={}, vclass=lambda v: "x")
    assert "pass &lt;b&gt;" in html and "pass <b>" not in html


def test_a_markdown_template_line_holding_only_a_tag_prints_nothing() -> None:
    report = {
        "run_id": "r",
        "verdict": "pass",
        "headline": "h",
        "thresholds": {},
        "models": {},
        "caveats": ["one", "two"],
        "how": "how",
        "non_dp": "non-DP",
    }
    text = render(
        "audit.md.j2",
        report=report,
        verdict_text="v",
        intervals_text="i",
        canary_header="c",
        rows=[],
        extras={},
    )
    assert "*Caveat:* one.\n*Caveat:* two.\n\nhow\n" in text
    assert text.endswith("## Privacy of this report\n\nnon-DP\n")
