"""A JSON-lines log read back: every whole object in order, torn and foreign lines counted."""

from __future__ import annotations

from fedward.server.json_lines import json_objects


def test_whole_objects_are_kept_in_order_and_blank_lines_ignored() -> None:
    text = '{"seq": 1}\n\n   \n{"seq": 2}\n'
    assert json_objects(text) == ([{"seq": 1}, {"seq": 2}], 0)


def test_a_torn_line_and_a_line_that_is_not_an_object_are_counted_not_raised() -> None:
    text = '{"seq": 1}\n[1, 2]\n"text"\n{"seq": 2, "by": "ad'
    assert json_objects(text) == ([{"seq": 1}], 3)


def test_an_empty_log_holds_nothing() -> None:
    assert json_objects("") == ([], 0)
