"""The reports' Jinja templates, shipped as package data in server/templates/.

HTML templates (``*.html.j2``) are autoescaped; Markdown ones (``*.md.j2``) are not, since
Markdown has no escaping a template could apply. Loaded through the package, so that an installed
wheel renders the same pages as a checkout.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("fedward.server", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
    )


def render(name: str, **context: Any) -> str:
    """Render the template ``name`` (e.g. ``card.html.j2``) with ``context``."""
    return _environment().get_template(name).render(**context)
