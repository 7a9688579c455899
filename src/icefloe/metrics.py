"""Prometheus metrics: counters kept by this process, and ledger gauges read at scrape time.

Counters count what *this* process did (sum them across workers in PromQL); gauges (files by
status, queue depth) are read from the ledger on each scrape, so any one process reports them
for the whole fleet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from icefloe import ledger

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

FILES_INGESTED = Counter("icefloe_files_ingested", "Files committed to Iceberg", ["ingestion"], registry=REGISTRY)
RECORDS_INGESTED = Counter("icefloe_records_ingested", "Rows committed", ["ingestion"], registry=REGISTRY)
BYTES_INGESTED = Counter("icefloe_bytes_read", "Object bytes read", ["ingestion"], registry=REGISTRY)
FILES_FAILED = Counter(
    "icefloe_files_failed", "Files that failed an attempt", ["ingestion", "error_type"], registry=REGISTRY
)
COMMIT_CONFLICTS = Counter(
    "icefloe_commit_conflicts",
    "Iceberg commits retried because the table head moved (another writer)",
    ["ingestion"],
    registry=REGISTRY,
)
RECONCILIATIONS = Counter(
    "icefloe_lease_reconciliations",
    "Expired leases reconciled (outcome: committed = found in a snapshot, requeued = not found)",
    ["ingestion", "outcome"],
    registry=REGISTRY,
)
LIST_REQUESTS = Counter(
    "icefloe_list_requests", "S3 LIST requests made by discovery (what listing costs)", ["ingestion"], registry=REGISTRY
)
FILES_MISSED_BY_INCREMENTAL = Counter(
    "icefloe_files_missed_by_incremental",
    "New or changed files a full reconciling listing found that the incremental listing had missed",
    ["ingestion"],
    registry=REGISTRY,
)
EVENT_MESSAGES = Counter(
    "icefloe_event_messages",
    "Queue messages read by event-driven discovery (--discovery events)",
    ["ingestion"],
    registry=REGISTRY,
)
FILES_MISSED_BY_EVENTS = Counter(
    "icefloe_files_missed_by_events",
    "New or changed files a reconciling listing found that event notifications never delivered",
    ["ingestion"],
    registry=REGISTRY,
)
SOURCE_CLEANUPS = Counter(
    "icefloe_source_cleanups",
    "Source files cleaned up after ingestion (--after-ingest), by action and outcome (done, failed)",
    ["ingestion", "action", "outcome"],
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "icefloe_run_duration_seconds",
    "Duration of finished runs",
    ["ingestion", "status"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
    registry=REGISTRY,
)
COMMIT_LATENCY = Histogram(
    "icefloe_batch_commit_seconds",
    "Time from the per-table lock to the ledger update of one batch commit",
    ["ingestion"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)


class LedgerCollector(Collector):
    """Ledger gauges computed at scrape time: files by status and claimable files, per ingestion."""

    def __init__(self, db: Engine) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        files = GaugeMetricFamily("icefloe_files", "Files in the ledger by status", labels=["ingestion", "status"])
        queue = GaugeMetricFamily(
            "icefloe_queue_depth",
            "Files claimable now (DISCOVERED, or FAILED with retries left)",
            labels=["ingestion"],
        )
        try:
            with self.db.connect() as conn:
                for (name, status), n in ledger.files_by_status(conn).items():
                    files.add_metric([name, status], n)
                for name, n in ledger.queue_depths(conn).items():
                    queue.add_metric([name], n)
        except Exception as exc:  # a scrape must not fail because the database is away
            log.warning("ledger metrics unavailable: %s", exc)
        yield files
        yield queue


def register_ledger(db: Engine) -> None:
    """Add the ledger gauges to :data:`REGISTRY` (once per process)."""
    REGISTRY.register(LedgerCollector(db))


def serve(port: int, db: Engine, host: str = "127.0.0.1") -> None:
    """Expose :data:`REGISTRY` on http://host:port/metrics (`icefloe worker --metrics-port`)."""
    register_ledger(db)
    start_http_server(port, addr=host, registry=REGISTRY)
