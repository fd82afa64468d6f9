"""Validation and quoting of schema names (the only identifiers that vary)."""

from __future__ import annotations

import re

from pikku_pg._check import quote
from pikku_pg.errors import InvalidSchemaNameError

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_MAX_IDENTIFIER_LENGTH = 63  # PostgreSQL's NAMEDATALEN - 1


def validate_schema_name(name: object) -> str:
    """Return ``name`` if it is a plain identifier PostgreSQL keeps unchanged, else raise."""
    if not isinstance(name, str):
        raise InvalidSchemaNameError(
            f"schema name must be a str, not {type(name).__name__}: {quote(name)}"
        )
    if len(name) > _MAX_IDENTIFIER_LENGTH:
        raise InvalidSchemaNameError(
            f"schema name {quote(name)} is {len(name)} characters long; at most 63 are allowed"
        )
    if not _SCHEMA_NAME.fullmatch(name):
        raise InvalidSchemaNameError(
            f"invalid schema name {name!r}: use letters, digits, '_' or '$', "
            "not starting with a digit"
        )
    return name


def quote_identifier(name: str) -> str:
    """Quote an already validated identifier (keeps its case, like psycopg's Identifier)."""
    return '"' + name.replace('"', '""') + '"'
