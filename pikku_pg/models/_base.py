"""The base of every model: snake_case fields, camelCase JSON."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class PikkuModel(BaseModel):
    """A pydantic model whose JSON form is the TypeScript camelCase shape.

    Fields are snake_case in Python; ``model_dump(by_alias=True)`` gives the
    camelCase keys that the TypeScript package reads and writes, and models
    validate from either spelling.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="ignore",
    )


_Model = TypeVar("_Model", bound=BaseModel)
_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}
_set = object.__setattr__

#: When True (the test suite sets it), every :func:`trusted` model is also validated
#: and must equal what ``model_validate`` makes of the same values.
VERIFY_TRUSTED = False


def trusted(cls: type[_Model], /, **values: Any) -> _Model:
    """A model from values the database just returned, without validation.

    What ``model_construct`` does for a model without extras or private
    attributes, minus its per-field default and alias lookups: several times
    faster, which matters for a read of 1,000 rows. ``values`` must name every
    field (checked unless Python runs with ``-O``); the instances share one
    fields-set, which already holds every name (pydantic only ever adds to it).
    """
    fields_set = _ALL_FIELDS.get(cls)
    if fields_set is None:
        fields_set = _ALL_FIELDS[cls] = set(cls.model_fields)
    if __debug__ and values.keys() != fields_set:
        raise AssertionError(f"trusted({cls.__name__}): fields {sorted(values)}")
    instance = cls.__new__(cls)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_fields_set__", fields_set)
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    if VERIFY_TRUSTED:
        _verify(cls, instance)
    return instance


def _verify(cls: type[_Model], instance: _Model) -> None:
    """The model validation would have made of the same values equals ``instance``."""
    validated = cls.model_validate(dict(instance.__dict__))
    if validated != instance:
        raise AssertionError(f"trusted({cls.__name__}) differs from validation: {instance!r}")
