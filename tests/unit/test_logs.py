"""The run context of log records: set once per run/batch, carried into records and thread pools."""

from __future__ import annotations

import contextvars
import json
import logging
from concurrent.futures import ThreadPoolExecutor

from icefloe import logs


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.RunContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_records_carry_the_run_context_nested_and_across_a_thread_pool() -> None:
    handler = _Collect()
    logger = logging.getLogger("icefloe.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with logs.run_context(run_id=7, ingestion="events"):
            with logs.run_context(batch_id="b-1"):
                logger.info("inside the batch")
                with ThreadPoolExecutor(1) as pool:
                    pool.submit(contextvars.copy_context().run, logger.info, "in a reader thread").result()
                    pool.submit(logger.info, "submitted without the context").result()
            logger.info("after the batch", extra={"run_id": 8})
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    fields = [{k: getattr(r, k, None) for k in ("run_id", "batch_id", "ingestion")} for r in handler.records]
    assert fields == [
        {"run_id": 7, "batch_id": "b-1", "ingestion": "events"},
        {"run_id": 7, "batch_id": "b-1", "ingestion": "events"},
        {"run_id": None, "batch_id": None, "ingestion": None},
        {"run_id": 8, "batch_id": None, "ingestion": "events"},  # extra= wins over the context
        {"run_id": None, "batch_id": None, "ingestion": None},
    ]
    line = json.loads(logs.JsonFormatter().format(handler.records[0]))
    assert (line["run_id"], line["batch_id"], line["ingestion"]) == (7, "b-1", "events")
