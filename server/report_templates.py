"""The reports' Jinja templates, shipped as package data in server/templates/.

HTML templates (``*.html.j2``) are autoescaped and keep Jinja's default whitespace. Markdown ones
(``*.md.j2``) are not escaped (Markdown has no escaping a template could apply) and are written one
output line per template line: a line holding only a ``{% %}`` tag prints nothing. Loaded through
the package, so that an installed wheel renders the same pages as a checkout.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

MARKDOWN_SUFFIX = ".md.j2"


@cache
def template_environment(markdown: bool) -> Environment:
    """The Markdown or the HTML environment, made once."""
    loader = PackageLoader("fedward.server", "templates")
    if markdown:
        return Environment(
            loader=loader,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
    return Environment(loader=loader, autoescape=select_autoescape(default=True))


def render(name: str, **context: Any) -> str:
    """Render the template ``name`` (e.g. ``card.html.j2``) with ``context``."""
    return template_environment(name.endswith(MARKDOWN_SUFFIX)).get_template(name).render(**context)
