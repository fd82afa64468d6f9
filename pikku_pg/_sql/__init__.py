"""SQL text, one module per component, kept readable as SQL.

The rule: SQL lives in ``_sql`` as plain module-level constants that name the target
schema as ``{schema}``; values are always bound parameters (``%s`` / ``%(name)s``).

* A public UPPER_CASE constant is a complete statement (or, ``V<n>_...``, the DDL of a
  migration); a ``_private`` one is a fragment. Fragments (shared column lists, CTEs,
  filters) are put in at import time by :func:`compose` only, never with ``+``,
  f-strings or ``.replace``; a statement per filter combination (each gets its own
  plan) comes from :func:`variants`, written once.
* Each component lists its statements once, as the fields of one :class:`QuerySet`
  subclass (field name: the constant's name in lower case). A service takes
  ``XxxQueries.render(schema)``, rendered and encoded once per schema and then shared
  by every service of that schema, and reads ``self._q.name``.
* :func:`render` is the one ``{schema}`` substitution; the migrations' DDL uses it too.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, TypeVar

from pikku_pg._schema import quote_identifier, validate_schema_name

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCHEMA = "{schema}"
_TEMPLATE = "pikku_pg.sql"  # where a QuerySet field keeps its unrendered SQL

_K = TypeVar("_K")
_Q = TypeVar("_Q", bound="QuerySet")


def render(template: str, schema: str) -> str:
    """``template`` with every ``{schema}`` replaced by the quoted ``schema``."""
    return template.replace(_SCHEMA, quote_identifier(validate_schema_name(schema)))


def compose(template: str, **fragments: str) -> str:
    """``template`` with each ``{name}`` replaced by ``fragments[name]``.

    Fails loudly (``ValueError``) on a placeholder left unfilled, a fragment the
    template does not use, and a fragment with unfilled placeholders of its own:
    compose the inner pieces first. ``{schema}`` is left for :func:`render`.
    """
    for name, fragment in fragments.items():
        _check_complete(fragment, f"fragment {name!r}")
    used: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if match.group(0) == _SCHEMA:
            return _SCHEMA
        if name not in fragments:
            raise ValueError(f"placeholder {{{name}}} left unfilled in {template[:200]!r}")
        used.add(name)
        return fragments[name]

    composed = _PLACEHOLDER.sub(fill, template)
    unused = sorted(set(fragments) - used)
    if unused:
        raise ValueError(f"fragments {unused} not used by {template[:200]!r}")
    return composed


def variants(
    template: str,
    slot: str,
    filters: Mapping[str, str],
    join: Callable[[Sequence[str]], str] = "".join,
    **fragments: str,
) -> Mapping[tuple[str, ...], str]:
    """One statement per combination of ``filters``: ``template`` composed with
    ``fragments`` and with ``{slot}`` filled by ``join`` of the chosen filters' text.

    Keyed by the names of the chosen filters, in the order of ``filters`` (``()``: none).
    Each combination is a statement of its own, so each gets a plan for its index.
    """
    names = list(filters)
    found = {
        chosen: compose(template, **fragments, **{slot: join([filters[name] for name in chosen])})
        for count in range(len(names) + 1)
        for chosen in itertools.combinations(names, count)
    }
    return MappingProxyType(found)


def statement(template: str) -> bytes:
    """Declare a field of a :class:`QuerySet`: ``template`` rendered for its schema."""
    _check_complete(template, "statement")
    spec: bytes = field(metadata={_TEMPLATE: template})
    return spec


def statement_variants(templates: Mapping[_K, str]) -> Mapping[_K, bytes]:
    """Declare a field of a :class:`QuerySet` holding the statements of :func:`variants`."""
    for template in templates.values():
        _check_complete(template, "statement")
    spec: Mapping[_K, bytes] = field(metadata={_TEMPLATE: templates})
    return spec


@dataclass(frozen=True)
class QuerySet:
    """The statements of one component, rendered for one schema.

    Subclasses are frozen dataclasses whose fields are declared with :func:`statement`
    (or :func:`statement_variants`); build them with :meth:`render` only.
    """

    @classmethod
    def render(cls: type[_Q], schema: str) -> _Q:
        """Every statement of the set for ``schema``, encoded; cached per schema (services
        are often created per request), so the text is rendered once."""
        rendered = _render_set(cls, validate_schema_name(schema))
        assert isinstance(rendered, cls)
        return rendered

    @classmethod
    def unscoped(cls: type[_Q]) -> _Q:
        """The set, for statements that name no schema (one that does fails loudly)."""
        rendered = _render_set(cls, None)
        assert isinstance(rendered, cls)
        return rendered

    @classmethod
    def templates(cls) -> dict[str, str | Mapping[Any, str]]:
        """The unrendered SQL of each field, by field name."""
        found: dict[str, str | Mapping[Any, str]] = {}
        for spec in fields(cls):
            if _TEMPLATE not in spec.metadata:
                raise TypeError(f"{cls.__name__}.{spec.name} is not declared with statement()")
            found[spec.name] = spec.metadata[_TEMPLATE]
        return found


# Rendered sets by (class, schema). A process normally uses a handful of schemas; the
# bound keeps one schema per tenant from growing it without end.
_RENDERED: dict[tuple[type[QuerySet], str | None], QuerySet] = {}
_MAX_RENDERED = 1024


def _render_set(cls: type[QuerySet], schema: str | None) -> QuerySet:
    found = _RENDERED.get((cls, schema))
    if found is None:
        found = _build_set(cls, schema)
        if len(_RENDERED) >= _MAX_RENDERED:
            _RENDERED.clear()
        _RENDERED[cls, schema] = found
    return found


def _build_set(cls: type[QuerySet], schema: str | None) -> QuerySet:
    def encode(template: str) -> bytes:
        if schema is not None:
            return render(template, schema).encode()
        if _SCHEMA in template:
            raise ValueError(f"{cls.__name__} names a schema: use render(schema)")
        return template.encode()

    values: dict[str, Any] = {}
    for name, template in cls.templates().items():
        if isinstance(template, str):
            values[name] = encode(template)
        else:
            values[name] = MappingProxyType({key: encode(t) for key, t in template.items()})
    return cls(**values)


def _check_complete(text: str, what: str) -> None:
    """Refuse SQL with a placeholder other than ``{schema}`` still in it."""
    for match in _PLACEHOLDER.finditer(text):
        if match.group(0) != _SCHEMA:
            raise ValueError(f"{what} has {match.group(0)} left unfilled: {text[:200]!r}")
