"""The real ``icefloe`` CLI in a subprocess, and what it prints checked as a user would read it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

# `icefloe run --json` prints one object with these fields (DESIGN.md, public contract)
RUN_FIELDS = {
    "run_id",
    "ingestion",
    "status",
    "files_discovered",
    "files_new",
    "files_changed",
    "files_succeeded",
    "files_failed",
    "files_skipped",
    "records_ingested",
    "records_rejected",
    "bytes_read",
    "snapshots_committed",
    "list_requests",
    "files_missed_by_incremental",
    "event_messages",
    "files_missed_by_events",
    "duration_seconds",
}


def cli(
    env: dict[str, str], *args: str, expect: int | None = 0, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``icefloe ARGS`` in a subprocess; ``expect``: the exit code it must end with (None: any).
    Whatever the exit code, it never prints a traceback."""
    proc = subprocess.run(["icefloe", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if expect is not None:
        assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def create(env: dict[str, str], name: str, source: str, *options: str, fmt: str = "jsonl") -> None:
    """``icefloe ingestion create NAME`` into the table ``e2e.NAME``."""
    cli(env, "ingestion", "create", name, "--source", source, "--format", fmt, "--table", f"e2e.{name}", *options)


def one_json(stdout: str) -> Any:
    """The single JSON document stdout must hold (nothing else on it)."""
    text = stdout.strip()
    assert text, "nothing on stdout"
    decoder = json.JSONDecoder()
    value, end = decoder.raw_decode(text)
    assert text[end:].strip() == "", f"more than one JSON document on stdout: {stdout!r}"
    return value


def run_json(env: dict[str, str], name: str, expect: int = 0) -> dict[str, Any]:
    """``icefloe run NAME --json``: its exit code checked, its one JSON object checked and returned."""
    proc = cli(env, "run", name, "--json", expect=expect)
    summary = one_json(proc.stdout)
    assert isinstance(summary, dict)
    assert summary.keys() >= RUN_FIELDS, RUN_FIELDS - summary.keys()
    assert summary["ingestion"] == name
    for key in RUN_FIELDS - {"ingestion", "status", "duration_seconds"}:
        assert isinstance(summary[key], int) and summary[key] >= 0, (key, summary[key])
    assert isinstance(summary["duration_seconds"], int | float) and summary["duration_seconds"] >= 0
    return summary


def stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]
