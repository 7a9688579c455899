"""The ledger's records: what a listing page, a claim and a reconciliation hand around."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import NamedTuple


class ListedObject(NamedTuple):
    """One object of a listing page, as the ledger records it (a named tuple: a listing makes one
    per key, and a tuple is made in half the time of a frozen dataclass)."""

    file_path: str  # full URI, s3://bucket/key
    size: int
    modified_at: dt.datetime | None
    etag: str
    skip_reason: str | None = None


@dataclass(frozen=True)
class PageCounts:
    new: int
    changed: int
    skipped: int
    # new or changed at or below the incremental listing's start: missed by incremental listings
    missed: int = 0
    # new or changed and modified before the events-mode run began reading its queue
    missed_by_events: int = 0


@dataclass(frozen=True)
class ClaimedFile:
    """A file version this worker owns until ``lease_token`` changes."""

    id: int
    file_path: str
    size: int
    etag: str
    version: int
    lease_token: int
    retry_count: int
    batch_ids: tuple[uuid.UUID, ...]
    first_claimed_at: dt.datetime


@dataclass(frozen=True)
class Batch:
    batch_id: uuid.UUID
    files: tuple[ClaimedFile, ...]

    @property
    def all_batch_ids(self) -> set[uuid.UUID]:
        """Every batch that ever held one of these file versions, this one included."""
        return {b for f in self.files for b in f.batch_ids} | {self.batch_id}

    @property
    def first_claimed_at(self) -> dt.datetime:
        return min(f.first_claimed_at for f in self.files)


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file of a batch, written back by :func:`mark_succeeded`."""

    file: ClaimedFile
    records: int
    bytes_read: int
    duration_ms: int
    rejected: int = 0  # bad records skipped or quarantined (--on-bad-record)


@dataclass(frozen=True)
class ExpiredFile:
    id: int
    file_path: str
    lease_token: int
    retry_count: int
    batch_ids: tuple[uuid.UUID, ...]
    first_claimed_at: dt.datetime | None
    run_id: int | None = None  # the run that claimed it: its counters get the reconciled outcome


@dataclass(frozen=True)
class LockBounds:
    """How long a commit may wait for the per-table lock, and how long a holder may keep it."""

    wait_seconds: float
    hold_seconds: float

    @classmethod
    def for_lease(cls, lease_seconds: int) -> LockBounds:
        """Bounds derived from the lease (README, failure model).

        hold = lease/2 (at least 5 s): a holder frozen inside the commit window loses the lock well
        before its leases expire, so the reconciliation of its files (which needs the lock) is never
        held up by it; a live holder's commit takes well under that. wait = lease/4 (at least 2 s):
        a waiter gives up, backs off and retries (its heartbeat keeps its own leases meanwhile).
        """
        return cls(wait_seconds=max(2.0, lease_seconds / 4), hold_seconds=max(5.0, lease_seconds / 2))
