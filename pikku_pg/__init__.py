"""pikku-pg: Pikku's PostgreSQL storage services for Python, sync and async."""

from __future__ import annotations

from pikku_pg import errors, models
from pikku_pg._schema import validate_schema_name

__version__ = "0.1.0"

__all__ = ["__version__", "errors", "models", "validate_schema_name"]
