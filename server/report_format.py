"""Number formatting for every report (model card, audit, baselines) and the terminal's tables:
one place, so that a figure reads the same in each report and a change of style is made once.

Missing figures print as an en dash, never as "None" or "nan"; intervals print as
``value [lo, hi]``; differences carry their sign.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

MISSING = "–"
"""What a table shows for a figure that does not exist."""


def finite(x: Any) -> TypeGuard[int | float]:
    """A real number that can be printed as one (not a bool, not NaN or infinite)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def fmt_value(x: Any, digits: int = 3) -> str:
    """A figure for a table: '–' for missing, yes/no, fixed decimals."""
    if x is None:
        return MISSING
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def fmt_fixed(x: Any, digits: int = 3) -> str:
    """A figure where a bool is just a number (the baselines report): fixed decimals for floats."""
    if x is None:
        return MISSING
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def fmt_small(x: Any) -> str:
    """A probability such as δ: two significant digits."""
    return f"{x:.2g}" if finite(x) else fmt_value(x)


def signed(x: float) -> str:
    """A difference: always with its sign, three decimals."""
    return f"{x:+.3f}"


def yes_no_none(x: bool | None, none: str) -> str:
    """yes/no, or ``none`` when the question was not answered."""
    return none if x is None else ("yes" if x else "no")


def interval(value: Any, lo: Any, hi: Any) -> str:
    """``value [lo, hi]`` with fmt_value's figures; the value alone without both bounds."""
    if value is None:
        return MISSING
    if lo is None or hi is None:
        return fmt_value(value)
    return f"{fmt_value(value)} [{fmt_value(lo)}, {fmt_value(hi)}]"


def panel_interval(panel: Mapping[str, Any] | None, key: str = "auroc") -> str:
    """A metric panel's ``key`` with its ``key_lo``/``key_hi`` interval, three decimals."""
    if not panel or panel.get(key) is None:
        return MISSING
    lo, hi = panel.get(f"{key}_lo"), panel.get(f"{key}_hi")
    if lo is None or hi is None:
        return f"{panel[key]:.3f}"
    return f"{panel[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def difference(d: Mapping[str, Any] | None, *, finite_only: bool = False) -> str:
    """A signed difference with its signed interval ({difference, lo, hi}).

    ``finite_only`` treats NaN and infinities as missing (the card); without it only None is
    missing (the baselines report prints what its JSON holds).
    """
    present = finite if finite_only else (lambda x: x is not None)
    if not d or not present(d.get("difference")):
        return MISSING
    if not (present(d.get("lo")) and present(d.get("hi"))):
        return signed(float(d["difference"]))
    return f"{signed(float(d['difference']))} [{signed(float(d['lo']))}, {signed(float(d['hi']))}]"


def console_cell(v: Any, digits: int = 3) -> str:
    """A terminal table cell: – for a figure not sent, ∞ for an unbounded ε, else ``digits`` decimals."""
    if v is None:
        return MISSING
    if isinstance(v, float) and v.is_integer() and digits == 0:
        return str(int(v))
    if isinstance(v, float):
        return "∞" if v == float("inf") else f"{v:.{digits}f}"
    return str(v)


def console_auroc(panel: Mapping[str, Any] | None) -> str:
    """A panel's AUROC with its interval as the terminal prints it, ``value [lo–hi]``."""
    if not panel or panel.get("auroc") is None:
        return MISSING
    if panel.get("auroc_lo") is None:
        return console_cell(panel["auroc"])
    return f"{panel['auroc']:.3f} [{panel['auroc_lo']:.3f}–{panel['auroc_hi']:.3f}]"
