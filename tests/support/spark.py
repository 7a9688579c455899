"""What the Spark engine tests share: the session's Spark Connect server and Spark ingestions."""

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


def define(rt: Runtime, name: str, source: str, table: str, **options: Any) -> Ingestion:
    """An ingestion on the Spark engine unless ``engine`` says otherwise."""
    options.setdefault("engine", "spark")
    return ingest(rt, name, source, table, **options)
