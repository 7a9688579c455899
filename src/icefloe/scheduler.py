"""Schedules: cron expressions or intervals, turned into queued runs exactly once per fire time.

:func:`latest_due` is pure schedule maths; :func:`enqueue_due_runs` applies it. Any number of
workers call the latter; it queues through :func:`icefloe.runs.enqueue`, whose per-ingestion
advisory lock and the unique key (ingestion, scheduled_for) on runs make each fire time one run.
Missed fires after downtime are coalesced into one run for the latest of them.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from dataclasses import dataclass

from croniter import croniter
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from icefloe import runs
from icefloe.errors import ConfigurationError, RunInProgressError
from icefloe.models import Ingestion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """When an ingestion runs by itself: a cron expression or an interval, in a time zone."""

    cron: str | None = None
    interval_seconds: int | None = None
    timezone: str = "UTC"

    def validate(self) -> None:
        if self.cron is not None and self.interval_seconds is not None:
            raise ConfigurationError("give either a cron schedule or an interval, not both")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ConfigurationError(f"schedule {self.cron!r} is not a valid cron expression")
        if self.interval_seconds is not None and self.interval_seconds < 1:
            raise ConfigurationError("the schedule interval must be at least 1 second")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"unknown time zone {self.timezone!r}") from None

    @property
    def enabled(self) -> bool:
        return self.cron is not None or self.interval_seconds is not None


def latest_due(
    schedule: Schedule, *, anchor: dt.datetime, last_fire: dt.datetime | None, now: dt.datetime
) -> dt.datetime | None:
    """The latest fire time in (``last_fire`` or ``anchor``, ``now``], or None.

    ``anchor`` is when the schedule started counting (the ingestion's creation): a new schedule
    first fires at its next tick, not at once. Returning only the latest fire coalesces every fire
    missed during downtime into one run.
    """
    after = last_fire if last_fire is not None and last_fire > anchor else anchor
    if schedule.interval_seconds is not None:
        elapsed = (now - anchor).total_seconds()
        if elapsed < schedule.interval_seconds:
            return None
        fire = anchor + dt.timedelta(seconds=(elapsed // schedule.interval_seconds) * schedule.interval_seconds)
        return fire if fire > after else None
    if schedule.cron is not None:
        local_now = now.astimezone(zoneinfo.ZoneInfo(schedule.timezone))
        # get_prev is strictly before its start: start a second later so a tick at `now` is due.
        prev = croniter(schedule.cron, local_now + dt.timedelta(seconds=1)).get_prev(dt.datetime)
        fire = prev.astimezone(dt.UTC)
        return fire if fire > after else None
    return None


def enqueue_due_runs(db: Engine) -> int:
    """Queue one PENDING run per due schedule fire; returns how many runs were queued."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT i.id, i.name, i.schedule_cron, i.schedule_interval_seconds, i.schedule_timezone,
                       i.created_at, now() AS now,
                       (SELECT max(r.scheduled_for) FROM runs r WHERE r.ingestion_id = i.id) AS last_fire
                FROM ingestions i
                WHERE i.status = 'ACTIVE'
                  AND (i.schedule_cron IS NOT NULL OR i.schedule_interval_seconds IS NOT NULL)
                """
            )
        ).all()
    queued = 0
    for row in rows:
        schedule = Schedule(row.schedule_cron, row.schedule_interval_seconds, row.schedule_timezone)
        try:
            due = latest_due(schedule, anchor=row.created_at, last_fire=row.last_fire, now=row.now)
        except (ValueError, KeyError) as exc:  # a schedule that no longer parses: say so, skip it
            log.error("schedule of %s cannot be evaluated: %s", row.name, exc)
            continue
        if due is None:
            continue
        with Session(db, expire_on_commit=False) as session:
            ingestion = session.get(Ingestion, row.id)
        if ingestion is None:  # deleted since the query
            continue
        try:
            inserted = runs.enqueue(db, ingestion, trigger="schedule", scheduled_for=due)
        except RunInProgressError:
            # Not started while a run is in progress; the fire stays due and is taken (coalesced
            # with later ones) once that run finishes.
            continue
        if inserted is not None:
            log.info("scheduled run of %s for %s", row.name, due.isoformat())
            queued += 1
    return queued


def take_due_maintenance(db: Engine) -> list[int]:
    """Ids of the ingestions whose table maintenance is due, each taken by exactly one caller.

    The due-time moves one interval ahead in the same statement that picks the row (``FOR UPDATE
    SKIP LOCKED``; the outer condition is re-checked on the locked row), so however many workers
    call this, a due maintenance goes to one of them. A first maintenance is due one interval after
    the ingestion was created; one that crashes waits for the next interval.
    """
    with db.begin() as conn:
        rows = conn.execute(
            text(
                """
                WITH due AS (
                    SELECT id FROM ingestions
                    WHERE status = 'ACTIVE' AND maintain_every_seconds IS NOT NULL
                      AND coalesce(maintenance_due_at, created_at + make_interval(secs => maintain_every_seconds))
                          <= now()
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE ingestions i SET maintenance_due_at = now() + make_interval(secs => i.maintain_every_seconds)
                FROM due WHERE i.id = due.id
                  AND coalesce(i.maintenance_due_at, i.created_at + make_interval(secs => i.maintain_every_seconds))
                      <= now()
                RETURNING i.id
                """
            )
        ).all()
    return [r.id for r in rows]
