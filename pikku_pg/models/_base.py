"""The base of every model: snake_case fields, camelCase JSON."""

from __future__ import annotations

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
