"""PostgreSQL array literals, for statements that take whole columns as arrays.

psycopg dumps a list element by element in Python (a dumper lookup and a regular
expression per element): for the dozen short arrays of one ``save_messages`` call
that is most of the client's work. A literal built with ``str`` methods and cast in
the SQL (``%s::text[]``) costs a fraction of it and reaches the server unchanged.
Strings must already be checked for NUL characters (``pikku_pg._json.check_text``):
libpq cannot send them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime


def _quoted(value: str) -> str:
    # Inside double quotes only the backslash and the double quote need escaping.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text_array(values: Iterable[str | None]) -> str:
    """A literal for ``::text[]`` (or ``::uuid[]``...): each element quoted, None as NULL."""
    return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"


def timestamp_array(values: Iterable[datetime | None]) -> str:
    """A literal for ``::timestamptz[]``; a naive datetime is read in the session's time zone."""
    return "{" + ",".join("NULL" if v is None else _quoted(v.isoformat()) for v in values) + "}"


EMPTY_ARRAY = "{}"
"""The literal of an empty array."""
