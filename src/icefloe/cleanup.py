"""Source clean-up after ingestion (``--after-ingest keep|delete|move:PREFIX|tag:KEY=VALUE``).

A file version is cleaned up once it has been SUCCESS for ``after_ingest_delay_seconds`` and its
snapshot is still in the table's history. The ledger keeps the row (SUCCESS, with ``cleanup_status``
DONE or FAILED, ``cleanup_at``, ``cleanup_error``): the claim never takes a SUCCESS row, and a listing
does not see a deleted or moved key (nor does a tag change an ETag), so a cleaned file is never
ingested again. A new object written at the same key later is a new version, ingested as such.

Every step is idempotent, so a clean-up killed anywhere resumes by doing the file again: a delete of
a key already gone is DONE; a move whose source is gone but whose destination exists is DONE; a copy
made before the kill is made again. The object is only touched while it still has the version that
was ingested (the ledger's ``etag``: S3's ETag, checked by HEAD and by the conditional copy; for GCS,
Azure and ``file://`` the store's version token, see :func:`apply_store` for the window left open).

Every store deletes and moves (within its bucket or container; S3 also to another bucket); ``tag``
is S3's object tagging and refused for the other stores when the ingestion is created or updated.

One pass per ingestion at a time (a PostgreSQL advisory lock), whether from ``icefloe cleanup NAME``
or a worker; workers take a due pass once across all of them, as ``--maintain-every`` does.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import Connection, Engine, text

from icefloe import faults, metrics, tables
from icefloe.errors import ConfigurationError, IcefloeError
from icefloe.models import Ingestion
from icefloe.redaction import redact_text, redact_uri
from icefloe.s3 import S3Location
from icefloe.stores import Location, Store, parse_source

log = logging.getLogger(__name__)

CLEANUP_EVERY_SECONDS = 3600  # how often workers make a pass of an ingestion with a clean-up action
PAGE = 500
COPY_OBJECT_LIMIT = 5 * 1024**3  # CopyObject's limit; larger objects go through a multipart copy


class CleanupError(IcefloeError):
    """One file could not be cleaned up; recorded as its clean-up FAILED (never a re-ingest)."""


@dataclass(frozen=True)
class Action:
    """What ``--after-ingest`` does to a source file: ``keep``, ``delete``, ``move`` (to ``target``,
    keeping the key's part below the source prefix) or ``tag`` (adds ``tag_key=tag_value``, S3 only)."""

    kind: str
    target: Location | None = None
    tag_key: str = ""
    tag_value: str = ""

    def destination(self, source: Location, key: str) -> tuple[str, str]:
        """(bucket or container, key) a moved ``key`` of ``source`` lands at."""
        assert self.target is not None
        return self.target.container, self.target.prefix + key[len(source.prefix) :]

    def destination_uri(self, source: Location, key: str) -> str:
        assert self.target is not None
        return self.target.uri(self.destination(source, key)[1])


def _move_target(arg: str, src: Location, value: str) -> Location:
    """The ``move:`` target: a full URI of the source's store, or a prefix in its bucket or container
    (for ``file://``, an absolute path)."""
    if "://" in arg:
        target = parse_source(arg)
        # S3 copies across buckets; the other stores are one bucket or container per client.
        same_store = target.scheme == src.scheme and (
            target.scheme == "s3" or (target.container, target.account) == (src.container, src.account)
        )
        if not same_store:
            raise ConfigurationError(
                f"--after-ingest move: {redact_uri(arg)} is not on the store of the source {redact_uri(src.root)}; "
                f"move within {src.base if src.scheme != 's3' else 's3://'}"
            )
        target = replace(target, base=src.base) if target.container == src.container else target
    elif src.scheme == "file":
        if not arg.startswith("/"):
            raise ConfigurationError(f"--after-ingest move: on file:// wants an absolute path, got {value!r}")
        target = replace(src, prefix=arg.lstrip("/"))
    else:
        target = replace(src, prefix=arg.lstrip("/"))
    if target.prefix and not target.prefix.endswith("/"):
        target = replace(target, prefix=target.prefix + "/")
    return target


def parse_action(value: str, source: str) -> Action:
    """``--after-ingest`` checked against the ingestion's ``source`` (pure).

    ``move:`` takes a full URI of the source's store or a prefix in the source's bucket or container
    (an absolute path for ``file://``); a prefix inside the source (or containing it) is refused:
    moved files would be listed and ingested again. ``tag:`` needs S3 (object tags).
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
        scheme = parse_source(source).scheme
        if scheme != "s3":
            raise ConfigurationError(
                f"--after-ingest tag: needs S3 object tags; a {scheme}:// source can keep, delete or move:PREFIX"
            )
        return Action("tag", tag_key=key, tag_value=tag_value)
    if kind == "move" and arg:
        src = parse_source(source)
        target = _move_target(arg, src, value)
        if target.container == src.container and (
            target.prefix.startswith(src.prefix) or src.prefix.startswith(target.prefix)
        ):
            raise ConfigurationError(
                f"--after-ingest move: {redact_uri(target.root)} overlaps the source {redact_uri(source)}: "
                "moved files would be listed and ingested again; move them outside it"
            )
        return Action("move", target=target)
    raise ConfigurationError(f"--after-ingest must be keep, delete, move:PREFIX or tag:KEY=VALUE, got {value!r}")


# --------------------------------------------------------------------------------------------------
# the store calls: S3 through boto3 (conditional copy, tags), the other stores through icefloe.stores


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


def apply(s3: Any, action: Action, location: Location, key: str, etag: str, size: int) -> None:
    """Clean up one S3 object that was ingested with ``etag``; idempotent (see the module)."""
    source = S3Location(location.container, location.prefix)
    uri = source.uri(key)
    try:
        current = _head_etag(s3, source.bucket, key)
        if action.kind == "move":
            bucket, dest = action.destination(location, key)
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
            bucket, dest = action.destination(location, key)
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


def apply_store(store: Store, action: Action, source: Location, key: str, version: str) -> None:
    """Clean up one object of a GCS, Azure or local source ingested at ``version``; idempotent.

    These stores have no conditional copy or delete here, so the version is checked before the copy
    and again after it (a copy of a version that changed meanwhile is removed, the source left in
    place). What stays open is the instant between the last check and the delete: a writer that
    replaces the object exactly then loses its new version. ``tag`` is refused for them at create.
    """
    uri = source.uri(key)
    try:
        current = store.current_version(uri)
        dest = action.destination_uri(source, key) if action.kind == "move" else ""
        if current is None:
            if action.kind == "delete":
                return  # deleted before a crash, or by someone else: the goal holds
            if store.current_version(dest) is None:
                raise CleanupError(f"{uri} is gone and not at {dest}: moved or deleted by someone else")
            return  # moved before a crash
        if current != version:
            raise CleanupError(
                f"{uri} changed since it was ingested (version {version}, now {current}): left in place; "
                "the next discovery ingests the new version"
            )
        if action.kind == "move":
            store.copy(uri, dest)
            now = store.current_version(uri)
            if now != version:
                store.delete(dest)
                raise CleanupError(
                    f"{uri} changed while it was copied to {dest} (version {version}, now {now}): "
                    "left in place, the copy removed"
                )
            faults.point("cleanup-after-copy")
        store.delete(uri)
    except CleanupError:
        raise
    except IcefloeError as exc:
        raise CleanupError(redact_text(f"{action.kind} {uri}: {exc}")) from exc


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
    stores: Callable[[Location], Store] | None = None,
    dry_run: bool = False,
    stop: threading.Event | None = None,
) -> CleanupReport:
    """One clean-up pass of ``ingestion``: every due file, oldest first (see the module). An S3
    source is cleaned with the client ``s3``; any other through its store from ``stores``
    (:meth:`icefloe.runtime.Runtime.store`)."""
    action = parse_action(ingestion.after_ingest, ingestion.source)
    report = CleanupReport(ingestion.name, ingestion.after_ingest, dry_run=dry_run)
    if action.kind == "keep":
        return report
    source = parse_source(ingestion.source)
    if source.scheme == "s3":

        def one(key: str, row: Any) -> None:
            apply(s3, action, source, key, row.etag, row.size)

    else:
        if stores is None:
            raise ConfigurationError(f"cleaning up {source.scheme}:// sources needs their store")
        store = stores(source)

        def one(key: str, row: Any) -> None:
            apply_store(store, action, source, key, row.etag)

    with db.connect() as lock:
        got = lock.execute(
            text("SELECT pg_try_advisory_lock(hashtext('icefloe.cleanup'), CAST(:i AS int))"), {"i": ingestion.id}
        ).scalar_one()
        lock.commit()
        if not got:
            report.busy = True
            return report
        try:
            _pass(db, catalog, one, ingestion, action, source, report, stop)
        finally:
            lock.execute(
                text("SELECT pg_advisory_unlock(hashtext('icefloe.cleanup'), CAST(:i AS int))"), {"i": ingestion.id}
            )
            lock.commit()
    return report


def _pass(
    db: Engine,
    catalog: Any,
    one: Callable[[str, Any], None],
    ingestion: Ingestion,
    action: Action,
    source: Location,
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
            key = source.key_of(row.file_path)
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
                    entry["destination"] = action.destination_uri(source, key)
                report.files.append(entry)
                continue
            if error is None:
                try:
                    one(key, row)
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
