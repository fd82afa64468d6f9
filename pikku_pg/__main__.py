"""``python -m pikku_pg``: the command line."""

from __future__ import annotations

from pikku_pg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
