"""What the engine contract suite shares: the session's Spark Connect server, and ingestions on a
given engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from icefloe.models import Ingestion
from icefloe.runtime import Runtime
from tests.support.inprocess import ingest


@dataclass(frozen=True)
class SparkServer:
    remote: str
    env: dict[str, str]  # the environment `icefloe spark-server` commands of this server need
    startup_seconds: float


def define(rt: Runtime, engine: str, name: str, source: str, table: str, **options: Any) -> Ingestion:
    """An ingestion on ``engine`` unless ``options`` name another."""
    options.setdefault("engine", engine)
    return ingest(rt, name, source, table, **options)
