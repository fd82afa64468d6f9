"""How the command line prints: tables for people, JSON for scripts.

Colour and progress spinners appear only when stdout is a terminal, ``NO_COLOR``
is unset and the optional ``rich`` package is installed (``pip install
'pikku-pg[cli]'``); otherwise the output is plain text. Stored text is never
trusted: control characters are shown escaped and never reach the terminal as
escape sequences, and with rich nothing stored is read as markup.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

#: Colour of a status word (rich style names).
STATUS_STYLES: dict[str, str] = {
    "completed": "green",
    "succeeded": "green",
    "approved": "green",
    "live": "green",
    "running": "yellow",
    "pending": "yellow",
    "scheduled": "cyan",
    "waiting for a worker": "bold yellow",
    "no owner": "bold yellow",
    "suspended": "magenta",
    "failed": "bold red",
    "denied": "red",
    "cancelled": "dim",
    "stale": "dim",
}

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL.update({ord("\t"): "\\t", ord("\r"): "\\r", ord("\n"): "\\n"})
_CONTROL_KEEP_NEWLINES = {k: v for k, v in _CONTROL.items() if k != ord("\n")}


def clean(text: str, *, newlines: bool = False) -> str:
    """``text`` with control characters escaped (newlines kept if ``newlines``)."""
    return text.translate(_CONTROL_KEEP_NEWLINES if newlines else _CONTROL)


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def compact_json(value: Any) -> str:
    """One-line JSON of a value (non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def fmt_time(value: datetime | None, *, precise: bool = False) -> str:
    """A timestamp in UTC: ``2026-01-31 12:00:00Z`` (``precise``: ``12:00:00.123``)."""
    if value is None:
        return "-"
    utc = value.astimezone(timezone.utc)
    if precise:
        return utc.strftime("%H:%M:%S.%f")[:-3]
    return utc.strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_duration(value: timedelta | float | None) -> str:
    """A duration for people: ``12 ms``, ``1.5 s``, ``3m 07s``, ``2h 05m``, ``3d 04h``."""
    if value is None:
        return "-"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


@dataclass(frozen=True)
class Column:
    """A table column: its header, the widest a cell may be, whether it holds a status."""

    header: str
    max_width: int = 40
    status: bool = False


def _rich_console(stream: TextIO) -> Any:
    """A rich console for ``stream`` if it is a terminal, colour is wanted and rich exists."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return None
    try:
        isatty = stream.isatty()
    except (AttributeError, ValueError):
        return None
    if not isatty:
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=stream, highlight=False, soft_wrap=False)


class Output:
    """Where a command prints its result: plain text, rich text or JSON."""

    def __init__(self, *, json_mode: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.json_mode = json_mode
        self._console = None if json_mode else _rich_console(self.stream)

    @property
    def fancy(self) -> bool:
        """Whether output goes through rich (colour, spinners)."""
        return self._console is not None

    def json(self, value: Any) -> None:
        """Print ``value`` as indented JSON (the ``--json`` output)."""
        self.stream.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")

    def line(self, text: str = "", style: str | None = None) -> None:
        """Print one line of (already cleaned) text."""
        if self._console is not None:
            from rich.text import Text

            self._console.print(Text(text, style=style or ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def heading(self, text: str) -> None:
        """Print a section heading."""
        self.line(text, style="bold")

    def fields(self, pairs: Sequence[tuple[str, str]], *, indent: int = 2) -> None:
        """Print ``label  value`` lines, aligned; values are cleaned, multi-line values
        are indented under their first line."""
        if not pairs:
            return
        width = max(len(label) for label, _ in pairs)
        pad = " " * indent
        for label, value in pairs:
            lines = clean(value, newlines=True).split("\n") or [""]
            style = STATUS_STYLES.get(value) if label == "status" else None
            first = f"{pad}{label:<{width}}  "
            if self._console is not None:
                from rich.text import Text

                text = Text(first)
                text.append(lines[0], style=style or "")
                self._console.print(text)
            else:
                self.stream.write(first + lines[0] + "\n")
            for extra in lines[1:]:
                self.line(" " * len(first) + extra)
        self.stream.flush()

    def block(self, head: str, lines: Sequence[str], *, style: str | None = None) -> None:
        """Print ``head`` then the first line, the other lines indented under the first."""
        cleaned = [clean(text) for text in lines] or [""]
        pad = " " * len(head)
        if self._console is not None:
            from rich.text import Text

            first = Text(head, style=style or "")
            first.append(cleaned[0])
            self._console.print(first)
            for text in cleaned[1:]:
                self._console.print(Text(pad + text))
        else:
            self.stream.write(head + cleaned[0] + "\n")
            for text in cleaned[1:]:
                self.stream.write(pad + text + "\n")
        self.stream.flush()

    def table(
        self,
        columns: Sequence[Column],
        rows: Sequence[Sequence[str]],
        *,
        empty: str = "(nothing found)",
    ) -> None:
        """Print rows under column headers; each cell is cleaned and shortened to one line."""
        if not rows:
            self.line(empty, style="dim")
            return
        cells = [
            [
                shorten(clean(value), column.max_width)
                for column, value in zip(columns, row, strict=True)
            ]
            for row in rows
        ]
        if self._console is not None:
            self._rich_table(columns, cells)
            return
        widths = [
            max(len(column.header), *(len(row[i]) for row in cells))
            for i, column in enumerate(columns)
        ]
        header = "  ".join(c.header.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
        self.stream.write(header.rstrip() + "\n")
        for row in cells:
            self.stream.write(
                "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
            )
        self.stream.flush()

    def _rich_table(self, columns: Sequence[Column], cells: list[list[str]]) -> None:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        assert self._console is not None
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        # Cells are already shortened: keep them whole (ids must stay copyable) and let a
        # narrow terminal wrap the lines, as it does with the plain output.
        for i, column in enumerate(columns):
            width = max(len(column.header), *(len(row[i]) for row in cells))
            table.add_column(column.header.upper(), no_wrap=True, min_width=width)
        for row in cells:
            table.add_row(
                *(
                    Text(value, style=STATUS_STYLES.get(value, "") if column.status else "")
                    for column, value in zip(columns, row, strict=True)
                )
            )
        self._console.print(table, crop=False)

    @contextlib.contextmanager
    def progress(self, text: str) -> Iterator[None]:
        """A spinner with ``text`` while the block runs (only on a rich terminal)."""
        if self._console is None:
            yield
            return
        with self._console.status(clean(text)):
            yield


def error(message: str) -> None:
    """Print a one-line error message on stderr."""
    first = clean(message.strip().splitlines()[0] if message.strip() else message)
    sys.stderr.write(f"pikku-pg: {first}\n")
    sys.stderr.flush()
