"""CLI output as a strategy: Rich tables for people, plain text in pipes, one JSON document for machines.

Everything printed is literal: file paths, error messages and table cells come from users and
libraries and may hold brackets (``x[1]-[bold]y[/bold].jsonl``, ``pip install 'icefloe[spark]'``),
which Rich would read as markup. So no text goes through Rich's markup parser; styles are applied
as :class:`rich.text.Text` styles instead.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from icefloe.redaction import redact_text


def show_flags_as_flags() -> None:
    """Typer's help prints ``<bool>`` after every flag (``--yes <bool>``), as if it took a value; a
    flag's column stays empty instead. (Typer >= 0.2x renders a type for every option.)"""
    from typer.core import TyperOption

    display = TyperOption.display_type_rich
    if getattr(display, "_icefloe", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else display(self, ctx)

    display_type_rich._icefloe = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal | dt.timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(data: Any) -> str:
    """``data`` as JSON (datetimes as ISO-8601, UUIDs and decimals as strings, bytes as hex)."""
    return json.dumps(data, default=_default)


def cell(value: Any) -> str:
    """One value as people read it: no ``None``, no Python reprs of dicts."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    # One line per value: a multi-line error message (a library's) must not break a table or a record.
    return " ".join(str(value).splitlines()) if isinstance(value, str) else str(value)


class Output:
    """Prints records either as JSON (``--json``) or for people (a terminal, or plain text in a pipe)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    @property
    def plain(self) -> bool:
        """True when stdout is not a terminal: plain lines, no boxes, nothing cut to a width."""
        return not self.console.is_terminal

    def json(self, data: Any) -> None:
        sys.stdout.write(to_json(data) + "\n")
        sys.stdout.flush()

    def print(self, text: str, style: str | None = None) -> None:
        """One line (or more) of literal text; wrapped on a terminal, never cut."""
        if self.plain:
            sys.stdout.write(text + "\n")
        else:
            self.console.print(Text(text, style=style or ""), soft_wrap=False)

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str],
        title: str | None = None,
        *,
        keep: Sequence[str] = (),
    ) -> None:
        """Rows as a table; on a narrow terminal the ``keep`` columns (e.g. a file's key) keep their
        width (up to half the screen) and the others wrap."""
        if self.as_json:
            self.json([dict(r) for r in rows])
            return
        cells = [[cell(row.get(c)) for c in columns] for row in rows]
        if self.plain:
            self._plain_table(cells, columns, title)
            return
        table = Table(title=Text(title) if title else None, show_lines=False)
        for i, col in enumerate(columns):
            # fold: a long path or message wraps inside its cell instead of being cut with "…"
            longest = max([len(col), *(len(values[i]) for values in cells)])
            min_width = min(longest, self.console.width // 2) if col in keep else None
            table.add_column(Text(col), overflow="fold", min_width=min_width)
        for values in cells:
            table.add_row(*(Text(v) for v in values))
        self.console.print(table)

    def _plain_table(self, cells: list[list[str]], columns: Sequence[str], title: str | None) -> None:
        if title:
            sys.stdout.write(title + "\n")
        widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
        for values in [list(columns), *cells]:
            line = "  ".join(v.replace("\n", " ").ljust(w) for v, w in zip(values, widths, strict=True))
            sys.stdout.write(line.rstrip() + "\n")

    def record(self, data: Mapping[str, Any], title: str | None = None) -> None:
        if self.as_json:
            self.json(dict(data))
            return
        if title:
            self.print(title, style="bold")
        self._record_lines(data, indent=2)

    def _record_lines(self, data: Mapping[str, Any], indent: int) -> None:
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            if isinstance(value, Mapping) and value:
                self.print(" " * indent + key)
                self._record_lines(value, indent + 2)
            else:
                self.print(f"{' ' * indent}{key.ljust(width)}  {cell(value)}")

    def message(self, text: str, style: str | None = None) -> None:
        """A line for people (not printed under ``--json``), literal."""
        if not self.as_json:
            self.print(text, style)

    def warning(self, text: str) -> None:
        """A warning on stderr, literal, one line."""
        self.err.print(Text.assemble(("warning: ", "yellow"), redact_text(text)), soft_wrap=True)

    def error(self, text: str) -> None:
        # Literally (no markup), and never a presigned URL or a credential.
        self.err.print(Text.assemble(("error: ", "red"), redact_text(text)), soft_wrap=True)
