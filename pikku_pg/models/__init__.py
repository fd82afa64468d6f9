"""Pydantic models shared by the sync and async services."""

from __future__ import annotations

from pikku_pg.models._base import PikkuModel

__all__ = ["PikkuModel"]
