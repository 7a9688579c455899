"""CLI output as a strategy: Rich tables for people, one JSON document for machines."""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from icefloe.redaction import redact_text


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class Output:
    """Prints records either as JSON (``--json``) or as human tables/summaries."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, default=_default) + "\n")

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
        if self.as_json:
            self.json(list(rows))
            return
        table = Table(title=title, show_lines=False)
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(_short(row.get(c))) for c in columns))
        self.console.print(table)

    def record(self, data: dict[str, Any], title: str | None = None) -> None:
        if self.as_json:
            self.json(data)
            return
        if title:
            self.console.print(f"[bold]{title}[/bold]")
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            self.console.print(f"  {key.ljust(width)}  {_short(value)}")

    def message(self, text: str) -> None:
        if not self.as_json:
            self.console.print(text)

    def error(self, text: str) -> None:
        # Literally (no Rich markup from the text), and never a presigned URL or a credential.
        self.err.print(f"[red]error:[/red] {escape(redact_text(text))}", soft_wrap=True)


def _short(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    return value
