"""SQL text, one module per component, kept readable as SQL.

Templates name the target schema as ``{schema}``; :func:`render` substitutes the
quoted schema once per service instance and returns bytes, which psycopg sends
without re-encoding. Values are always bound parameters (``%s`` / ``%(name)s``).
"""

from __future__ import annotations

from pikku_pg._schema import quote_identifier


def render(template: str, schema: str) -> bytes:
    """Substitute the (validated) schema into a SQL template."""
    return template.replace("{schema}", quote_identifier(schema)).encode()
