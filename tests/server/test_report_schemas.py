"""Report data is checked against its JSON Schema before it is written."""

from __future__ import annotations

import jsonschema
import pytest

from fedward.server.report_schemas import (
    SCHEMA_FILES,
    ReportDataInvalid,
    check_report,
    report_schema,
)


@pytest.mark.parametrize("report", sorted(SCHEMA_FILES))
def test_every_shipped_schema_is_a_valid_draft_2020_12_schema(report: str) -> None:
    jsonschema.Draft202012Validator.check_schema(report_schema(report))


def test_an_audit_missing_its_verdict_is_refused_naming_the_field() -> None:
    with pytest.raises(ReportDataInvalid, match=r"audit\.schema\.json.*verdict"):
        check_report(
            "audit",
            {
                "run_id": "r",
                "dp_guarantee": True,
                "headline": "h",
                "thresholds": {"max_tpr_at_1pct_fpr": 0.1, "max_auc": 0.6, "confidence": 0.95},
                "models": {},
                "caveats": [],
                "how": "how",
                "non_dp": "n",
            },
        )


def test_a_wrongly_typed_field_is_refused_with_its_path() -> None:
    with pytest.raises(ReportDataInvalid, match="thresholds/max_auc"):
        check_report(
            "audit",
            {
                "run_id": "r",
                "verdict": "pass",
                "dp_guarantee": True,
                "headline": "h",
                "thresholds": {"max_tpr_at_1pct_fpr": 0.1, "max_auc": "high", "confidence": 0.95},
                "models": {},
                "caveats": [],
                "how": "how",
                "non_dp": "n",
            },
        )


def test_a_returned_schema_is_a_copy_the_caller_may_change() -> None:
    report_schema("baselines")["required"].clear()
    assert report_schema("baselines")["required"]
