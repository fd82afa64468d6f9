"""JSON encoding rules shared by every service: values are serialized once, compactly.

We store JSON values themselves in JSONB columns, compact and with non-ASCII
characters unescaped. TypeScript 0.12.1 stored many objects as a JSON *string*
holding JSON; the readers here accept both.
"""

from __future__ import annotations

import json
import re
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel

from pikku_pg._check import check_text, has_surrogate, quote
from pikku_pg.errors import InvalidInputError

__all__ = ["check_text", "dumps", "json_text", "jsonb", "plain_json", "read_list", "read_object"]

# "\u0000" preceded by an even number of backslashes is an escaped NUL character,
# which JSONB refuses ("unsupported Unicode escape sequence").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def plain_json(value: Any) -> Any:
    """A pydantic model as its TypeScript JSON shape (camelCase); anything else as is."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, mode="json")
    return value


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is (what JSON.stringify writes).

    Refuses what cannot be JSON (NaN, objects of other types, cycles, nesting too deep)
    and lone surrogates anywhere, keys included: UTF-8 cannot encode them.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"value is not JSON-serializable: {quote(str(exc))}") from exc
    if has_surrogate(text):
        raise InvalidInputError(
            "value contains a lone surrogate (e.g. '\\ud800'), which UTF-8 cannot encode"
        )
    return text


def json_text(field: str, value: Any) -> str:
    """Compact JSON text of ``value``, refusing what JSONB refuses; errors name ``field``."""
    try:
        encoded = dumps(value)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{field}: {exc}") from None
    # The plain test first: the regex is slow on large texts and NULs are rare.
    if "\\u0000" in encoded and _ESCAPED_NUL.search(encoded):
        raise InvalidInputError(f"{field} contains a NUL character (\\u0000), which JSONB rejects")
    return encoded


def jsonb(value: Any, field: str = "value") -> Jsonb:
    """Wrap a value as a JSONB parameter, serialized once and checked like :func:`json_text`."""
    text = json_text(field, value)
    return Jsonb(value, dumps=lambda _: text)


def _parse_if_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_object(value: Any) -> dict[str, Any] | None:
    """Read a JSONB value that should be an object (accepting a JSON string of one)."""
    value = _parse_if_text(value)
    return value if isinstance(value, dict) else None


def read_list(value: Any) -> list[Any] | None:
    """Read a JSONB value that should be a list (accepting a JSON string of one)."""
    value = _parse_if_text(value)
    return value if isinstance(value, list) else None
