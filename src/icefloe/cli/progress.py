"""Following a run: the progress bar of `icefloe run`, `icefloe runs NAME --watch`, and what a
finished run leaves waiting (failed files in their backoff)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from icefloe import ledger, runs
from icefloe.cli.output import Output, cell
from icefloe.models import Ingestion, Run

_WATCH_SECONDS = 2.0


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


@contextmanager
def run_progress(out: Output) -> Iterator[Callable[[Any], None] | None]:
    """A progress callback for ``worker.run_ingestion`` on a terminal (None elsewhere): files done of
    claimable, rows, bytes, bytes per second, time left (at the files' rate so far) and elapsed."""
    if out.as_json or out.plain:
        yield None
        return
    started = time.monotonic()
    columns: list[Any] = [TextColumn("{task.description}")]
    if out.console.width >= 100:  # the bar only where it fits beside the numbers
        columns.append(BarColumn(bar_width=20))
    columns += [TextColumn("{task.fields[detail]}"), TimeElapsedColumn()]
    with Progress(*columns, console=out.console, transient=True) as bar:
        task = bar.add_task("discovering", total=None, detail="")

        def progress(p: Any) -> None:
            if p.phase == "discovering":
                bar.update(task, description=f"discovering: {p.discovered:,} listed")
                return
            elapsed = max(time.monotonic() - started, 1e-3)
            done = p.succeeded + p.failed
            eta = "" if not done or not p.claimable else f" · ETA {_clock(elapsed / done * (p.claimable - done))}"
            detail = f"{p.records:,} rows · {human_bytes(p.bytes_read)} · {human_bytes(p.bytes_read / elapsed)}/s{eta}"
            bar.update(task, description=f"{done:,}/{p.claimable:,} files", detail=detail)

        yield progress


def waiting_retries(db: Any, ingestion: Ingestion) -> dict[str, Any]:
    """FAILED files with attempts left, waiting out their backoff: how many, and when the first is due."""
    with db.connect() as conn:
        count, due = ledger.retry_backlog(conn, ingestion.id, ingestion.max_retries)
    return {"files_waiting_retry": count, "next_retry_at": due}


def say_waiting(out: Output, ingestion: Ingestion, waiting: dict[str, Any]) -> None:
    if waiting["files_waiting_retry"]:
        out.message(
            f"{waiting['files_waiting_retry']} FAILED file(s) wait out their backoff before another attempt; "
            f"the first is due at {cell(waiting['next_retry_at'])} "
            f"(a later run takes them; now: icefloe retry {ingestion.name})",
            style="yellow",
        )


def _line(run: Run) -> str:
    return (
        f"run {run.id} {run.status}: {run.files_succeeded} succeeded, {run.files_failed} failed, "
        f"{run.files_skipped} skipped of {run.files_discovered} listed · {run.records_ingested:,} rows · "
        + (f"{run.records_rejected:,} bad records · " if run.records_rejected else "")
        + f"{human_bytes(run.bytes_read or 0)}"
    )


def watch(out: Output, db: Any, ingestion: Ingestion, run_id: int | None) -> Run | None:
    """Print a line whenever the run (default: the latest) changes, until it ends; returns it."""
    last = ""
    while True:
        if run_id is not None:
            run: Run | None = runs.get(db, run_id)
        else:
            latest = runs.list_for(db, ingestion.id, limit=1)
            run = latest[0] if latest else None
        if run is None:
            out.message(f"{ingestion.name} has no run yet")
            return None
        run_id = run.id
        line = _line(run)
        if line != last:
            if out.as_json:
                out.json(runs.summary(run, ingestion.name) | {"at": dt.datetime.now(dt.UTC)})
            else:
                out.print(line)
            last = line
        if run.status not in ("PENDING", "RUNNING"):
            return run
        time.sleep(_WATCH_SECONDS)
