"""The one place HTML is made: jinja2 templates (migration_gate/report/templates/*.j2, package data) rendered with
autoescape and StrictUndefined, so a value a report shows (a check name, a note, a path) can never become markup
and a name the template expects but the data lacks is an error, not an empty cell.

Python builds the data (which rows, which verdict, which class); the templates hold the markup. Escaping keeps the
standard library's spelling (html.escape: &#x27; for ', &quot; for "), so the reports read as they did when they
were built from f-strings; a macro's or section's output (already Markup) passes as it is.
"""

from __future__ import annotations

from html import escape
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup


def _escaped(value: Any) -> Markup:
    """Every {{ value }} of a template: escaped unless it is already markup (a rendered section, a macro)."""
    return value if hasattr(value, "__html__") else Markup(escape(str(value)))


def _fmt(value: Any, spec: str) -> str:
    """format(value, spec) in a template: {{ rows|fmt(",") }}, {{ seconds|fmt(".1f") }}."""
    return format(value, spec)


ENVIRONMENT = Environment(loader=PackageLoader("migration_gate.report", "templates"), autoescape=True,
                          undefined=StrictUndefined, finalize=_escaped, trim_blocks=True, lstrip_blocks=True,
                          keep_trailing_newline=True)
ENVIRONMENT.filters["fmt"] = _fmt


def render(template: str, **data: Any) -> Markup:
    """One template of templates/ filled with data; the result is markup (safe to place in another template)."""
    return Markup(ENVIRONMENT.get_template(template).render(**data))
