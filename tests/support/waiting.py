"""Waiting for a condition instead of sleeping a fixed time: every wait has a deadline."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa


class Timeout(AssertionError):
    """A bounded wait ran out (an AssertionError, so pytest reports it as a test failure)."""


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); raise :class:`Timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def db_now(engine: sa.Engine) -> dt.datetime:
    """The database's clock (leases and schedules are judged by it, not by this process's)."""
    with engine.connect() as conn:
        now: dt.datetime = conn.execute(sa.text("SELECT now()")).scalar_one()
    return now


def wait_db_time(engine: sa.Engine, moment: dt.datetime, *, timeout: float, what: str) -> None:
    """Until the database's clock has passed ``moment``."""
    wait_for(lambda: db_now(engine) > moment, timeout=timeout, what=what, interval=0.05)
