"""Event-driven discovery (``--discovery events``): S3 object-created notifications read from an SQS
queue instead of listing the source, and a periodic reconciling listing that finds what they missed.

A run drains the queue: each receive of up to 10 messages, gathered into pages of up to
:data:`MESSAGES_PER_PAGE`, is upserted into the ledger in one transaction (as a listing page would
be, :func:`icefloe.ledger.upsert_event_page`); only after that transaction commits are the messages
deleted from the queue. A crash in between leaves them in the queue, to be redelivered and upserted
again, which changes nothing. Events are lossy in practice (a notification configured after files
landed, a filter that misses a suffix, queue retention), so every ``reconcile_every_seconds`` the run
also lists the source in full; new or changed files that listing finds, modified before the run began
reading the queue, are ``files_missed_by_events`` (run JSON, metric, alert).

Message bodies understood: S3's own notification (``{"Records": [...]}``), the same wrapped by SNS
(``{"Type": "Notification", "Message": "..."}``), and EventBridge's "Object Created" event. Other
messages (``s3:TestEvent``, removals) are deleted without effect.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import Engine, text

from icefloe import ledger, metrics, runs
from icefloe.discovery import DiscoveryCounts, Filter, ListingPlan, discover, skip_reason
from icefloe.errors import ConfigurationError, SourceError
from icefloe.ledger import EventObject, ListedObject
from icefloe.models import Ingestion, Run
from icefloe.redaction import redact_text
from icefloe.runtime import Runtime
from icefloe.s3 import S3Location
from icefloe.settings import S3Settings
from icefloe.stores import parse_source

log = logging.getLogger(__name__)

MESSAGES_PER_PAGE = 100  # ten receives of ten: one ledger transaction, then one delete per ten
MAX_MESSAGES_PER_RUN = 50_000  # a queue that never empties still lets the run go on to ingest
WAIT_SECONDS = 1  # long poll of the receive that decides the queue is empty (a short poll can miss)


@dataclass
class EventCounts:
    """What one drain of the queue did."""

    messages: int = 0
    listed: int = 0
    new: int = 0
    changed: int = 0
    skipped: int = 0


# --------------------------------------------------------------------------------------------------
# messages → objects (pure)


def _records(body: Any) -> list[dict[str, Any]]:
    """The S3 notification records of one message body (any of the shapes the module names)."""
    if not isinstance(body, dict):
        return []
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):  # SNS → SQS
        try:
            return _records(json.loads(body["Message"]))
        except ValueError:
            return []
    if body.get("source") == "aws.s3" and body.get("detail-type") == "Object Created":  # EventBridge
        detail = body.get("detail") or {}
        obj = detail.get("object") or {}
        return [
            {
                "eventName": "ObjectCreated:" + str(detail.get("reason", "")),
                "eventTime": body.get("time"),
                "s3": {
                    "bucket": detail.get("bucket") or {},
                    # EventBridge keys are not URL-encoded: encode so that one decoding fits all.
                    "object": obj | {"key": urllib.parse.quote_plus(str(obj.get("key", ""))), "eTag": obj.get("etag")},
                },
            }
        ]
    records = body.get("Records")
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def objects_of_message(body_text: str, location: S3Location, flt: Filter) -> list[EventObject]:
    """The created objects one SQS message body announces that belong to the ingestion (its bucket,
    prefix, pattern and ``--since``), as a listing page would record them. Anything else: []."""
    try:
        body = json.loads(body_text)
    except ValueError:
        log.warning("ignoring a queue message that is not JSON: %s", redact_text(body_text[:200]))
        return []
    found: list[EventObject] = []
    for record in _records(body):
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        if (s3.get("bucket") or {}).get("name") != location.bucket or not obj.get("key"):
            continue
        key = urllib.parse.unquote_plus(str(obj["key"]))  # S3 form-encodes keys in notifications
        modified = _time(record.get("eventTime"))
        if not key.startswith(location.prefix) or not flt.accepts(key, modified):
            continue
        listed = ListedObject(
            file_path=location.uri(key),
            size=int(obj.get("size") or 0),
            modified_at=modified,
            etag=str(obj.get("eTag") or "").strip('"'),
            skip_reason=skip_reason(key[len(location.prefix) :]),
        )
        sequencer = obj.get("sequencer")
        found.append(EventObject(listed, str(sequencer) if sequencer else None))
    return found


def _order(event: EventObject) -> tuple[str, dt.datetime]:
    seq = event.sequencer or ""
    return seq.ljust(32, "0"), event.listed.modified_at or dt.datetime.min.replace(tzinfo=dt.UTC)


def newest_per_key(events: list[EventObject]) -> list[EventObject]:
    """One object per key, the newest notification's (one statement cannot upsert a row twice)."""
    newest: dict[str, EventObject] = {}
    for event in events:
        known = newest.get(event.listed.file_path)
        if known is None or _order(event) > _order(known):
            newest[event.listed.file_path] = event
    return list(newest.values())


