"""JSON encoding rules shared by every service (see DESIGN §4).

We store JSON values themselves in JSONB columns, compact and with non-ASCII
characters unescaped. TypeScript 0.12.1 stored many objects as a JSON *string*
holding JSON; the readers here accept both.
"""

from __future__ import annotations

import json
import re
from typing import Any

from psycopg.types.json import Jsonb

from pikku_pg.errors import InvalidInputError

# "\u0000" preceded by an even number of backslashes is an escaped NUL character,
# which JSONB refuses ("unsupported Unicode escape sequence").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is (what JSON.stringify writes)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"value is not JSON-serializable: {exc}") from exc


def json_text(field: str, value: Any) -> str:
    """Compact JSON text of ``value``, refusing what JSONB refuses; errors name ``field``."""
    try:
        encoded = dumps(value)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{field}: {exc}") from None
    if _ESCAPED_NUL.search(encoded):
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


def check_text(field: str, value: object, *, max_length: int | None = None) -> str:
    """Validate a text value before it is bound: a str, no NUL byte, not too long."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a str, not {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInputError(f"{field} contains a NUL character, which PostgreSQL rejects")
    if max_length is not None and len(value) > max_length:
        raise InvalidInputError(f"{field} is {len(value)} characters; at most {max_length}")
    return value
