"""Source clean-up after ingestion (``--after-ingest keep|delete|move:PREFIX|tag:KEY=VALUE``).

A file version is cleaned up once it has been SUCCESS for ``after_ingest_delay_seconds`` and its
snapshot is still in the table's history. The ledger keeps the row (SUCCESS, with ``cleanup_status``
DONE or FAILED, ``cleanup_at``, ``cleanup_error``): the claim never takes a SUCCESS row, and a listing
does not see a deleted or moved key (nor does a tag change an ETag), so a cleaned file is never
ingested again. A new object written at the same key later is a new version, ingested as such.

Every step is idempotent, so a clean-up killed anywhere resumes by doing the file again: a delete of
a key already gone is DONE; a move whose source is gone but whose destination exists is DONE; a copy
made before the kill is made again. The object is only touched while it still has the ETag that was
ingested (HEAD first; the copy is conditional on it): a newer version is never deleted or moved.

One pass per ingestion at a time (a PostgreSQL advisory lock), whether from ``icefloe cleanup NAME``
or a worker; workers take a due pass once across all of them, as ``--maintain-every`` does.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import Connection, Engine, text

from icefloe import faults, metrics, tables
from icefloe.errors import ConfigurationError, IcefloeError
from icefloe.models import Ingestion
from icefloe.redaction import redact_text
from icefloe.s3 import S3Location

log = logging.getLogger(__name__)

CLEANUP_EVERY_SECONDS = 3600  # how often workers make a pass of an ingestion with a clean-up action
PAGE = 500
COPY_OBJECT_LIMIT = 5 * 1024**3  # CopyObject's limit; larger objects go through a multipart copy


class CleanupError(IcefloeError):
    """One file could not be cleaned up; recorded as its clean-up FAILED (never a re-ingest)."""


@dataclass(frozen=True)
class Action:
    """What ``--after-ingest`` does to a source file: ``keep``, ``delete``, ``move`` (to ``target``,
    keeping the key's part below the source prefix) or ``tag`` (adds ``tag_key=tag_value``)."""

    kind: str
    target: S3Location | None = None
    tag_key: str = ""
    tag_value: str = ""

    def destination(self, source: S3Location, key: str) -> tuple[str, str]:
        """(bucket, key) a moved ``key`` of ``source`` lands at."""
        assert self.target is not None
        return self.target.bucket, self.target.prefix + key[len(source.prefix) :]


def parse_action(value: str, source: str) -> Action:
    """``--after-ingest`` checked against the ingestion's ``source`` (pure).

    ``move:`` takes ``s3://bucket/prefix/`` or a prefix in the source's bucket; a prefix inside the
    source (or containing it) is refused: moved files would be listed and ingested again.
    """
    kind, _, arg = value.partition(":")
    if kind in ("keep", "delete") and not arg:
        return Action(kind)
    if kind == "tag":
        key, eq, tag_value = arg.partition("=")
        if not eq or not key or len(key) > 128 or len(tag_value) > 256:
            raise ConfigurationError(
                f"--after-ingest tag: wants KEY=VALUE (key 1-128, value ≤ 256 chars), got {value!r}"
            )
        return Action("tag", tag_key=key, tag_value=tag_value)
    if kind == "move" and arg:
        src = S3Location.parse(source)
        target = S3Location.parse(arg) if arg.startswith("s3://") else S3Location(src.bucket, arg.lstrip("/"))
        if target.prefix and not target.prefix.endswith("/"):
            target = S3Location(target.bucket, target.prefix + "/")
        if target.bucket == src.bucket and (
            target.prefix.startswith(src.prefix) or src.prefix.startswith(target.prefix)
        ):
            raise ConfigurationError(
                f"--after-ingest move: {target.uri(target.prefix)} overlaps the source {source}: "
                "moved files would be listed and ingested again; move them outside it"
            )
        return Action("move", target=target)
    raise ConfigurationError(f"--after-ingest must be keep, delete, move:PREFIX or tag:KEY=VALUE, got {value!r}")


# --------------------------------------------------------------------------------------------------
# the store calls (S3 here; the one place another store's client plugs in)


def _s3_error(exc: Exception, what: str) -> CleanupError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return CleanupError(redact_text(f"{what}: {error.get('Code', '')} {error.get('Message', '')}".strip()))
    return CleanupError(redact_text(f"{what}: {exc}"))


def _head_etag(s3: Any, bucket: str, key: str) -> str | None:
    """The object's ETag, or None when there is no such object."""
    try:
        return str(s3.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def apply(s3: Any, action: Action, source: S3Location, key: str, etag: str, size: int) -> None:
    """Clean up one object that was ingested with ``etag``; idempotent (see the module)."""
    uri = source.uri(key)
    try:
        current = _head_etag(s3, source.bucket, key)
        if action.kind == "move":
            bucket, dest = action.destination(source, key)
            if current is None:
                if _head_etag(s3, bucket, dest) is None:
                    raise CleanupError(
                        f"{uri} is gone and not at s3://{bucket}/{dest}: moved or deleted by someone else"
                    )
                return  # moved before a crash
        if current is None:
            if action.kind == "delete":
                return  # deleted before a crash, or by someone else: the goal holds
            raise CleanupError(f"{uri} is gone: nothing to tag")
        if current != etag:
            raise CleanupError(
                f"{uri} changed since it was ingested (ETag {etag}, now {current}): left in place; "
                "the next discovery ingests the new version"
            )
        if action.kind == "delete":
            s3.delete_object(Bucket=source.bucket, Key=key)
        elif action.kind == "move":
            bucket, dest = action.destination(source, key)
            copy_source = {"Bucket": source.bucket, "Key": key}
            if size <= COPY_OBJECT_LIMIT:
                s3.copy_object(CopySource=copy_source, Bucket=bucket, Key=dest, CopySourceIfMatch=f'"{etag}"')
            else:
                s3.copy(copy_source, bucket, dest, ExtraArgs={"CopySourceIfMatch": f'"{etag}"'})
            faults.point("cleanup-after-copy")
            s3.delete_object(Bucket=source.bucket, Key=key)
        elif action.kind == "tag":
            tags = s3.get_object_tagging(Bucket=source.bucket, Key=key).get("TagSet", [])
            tags = [t for t in tags if t["Key"] != action.tag_key] + [
                {"Key": action.tag_key, "Value": action.tag_value}
            ]
            s3.put_object_tagging(Bucket=source.bucket, Key=key, Tagging={"TagSet": tags})
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(exc, f"{action.kind} {uri}") from exc


# --------------------------------------------------------------------------------------------------
# the ledger side

_CANDIDATES = text(
    """
    SELECT id, file_path, etag, size, snapshot_id, processed_at FROM files
    WHERE ingestion_id = :i AND status = 'SUCCESS' AND cleanup_status IS DISTINCT FROM 'DONE'
      AND processed_at <= now() - make_interval(secs => :delay)
      AND (processed_at, id) > (CAST(:after_at AS timestamptz), :after_id)
    ORDER BY processed_at, id
    LIMIT :limit
    """
)

_MARK = text(
    """
    UPDATE files SET cleanup_status = :status, cleanup_at = now(), cleanup_error = :error
    WHERE id = :id AND etag = :etag AND status = 'SUCCESS'
    """
)


def _mark(conn: Connection, row: Any, status: str, error: str | None) -> None:
    """Record the clean-up of the version that was cleaned (a newer version is left alone)."""
    conn.execute(_MARK, {"id": row.id, "etag": row.etag, "status": status, "error": error})


History = tuple[set[int], dt.datetime | None]


def _history(catalog: Any, identifier: str) -> History | None:
    """The ids of the table's current snapshot and its ancestors, and the oldest one's time; None
    when there is no such table."""
    table = tables.load_table(catalog, identifier)
    if table is None:
        return None
    ids: set[int] = set()
    oldest: int | None = None
    snapshot = table.current_snapshot()
    while snapshot is not None and snapshot.snapshot_id not in ids:
        ids.add(snapshot.snapshot_id)
        oldest = snapshot.timestamp_ms
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return ids, None if oldest is None else dt.datetime.fromtimestamp(oldest / 1000, dt.UTC)


def in_history(
    snapshot_id: int | None, processed_at: dt.datetime, history: tuple[set[int], dt.datetime | None]
) -> bool:
    """Is the file's snapshot still in the table (pure)? In the current history, or committed before
    the oldest snapshot kept (expired by retention: its rows live on in the later snapshots)."""
    ids, oldest = history
    if snapshot_id is not None and snapshot_id in ids:
        return True
    return oldest is not None and processed_at < oldest


@dataclass
class CleanupReport:
    """What one pass did (or, in a dry run, would do)."""

    ingestion: str
    action: str
    dry_run: bool = False
    cleaned: int = 0
    failed: int = 0
    busy: bool = False
    files: list[dict[str, Any]] = field(default_factory=list)  # dry run: what would be cleaned

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def clean(
    db: Engine,
    catalog: Any,
    s3: Any,
    ingestion: Ingestion,
    *,
    dry_run: bool = False,
    stop: threading.Event | None = None,
) -> CleanupReport:
    """One clean-up pass of ``ingestion``: every due file, oldest first (see the module)."""
    action = parse_action(ingestion.after_ingest, ingestion.source)
    report = CleanupReport(ingestion.name, ingestion.after_ingest, dry_run=dry_run)
    if action.kind == "keep":
        return report
    source = S3Location.parse(ingestion.source)
    with db.connect() as lock:
        got = lock.execute(
            text("SELECT pg_try_advisory_lock(hashtext('icefloe.cleanup'), CAST(:i AS int))"), {"i": ingestion.id}
        ).scalar_one()
        lock.commit()
        if not got:
            report.busy = True
            return report
        try:
            _pass(db, catalog, s3, ingestion, action, source, report, stop)
        finally:
            lock.execute(
                text("SELECT pg_advisory_unlock(hashtext('icefloe.cleanup'), CAST(:i AS int))"), {"i": ingestion.id}
            )
            lock.commit()
    return report


def _pass(
    db: Engine,
    catalog: Any,
    s3: Any,
    ingestion: Ingestion,
    action: Action,
    source: S3Location,
    report: CleanupReport,
    stop: threading.Event | None,
) -> None:
    history = _history(catalog, ingestion.table_identifier)
    after: tuple[dt.datetime, int] = (dt.datetime.min.replace(tzinfo=dt.UTC), 0)
    while stop is None or not stop.is_set():
        with db.connect() as conn:
            rows = conn.execute(
                _CANDIDATES,
                {
                    "i": ingestion.id,
                    "delay": ingestion.after_ingest_delay_seconds,
                    "after_at": after[0],
                    "after_id": after[1],
                    "limit": PAGE,
                },
            ).all()
        if not rows:
            return
        after = (rows[-1].processed_at, rows[-1].id)
        for row in rows:
            key = S3Location.parse(row.file_path).prefix
            error = None
            if history is None:
                error = f"table {ingestion.table_identifier} does not exist: {row.file_path} is left in place"
            elif not in_history(row.snapshot_id, row.processed_at, history):
                error = (
                    f"snapshot {row.snapshot_id} is no longer in the history of {ingestion.table_identifier} "
                    f"(rolled back?): {row.file_path} is left in place"
                )
            if report.dry_run:
                entry: dict[str, Any] = {"file_path": row.file_path, "action": action.kind, "blocked": error}
                if action.kind == "move":
                    bucket, dest = action.destination(source, key)
                    entry["destination"] = f"s3://{bucket}/{dest}"
                report.files.append(entry)
                continue
            if error is None:
                try:
                    apply(s3, action, source, key, row.etag, row.size)
                except CleanupError as exc:
                    error = str(exc)
            faults.point("cleanup-after-action")
            with db.begin() as conn:
                _mark(conn, row, "FAILED" if error else "DONE", error)
            if error:
                report.failed += 1
                log.warning("clean-up of %s failed: %s", row.file_path, error, extra={"ingestion": ingestion.name})
            else:
                report.cleaned += 1
            metrics.SOURCE_CLEANUPS.labels(ingestion.name, action.kind, "failed" if error else "done").inc()


# --------------------------------------------------------------------------------------------------
# workers: a due pass taken once across them; alerts


def take_due_cleanups(db: Engine) -> list[int]:
    """Ids of the ingestions whose clean-up pass is due, each taken by exactly one caller (the
    due-time moves ahead in the statement that picks the row, as maintenance's does)."""
    with db.begin() as conn:
        rows = conn.execute(
            text(
                """
                WITH due AS (
                    SELECT id FROM ingestions
                    WHERE status = 'ACTIVE' AND after_ingest <> 'keep'
                      AND coalesce(cleanup_due_at, created_at) <= now()
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE ingestions i SET cleanup_due_at = now() + make_interval(secs => :every)
                FROM due WHERE i.id = due.id AND coalesce(i.cleanup_due_at, i.created_at) <= now()
                RETURNING i.id
                """
            ),
            {"every": CLEANUP_EVERY_SECONDS},
        ).all()
    return [r.id for r in rows]


# One alert per ingestion and day while clean-ups fail (each pass retries the failed files).
DETECT_CLEANUP_FAILED = text(
    """
    INSERT INTO alerts (incident_key, kind, ingestion_id, subject, body)
    SELECT k.incident_key, 'cleanup_failed', i.id,
           format('%s source file(s) of %s could not be cleaned up (--after-ingest %s); e.g. %s',
                  f.failed, i.name, i.after_ingest, f.example),
           jsonb_build_object('files_failed', f.failed, 'after_ingest', i.after_ingest, 'example', f.example)
    FROM ingestions i
    CROSS JOIN LATERAL (
        SELECT count(*) AS failed, min(cleanup_error) AS example FROM files
        WHERE ingestion_id = i.id AND status = 'SUCCESS' AND cleanup_status = 'FAILED'
    ) f
    CROSS JOIN LATERAL (SELECT 'cleanup-failed:' || i.id || ':' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')
                        AS incident_key) k
    WHERE f.failed > 0
      AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.incident_key = k.incident_key)
    ORDER BY k.incident_key
    ON CONFLICT (incident_key) DO NOTHING
    """
)