# --------------------------------------------------------------------------------------------------
# the SQS boundary


def queue_endpoint(queue_url: str) -> tuple[str, str | None]:
    """(endpoint, region) of a queue URL: a queue URL names its endpoint (AWS's
    ``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`` or an emulator's), and AWS's its region."""
    parsed = urllib.parse.urlsplit(queue_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path.count("/") < 2:
        raise ConfigurationError(
            f"events queue must be an SQS queue URL like https://sqs.us-east-1.amazonaws.com/123456789012/name, "
            f"got {queue_url!r}"
        )
    host = parsed.hostname or ""
    region = host.split(".")[1] if host.startswith("sqs.") and host.endswith(".amazonaws.com") else None
    return f"{parsed.scheme}://{parsed.netloc}", region


def make_sqs_client(settings: S3Settings, queue_url: str) -> Any:
    """A boto3 SQS client for ``queue_url``, with the credentials icefloe's S3 clients use."""
    endpoint, region = queue_endpoint(queue_url)
    given = settings.access_key_id and settings.secret_access_key
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key_id if given else None,
        aws_secret_access_key=settings.secret_access_key if given else None,
        aws_session_token=settings.session_token if given else None,
    )
    return session.client(
        "sqs",
        region_name=region or settings.region or "us-east-1",
        endpoint_url=endpoint,
        verify=settings.ca_bundle,
        config=Config(retries={"max_attempts": 5, "mode": "adaptive"}, connect_timeout=5, read_timeout=30),
    )


