"""Helpers of the engine tests (imported by name: tests/engines is on sys.path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from icefloe import ingestions, worker
from icefloe.ingestions import IngestionSpec
from icefloe.models import Ingestion, Run
from icefloe.runtime import Runtime


@dataclass(frozen=True)
class SparkServer:
    remote: str
    env: dict[str, str]  # the environment `icefloe spark-server` commands of this server need
    startup_seconds: float


def define(rt: Runtime, engine: str, name: str, source: str, table: str, **options: Any) -> Ingestion:
    fmt = options.pop("format", "jsonl")
    options.setdefault("engine", engine)
    return ingestions.create(rt.db, IngestionSpec(name=name, source=source, format=fmt, table=table, **options))


def run(rt: Runtime, name: str) -> Run:
    return worker.run_ingestion(rt, ingestions.get(rt.db, name), trigger="test")
