"""The checks every service makes on its arguments before any SQL runs (pure, no I/O).

Each check raises :class:`~pikku_pg.errors.InvalidInputError` naming the argument, and
quotes the offending value with :func:`quote` (at most :data:`MAX_QUOTE` characters of
it), so a 10 MB id never becomes a 10 MB message.

Limits:

* :data:`MAX_INT4` (2**31 - 1) bounds numbers stored in INTEGER columns (retries,
  token counts) and the page arguments (``limit``, ``offset``, ``last_n``): no page
  of a service is larger, and PostgreSQL never sees a number it would refuse.
* Text must be a ``str`` without NUL and without lone surrogates (``"\\ud800"``):
  PostgreSQL refuses the first, and UTF-8 cannot encode the second.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from pikku_pg.errors import InvalidInputError

MAX_INT4 = 2**31 - 1
MAX_QUOTE = 200

# Any UTF-16 surrogate code point: a Python str holding one cannot be encoded to UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def quote(value: object) -> str:
    """``repr(value)`` cut to at most :data:`MAX_QUOTE` characters (plus a marker)."""
    if isinstance(value, (str, bytes)) and len(value) > MAX_QUOTE:
        return f"{value[:MAX_QUOTE]!r}... ({len(value)} characters)"
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    if len(text) > MAX_QUOTE:
        return text[:MAX_QUOTE] + "..."
    return text


def quote_all(values: Sequence[object]) -> str:
    """The values quoted and joined, cut like :func:`quote` (e.g. ids in a message)."""
    text = ", ".join(quote(v) for v in values[:10])
    if len(values) > 10:
        text += f" and {len(values) - 10} more"
    return text if len(text) <= MAX_QUOTE else text[:MAX_QUOTE] + "..."


def validation_summary(exc: ValidationError) -> str:
    """What pydantic found wrong (where and what, at most three problems), without
    the input itself."""
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for problem in problems[:3]:
        where = ".".join(str(part) for part in problem["loc"]) or "value"
        parts.append(f"{where[:100]}: {problem['msg'][:150]}")
    if len(problems) > 3:
        parts.append(f"and {len(problems) - 3} more problems")
    return "; ".join(parts) or "invalid value"


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a surrogate code point (which UTF-8 cannot encode)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def check_text(field: str, value: object, *, max_length: int | None = None) -> str:
    """A str that PostgreSQL can store: no NUL, no lone surrogate, not too long."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a str, not {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInputError(f"{field} contains a NUL character, which PostgreSQL rejects")
    if has_surrogate(value):
        raise InvalidInputError(
            f"{field} contains a lone surrogate (e.g. '\\ud800'), which UTF-8 cannot encode"
        )
    if max_length is not None and len(value) > max_length:
        raise InvalidInputError(f"{field} is {len(value)} characters; at most {max_length}")
    return value


def check_optional_text(field: str, value: object, *, max_length: int | None = None) -> str | None:
    """None, or :func:`check_text`."""
    return None if value is None else check_text(field, value, max_length=max_length)


def check_int(field: str, value: object, *, min: int = 0, max: int = MAX_INT4) -> int:
    """An int (not a bool) within ``[min, max]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{field} must be an int, not {type(value).__name__}")
    if not min <= value <= max:
        raise InvalidInputError(f"{field} must be between {min} and {max}, not {quote(value)}")
    return value


def check_number(
    field: str,
    value: object,
    *,
    finite: bool = True,
    min: float | None = None,
    max: float | None = None,
) -> float:
    """An int or float (not a bool), not NaN, finite unless ``finite=False``, in range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{field} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        raise InvalidInputError(f"{field} is too large: {quote(value)}") from None
    if math.isnan(number) or (finite and math.isinf(number)):
        raise InvalidInputError(f"{field} must be a finite number, not {number}")
    if min is not None and number < min:
        raise InvalidInputError(f"{field} must be at least {min:g}, not {quote(value)}")
    if max is not None and number > max:
        raise InvalidInputError(f"{field} must be at most {max:g}, not {quote(value)}")
    return number


def check_bool(field: str, value: object) -> bool:
    """A bool (``0``/``1`` and other truthy values are refused: they hide mistakes)."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"{field} must be a bool, not {type(value).__name__}")
    return value


def check_list(field: str, value: object, *, of: str = "") -> list[Any]:
    """The items of a list, tuple or other iterable, as a new list (``of``: the item
    type, for the message).

    A str, bytes or mapping is refused: iterating it would give characters or keys,
    never what the caller meant.
    """
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        kind = f"a list of {of}" if of else "a list"
        single = " (a single string)" if isinstance(value, str) else ""
        raise InvalidInputError(f"{field} must be {kind}, not {type(value).__name__}{single}")
    return list(value)


def check_text_list(field: str, value: object, *, item: str | None = None) -> list[str]:
    """A list of texts (see :func:`check_list` and :func:`check_text`)."""
    name = item or f"{field} item"
    return [check_text(name, text) for text in check_list(field, value, of="str")]