@contextmanager
def queue_errors(queue_url: str) -> Iterator[None]:
    """botocore's errors of queue calls as one-line :class:`SourceError`."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        raise SourceError(redact_text(f"events queue {queue_url}: {code} {message}".strip())) from exc
    except BotoCoreError as exc:
        raise SourceError(redact_text(f"events queue {queue_url} unreachable: {exc}")) from exc


def check_queue(settings: S3Settings, queue_url: str) -> int:
    """Test access to the queue (``icefloe ingestion check``); returns the messages waiting in it."""
    sqs = make_sqs_client(settings, queue_url)
    try:
        with queue_errors(queue_url):
            attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    finally:
        sqs.close()


def _receive(sqs: Any, queue_url: str, wait: int, visibility: int) -> list[dict[str, Any]]:
    response = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait, VisibilityTimeout=visibility
    )
    messages: list[dict[str, Any]] = response.get("Messages", [])
    return messages


def _delete(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    """Delete recorded messages, ten per request; one that fails is redelivered (harmless)."""
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(chunk)]
        failed = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
        if failed:
            log.warning("%d queue message(s) not deleted (they come back and change nothing)", len(failed))


def drain(
    db: Engine,
    sqs: Any,
    *,
    queue_url: str,
    ingestion_id: int,
    location: S3Location,
    flt: Filter,
    visibility_seconds: int = 60,
    on_page: Callable[[EventCounts], None] | None = None,
    max_messages: int = MAX_MESSAGES_PER_RUN,
) -> EventCounts:
    """Read the queue until it is empty (or ``max_messages``), upserting each page of messages in one
    transaction and deleting its messages only once that transaction committed."""
    counts = EventCounts()
    with queue_errors(queue_url):
        while counts.messages < max_messages:
            page: list[dict[str, Any]] = []
            while len(page) < MESSAGES_PER_PAGE:
                got = _receive(sqs, queue_url, 0 if page else WAIT_SECONDS, visibility_seconds)
                if not got:
                    break
                page += got
            if not page:
                break
            objects = newest_per_key([o for m in page for o in objects_of_message(m.get("Body", ""), location, flt)])
            with db.begin() as conn:
                recorded = ledger.upsert_event_page(conn, ingestion_id, objects)
            _delete(sqs, queue_url, page)  # only now: the ledger has them
            counts.messages += len(page)
            counts.listed += len(objects)
            counts.new += recorded.new
            counts.changed += recorded.changed
            counts.skipped += recorded.skipped
            if on_page is not None:
                on_page(counts)
    return counts


# --------------------------------------------------------------------------------------------------
# alerts

DETECT_MISSED_BY_EVENTS = text(
    """
    INSERT INTO alerts (incident_key, kind, ingestion_id, subject, body)
    SELECT k.incident_key, 'events_missed_files', r.ingestion_id,
           format('the reconciling listing of %s found %s file(s) its event notifications missed (run %s)',
                  i.name, r.files_missed_by_events, r.id),
           jsonb_build_object(
               'run_id', r.id, 'files_missed_by_events', r.files_missed_by_events,
               'events_queue', i.events_queue, 'finished_at', r.finished_at)
    FROM runs r
    JOIN ingestions i ON i.id = r.ingestion_id
    CROSS JOIN LATERAL (SELECT 'events-missed:' || r.id AS incident_key) k
    WHERE r.files_missed_by_events > 0 AND r.status IN ('SUCCESS', 'PARTIAL', 'FAILED')
      AND r.finished_at >= now() - make_interval(secs => :lookback)
      AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.incident_key = k.incident_key)
    ORDER BY k.incident_key
    ON CONFLICT (incident_key) DO NOTHING
    """
)


# --------------------------------------------------------------------------------------------------
# one run's discovery


def discover_run(
    rt: Runtime, ingestion: Ingestion, run: Run, on_page: Callable[[DiscoveryCounts], None] | None = None
) -> None:
    """Discovery of an events-mode run: drain the queue, then, when due (``reconcile_every_seconds``
    since the last full listing, the first run, or ``--full-listing``), a full reconciling listing
    whose new or changed files modified before the drain began are counted as missed by events.
    The first listing ever is a backfill of what was there before the ingestion: not counted."""
    if not ingestion.events_queue:
        raise ConfigurationError(f"ingestion {ingestion.name} discovers by events but has no events queue")
    # The listing's view of the source (its store and root, as `worker._discover` has it); the
    # notifications name the bucket, matched by the S3 form of the same URI.
    source = parse_source(ingestion.source)
    location = S3Location(source.container, source.prefix)
    flt = Filter(prefix=source.prefix, pattern=ingestion.pattern, since=ingestion.since)
    with rt.db.connect() as conn:
        began = ledger.database_now(conn)
        state = ledger.listing_state(conn, ingestion.id, source.root, ingestion.reconcile_every_seconds)

    def relay(counts: EventCounts) -> None:
        if on_page is not None:
            on_page(DiscoveryCounts(listed=counts.listed))

    sqs = make_sqs_client(rt.settings.s3, ingestion.events_queue)
    try:
        drained = drain(
            rt.db,
            sqs,
            queue_url=ingestion.events_queue,
            ingestion_id=ingestion.id,
            location=location,
            flt=flt,
            visibility_seconds=max(60, rt.settings.lease_seconds),
            on_page=relay,
        )
    finally:
        sqs.close()
    runs.add(
        rt.db,
        run.id,
        files_discovered=drained.listed,
        files_new=drained.new,
        files_changed=drained.changed,
        files_skipped=drained.skipped,
        event_messages=drained.messages,
    )
    metrics.EVENT_MESSAGES.labels(ingestion.name).inc(drained.messages)
    if not (run.listing == "full" or state.full_listing_due):
        runs.set_listing(rt.db, run.id, None, discovery="events")
        return
    backfill = state.last_full_listing_at is None
    plan = ListingPlan(full=True, missed_before=None if backfill else began)
    listed = discover(
        rt.db, rt.store(source), ingestion_id=ingestion.id, location=source, flt=flt, plan=plan, on_page=on_page
    )
    runs.add(
        rt.db,
        run.id,
        files_discovered=listed.listed,
        files_new=listed.new,
        files_changed=listed.changed,
        files_skipped=listed.skipped,
        list_requests=listed.list_requests,
        files_missed_by_events=listed.missed_by_events,
    )
    runs.set_listing(rt.db, run.id, "full", discovery="events")
    metrics.LIST_REQUESTS.labels(ingestion.name).inc(listed.list_requests)
    if listed.missed_by_events:
        metrics.FILES_MISSED_BY_EVENTS.labels(ingestion.name).inc(listed.missed_by_events)
        log.warning(
            "the reconciling listing found %d file(s) the event notifications of %s never delivered",
            listed.missed_by_events,
            redact_text(ingestion.events_queue),
            extra={"run_id": run.id, "ingestion": ingestion.name},
        )
