"""Range warnings say how many values were clipped: the exact count at the site (`fedward site
check`, the site's log), and in a reply a count only at or above the minimum cell ("fewer than N"
below it)."""

from __future__ import annotations

from fedward.client.reply_encoding import cell_safe
from fedward.common.datasets.bundled import bundled_federation
from fedward.common.datasource import table_from_frame
from fedward.common.site_messages import SiteMessage


def _table_with_ages(n_outside: int) -> tuple[list[str], list[SiteMessage]]:
    fed = bundled_federation("heart-disease", seed=0)
    frame = fed.sites["cleveland"].copy()
    frame.loc[frame.index[:n_outside], "age"] = 140  # the schema declares [18, 90]
    table = table_from_frame(frame, fed.schema, site="cleveland", file="data.csv")
    return table.warnings, table.notices


def test_the_site_sees_the_exact_count() -> None:
    warnings, notices = _table_with_ages(3)
    (age,) = [w for w in warnings if "'age'" in w]
    assert "3 of " in age and "outside the declared range [18, 90]" in age
    (notice,) = [n for n in notices if n.code == "warn-out-of-range"]
    assert notice.slots == {"column": "age", "count": 3}


def test_a_reply_names_a_count_only_at_or_above_the_minimum_cell() -> None:
    few = cell_safe(SiteMessage("warn-out-of-range", {"column": "age", "count": 3}), 10)
    assert few.code == "warn-out-of-range-few"
    assert "fewer than 10" in few.text and "3" not in few.text
    many = cell_safe(SiteMessage("warn-out-of-range", {"column": "age", "count": 12}), 10)
    assert many.text == "column age: 12 values lie outside the declared range and are clipped to it"
