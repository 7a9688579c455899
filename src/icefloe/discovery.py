"""Discovery: list the source page by page and stream each page into the ledger.

Memory holds one listing page (≤ 1,000 keys) at a time; the new/changed diff is computed by
PostgreSQL in :func:`icefloe.ledger.upsert_listing_page`. Patterns: :mod:`icefloe.globs`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from icefloe import ledger
from icefloe.globs import compile_glob
from icefloe.ledger import ListedObject
from icefloe.s3 import S3Location, source_errors

PAGE_SIZE = 1000


def skip_reason(relative_key: str) -> str | None:
    """Why a listed key is recorded SKIPPED instead of ingested, or None.

    Folder markers and hidden or underscore files (``_SUCCESS``, ``.crc``, ``_temporary/``)
    are what Spark, Hadoop and many producers write beside their data.
    """
    if relative_key.endswith("/"):
        return "folder marker"
    for part in relative_key.split("/"):
        if part.startswith((".", "_")):
            return f"hidden or marker file ({part})"
    return None


@dataclass(frozen=True)
class Filter:
    """Which listed objects belong to an ingestion."""

    prefix: str
    pattern: str | None = None
    since: dt.datetime | None = None

    def accepts(self, key: str, modified_at: dt.datetime | None) -> bool:
        if self.since is not None and modified_at is not None and modified_at < self.since:
            return False
        if self.pattern is None:
            return True
        return compile_glob(self.pattern).match(key[len(self.prefix) :])


def listing_pages(s3: Any, location: S3Location, flt: Filter) -> Iterator[list[ListedObject]]:
    """ListObjectsV2 page by page; yields the accepted objects of each page."""
    paginator = s3.get_paginator("list_objects_v2")
    with source_errors(location, s3.meta.endpoint_url):
        for page in paginator.paginate(
            Bucket=location.bucket, Prefix=location.prefix, PaginationConfig={"PageSize": PAGE_SIZE}
        ):
            accepted: list[ListedObject] = []
            for obj in page.get("Contents", []):
                key: str = obj["Key"]
                modified: dt.datetime | None = obj.get("LastModified")
                if not flt.accepts(key, modified):
                    continue
                accepted.append(
                    ListedObject(
                        file_path=location.uri(key),
                        size=int(obj.get("Size", 0)),
                        modified_at=modified,
                        etag=str(obj.get("ETag", "")).strip('"'),
                        skip_reason=skip_reason(key[len(location.prefix) :]),
                    )
                )
            yield accepted


@dataclass
class DiscoveryCounts:
    listed: int = 0
    new: int = 0
    changed: int = 0
    skipped: int = 0


def discover(
    engine: Engine,
    s3: Any,
    *,
    ingestion_id: int,
    location: S3Location,
    flt: Filter,
    on_page: Callable[[DiscoveryCounts], None] | None = None,
) -> DiscoveryCounts:
    """List the source and upsert every page into the ledger, one short transaction per page."""
    counts = DiscoveryCounts()
    for page in listing_pages(s3, location, flt):
        with engine.begin() as conn:
            page_counts = ledger.upsert_listing_page(conn, ingestion_id, page)
        counts.listed += len(page)
        counts.new += page_counts.new
        counts.changed += page_counts.changed
        counts.skipped += page_counts.skipped
        if on_page is not None:
            on_page(counts)
    return counts
