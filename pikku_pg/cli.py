"""The ``pikku-pg`` command line (the code lives in :mod:`pikku_pg._cli`).

Exit codes: 0 success, 1 not found, 2 usage error, 3 database unreachable,
130 interrupted. Expected failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

from pikku_pg._cli import (
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    main,
)

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "main",
]
