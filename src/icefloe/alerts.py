"""Alerts: incidents worth telling a human about, found in the ledger and delivered once each.

Six kinds of incident, each recorded as one row of ``alerts`` whose ``incident_key`` is unique:

- ``run_failed`` (``run-failed:<run>``): a run ended FAILED;
- ``files_failed`` (``files-failed:<ingestion>:<run>``): files failed with no retry left, one alert per
  finished run listing them (the first :data:`FILES_LISTED` and the total);
- ``stale`` (``stale:<ingestion>:<last successful run or 0>``): an ACTIVE ingestion with
  ``alert_stale_after_seconds`` has had no SUCCESS run for longer than that. The key names the last
  success, so there is one alert per stale period, and the next success re-arms it;
- ``listing_missed_files`` (``listing-missed:<run>``): a full reconciling listing found files that the
  incremental listing had missed (``runs.files_missed_by_incremental`` > 0): the keys do not increase
  as ``--listing incremental`` assumes, or ``--relist-lookback`` is too short;
- ``events_missed_files`` (``events-missed:<run>``): a reconciling listing found files that the event
  notifications never delivered (``runs.files_missed_by_events`` > 0, :mod:`icefloe.events`);
- ``cleanup_failed`` (``cleanup-failed:<ingestion>:<UTC day>``): source files whose clean-up after
  ingestion failed (:mod:`icefloe.cleanup`), one alert per ingestion and day while it lasts.

:func:`detect` and :func:`deliver` are what the worker loop calls every few seconds, from any number
of processes. Detection is one ``INSERT … SELECT … ON CONFLICT DO NOTHING`` per kind, on the database's
clock, so concurrent detectors make one row per incident. Delivery sends each unsent row through
every configured channel (:class:`WebhookChannel`, :class:`EmailChannel`) while holding its row lock
(``FOR UPDATE SKIP LOCKED``): two workers never send one alert at once, and an alert whose sender died
is unlocked and sent by another. Delivery is at least once: a crash between sending and recording it,
or a retry after one channel failed and another succeeded, sends it again; receivers can deduplicate
on ``incident_key``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
import smtplib
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

import urllib3
from sqlalchemy import Engine, text

from icefloe.errors import AlertDeliveryError, ConfigurationError
from icefloe.redaction import redact_json, redact_text
from icefloe.retry import ALERT_DELIVERY, WEBHOOK_IN_PLACE
from icefloe.settings import AlertSettings as AlertSettings
from icefloe.settings import SmtpSettings as SmtpSettings

log = logging.getLogger(__name__)

KINDS = ("run_failed", "files_failed", "stale", "listing_missed_files")
FILES_LISTED = 20
"""How many failed files one ``files_failed`` alert lists; ``total`` counts them all."""
DEFAULT_LOOKBACK_SECONDS = 86400
"""Failed runs and files older than this are not alerted (e.g. the history before alerts were on)."""


# --------------------------------------------------------------------------------------------------
# messages and channels


@dataclass(frozen=True)
class AlertMessage:
    """One alert as the channels send it."""

    incident_key: str
    kind: str
    subject: str
    ingestion: str | None
    body: dict[str, Any]
    created_at: dt.datetime

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON document."""
        return {
            "kind": self.kind,
            "subject": self.subject,
            "ingestion": self.ingestion,
            "body": self.body,
            "created_at": self.created_at.isoformat(),
            "incident_key": self.incident_key,
        }

    def text(self) -> str:
        """A plain-text rendering for email: the subject, then the body's fields, files one a line."""
        lines = [self.subject, "", f"kind: {self.kind}"]
        if self.ingestion is not None:
            lines.append(f"ingestion: {self.ingestion}")
        lines.append(f"detected at: {self.created_at.isoformat()}")
        for key, value in self.body.items():
            if isinstance(value, list):
                lines.append(f"{key}:")
                lines.extend(f"  - {_item_line(item)}" for item in value)
            elif value is not None:
                lines.append(f"{key}: {value}")
        lines += ["", f"incident: {self.incident_key}"]
        return "\n".join(lines) + "\n"

    def email(self, smtp: SmtpSettings) -> EmailMessage:
        msg = EmailMessage()
        # Header values are one line: an ingestion name or error text cannot inject headers.
        msg["Subject"] = _one_line(f"[icefloe] {self.subject}", 250)
        msg["From"] = smtp.sender
        msg["To"] = ", ".join(smtp.recipients)
        msg["Date"] = format_datetime(self.created_at)
        msg["Message-ID"] = make_msgid("icefloe", domain=smtp.sender.rpartition("@")[2] or "icefloe")
        msg["X-Icefloe-Incident"] = _one_line(self.incident_key, 200)
        msg.set_content(self.text())
        return msg


def _item_line(item: Any) -> str:
    if isinstance(item, dict):
        head = item.get("path", "")
        error = ": ".join(str(item[k]) for k in ("error_type", "error_message") if item.get(k))
        return f"{head} — {error}" if error else str(head or item)
    return str(item)


class Channel(Protocol):
    """Where alerts go. ``send`` raises :class:`AlertDeliveryError` when the alert was not delivered."""

    name: str

    def send(self, message: AlertMessage) -> None: ...


class WebhookChannel:
    """POSTs :meth:`AlertMessage.payload` as JSON; 5xx, 429 and connection errors are retried in place.

    The retries are this class's own loop rather than urllib3's ``Retry``: urllib3 logs every retry
    with the request path, and a webhook's path often is its secret (Slack, Teams, …).
    """

    name = "webhook"
    attempts = 3
    backoff = WEBHOOK_IN_PLACE  # the next retries are deliver()'s, minutes later

    def __init__(self, url: str, timeout_seconds: float) -> None:
        self._url = url
        self._timeout = urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds)
        parts = urllib.parse.urlsplit(url)
        # What errors may show: the path and query often hold the receiver's token.
        self.target = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        self._secrets = [s for s in (url, parts.path, parts.query) if len(s) > 1]

    def send(self, message: AlertMessage) -> None:
        body = json.dumps(message.payload(), default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "icefloe-alerts"}
        error = ""
        with urllib3.PoolManager(timeout=self._timeout) as http:
            for attempt in range(self.attempts):
                if attempt:
                    time.sleep(self.backoff.delay(attempt))
                try:
                    response = http.request(
                        "POST", self._url, body=body, headers=headers, retries=False, redirect=False
                    )
                except urllib3.exceptions.HTTPError as exc:
                    # A POST that timed out may have arrived: retrying it is "at least once".
                    error = f"webhook {self.target}: {_describe(exc, self._secrets)}"
                    continue
                if 200 <= response.status < 300:
                    return
                error = f"webhook {self.target} answered HTTP {response.status}"
                if not retryable_status(response.status):
                    break
        raise AlertDeliveryError(error)  # not chained: urllib3's errors carry the full URL


def retryable_status(status: int) -> bool:
    """Whether a webhook answer is worth retrying now: overload and server errors, not 4xx or redirects."""
    return status == 429 or 500 <= status < 600


class EmailChannel:
    """Sends :meth:`AlertMessage.email` over SMTP, with STARTTLS and login when configured."""

    name = "email"

    def __init__(self, smtp: SmtpSettings, timeout_seconds: float) -> None:
        self._smtp = smtp
        self._timeout = timeout_seconds
        self._secrets = [smtp.password] if smtp.password else []

    def send(self, message: AlertMessage) -> None:
        s = self._smtp
        try:
            with smtplib.SMTP(s.host, s.port, timeout=self._timeout) as client:
                client.ehlo()
                if s.starttls:
                    client.starttls(context=ssl.create_default_context())
                    client.ehlo()
                if s.user is not None and s.password is not None:
                    client.login(s.user, s.password)
                client.send_message(message.email(s))
        except (smtplib.SMTPException, OSError) as exc:
            raise AlertDeliveryError(f"email via {s.host}:{s.port}: {_describe(exc, self._secrets)}") from None


def channels_for(settings: AlertSettings) -> list[Channel]:
    """The channels ``settings`` configures, webhook first."""
    out: list[Channel] = []
    if settings.webhook_url:
        out.append(WebhookChannel(settings.webhook_url, settings.timeout_seconds))
    if settings.smtp:
        out.append(EmailChannel(settings.smtp, settings.timeout_seconds))
    return out


def _one_line(value: str, limit: int) -> str:
    line = " ".join(value.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _describe(exc: BaseException, secrets: Iterable[str]) -> str:
    """``Type: message`` on one line, without the secrets and without urllib3's object reprs."""
    message = re.sub(r"<[^<>]* object at 0x[0-9a-f]+>:?\s*", "", redact_text(str(exc)))
    for secret in secrets:
        message = message.replace(secret, "***")
    return _one_line(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, 300)


def send_test_alert(settings: AlertSettings) -> dict[str, str | None]:
    """Send one test alert through every configured channel: channel name → None when ok, else the error.

    Raises :class:`ConfigurationError` when no channel is configured.
    """
    channels = channels_for(settings)
    if not channels:
        raise ConfigurationError(
            "no alert channel configured: set ICEFLOE_ALERT_WEBHOOK_URL or ICEFLOE_ALERT_SMTP_HOST"
        )
    message = AlertMessage(
        incident_key=f"test:{uuid.uuid4()}",
        kind="test",
        subject="icefloe test alert",
        ingestion=None,
        body={"message": "sent by `icefloe alerts test`: if you read this, the channel works"},
        created_at=dt.datetime.now(dt.UTC),
    )
    return {channel.name: _send(channel, message) for channel in channels}


def _send(channel: Channel, message: AlertMessage) -> str | None:
    """Send through one channel: None when delivered, else one line saying why not."""
    try:
        channel.send(message)
    except AlertDeliveryError as exc:
        return str(exc)
    except Exception as exc:  # a bug in a channel must not stop the others, nor hold the alert forever
        return _describe(exc, ())
    return None


# --------------------------------------------------------------------------------------------------
# detection

# Each statement inserts in incident_key order: concurrent detectors then wait on each other's keys
# in one order and cannot deadlock. NOT EXISTS skips known incidents without spending sequence
# values; ON CONFLICT settles the race between detectors that both found a new one.

_DETECT_RUN_FAILED = text(
    """
    INSERT INTO alerts (incident_key, kind, ingestion_id, subject, body)
    SELECT k.incident_key, 'run_failed', r.ingestion_id,
           format('run %s of %s failed: %s', r.id, i.name, left(coalesce(r.error_message, 'no error message'), 200)),
           jsonb_build_object(
               'run_id', r.id, 'trigger', r.trigger, 'worker_id', r.worker_id,
               'error_message', r.error_message, 'started_at', r.started_at, 'finished_at', r.finished_at,
               'files_succeeded', r.files_succeeded, 'files_failed', r.files_failed)
    FROM runs r
    JOIN ingestions i ON i.id = r.ingestion_id
    CROSS JOIN LATERAL (SELECT 'run-failed:' || r.id AS incident_key) k
    WHERE r.status = 'FAILED' AND r.finished_at >= now() - make_interval(secs => :lookback)
      AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.incident_key = k.incident_key)
    ORDER BY k.incident_key
    ON CONFLICT (incident_key) DO NOTHING
    """
)

# A file failed permanently when it is FAILED with no retry left (the claim's own condition,
# retry_count < max_retries, turned round). Files are grouped per run, once the run has finished,
# so that the alert lists them all. Files failed outside any run (its row deleted) are grouped per
# closed 10-minute window of processed_at instead.
_DETECT_FILES_FAILED = text(
    """
    WITH failed AS (
        SELECT f.id, f.ingestion_id, i.name, f.run_id, f.file_path, f.error_type, f.error_message,
               f.retry_count,
               CASE WHEN f.run_id IS NOT NULL THEN format('files-failed:%s:%s', f.ingestion_id, f.run_id)
                    ELSE format('files-failed:%s:0:%s', f.ingestion_id,
                                (floor(extract(epoch FROM f.processed_at) / :window) * :window)::bigint)
               END AS incident_key
        FROM ingestions i
        JOIN files f ON f.ingestion_id = i.id AND f.status = 'FAILED' AND f.retry_count >= i.max_retries
        LEFT JOIN runs r ON r.id = f.run_id
        WHERE CASE WHEN f.run_id IS NOT NULL
                   THEN r.status IN ('SUCCESS', 'PARTIAL', 'FAILED')
                        AND r.finished_at >= now() - make_interval(secs => :lookback)
                   ELSE f.processed_at >= now() - make_interval(secs => :lookback)
                        AND to_timestamp((floor(extract(epoch FROM f.processed_at) / :window) + 1) * :window)
                            <= now()
              END
    ), ranked AS (
        SELECT failed.*, row_number() OVER (PARTITION BY incident_key ORDER BY id) AS rank
        FROM failed
        WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.incident_key = failed.incident_key)
    )
    INSERT INTO alerts (incident_key, kind, ingestion_id, subject, body)
    SELECT incident_key, 'files_failed', ingestion_id,
           format('%s file(s) of %s failed permanently%s', count(*), name,
                  CASE WHEN run_id IS NOT NULL THEN format(' in run %s', run_id) ELSE '' END),
           jsonb_build_object(
               'run_id', run_id,
               'total', count(*),
               'files', jsonb_agg(
                   jsonb_build_object(
                       'path', file_path, 'error_type', error_type,
                       'error_message', left(error_message, 500), 'attempts', retry_count)
                   ORDER BY id) FILTER (WHERE rank <= :listed),
               'truncated', count(*) > :listed)
    FROM ranked
    GROUP BY incident_key, ingestion_id, name, run_id
    ORDER BY incident_key
    ON CONFLICT (incident_key) DO NOTHING
    """
)

_DETECT_STALE = text(
    """
    INSERT INTO alerts (incident_key, kind, ingestion_id, subject, body)
    SELECT k.incident_key, 'stale', i.id,
           format('%s has had no successful run for more than %s', i.name,
                  CASE WHEN s % 86400 = 0 THEN (s / 86400) || 'd'
                       WHEN s % 3600 = 0 THEN (s / 3600) || 'h'
                       WHEN s % 60 = 0 THEN (s / 60) || 'm'
                       ELSE s || 's' END),
           jsonb_build_object(
               'stale_after_seconds', s,
               'last_success_run_id', last.id,
               'last_success_at', last.finished_at,
               'since', coalesce(last.finished_at, i.created_at))
    FROM ingestions i
    CROSS JOIN LATERAL (SELECT i.alert_stale_after_seconds AS s) t
    LEFT JOIN LATERAL (
        SELECT r.id, r.finished_at FROM runs r
        WHERE r.ingestion_id = i.id AND r.status = 'SUCCESS'
        ORDER BY r.id DESC LIMIT 1
    ) last ON true
    CROSS JOIN LATERAL (SELECT format('stale:%s:%s', i.id, coalesce(last.id, 0)) AS incident_key) k
    WHERE i.status = 'ACTIVE' AND s IS NOT NULL
      AND coalesce(last.finished_at, i.created_at) < now() - make_interval(secs => s)
      AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.incident_key = k.incident_key)
    ORDER BY k.incident_key
    ON CONFLICT (incident_key) DO NOTHING
    """
)


_DETECT_LISTING_MISSED = text(
    """
    INSERT INTO alerts (incident_key, kind, ingestion_id, subject, body)
    SELECT k.incident_key, 'listing_missed_files', r.ingestion_id,
           format('the full listing of %s found %s file(s) its incremental listing missed (run %s)',
                  i.name, r.files_missed_by_incremental, r.id),
           jsonb_build_object(
               'run_id', r.id, 'files_missed_by_incremental', r.files_missed_by_incremental,
               'listing', i.listing, 'relist_lookback_seconds', i.relist_lookback_seconds,
               'finished_at', r.finished_at)
    FROM runs r
    JOIN ingestions i ON i.id = r.ingestion_id
    CROSS JOIN LATERAL (SELECT 'listing-missed:' || r.id AS incident_key) k
    WHERE r.files_missed_by_incremental > 0 AND r.status IN ('SUCCESS', 'PARTIAL', 'FAILED')
      AND r.finished_at >= now() - make_interval(secs => :lookback)
      AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.incident_key = k.incident_key)
    ORDER BY k.incident_key
    ON CONFLICT (incident_key) DO NOTHING
    """
)


def detect(db: Engine, *, lookback_seconds: int = DEFAULT_LOOKBACK_SECONDS) -> int:
    """Record new incidents as unsent alerts; returns how many are new.

    Idempotent and safe from any number of processes at once: an incident is one row, however
    often and by however many workers it is detected. Time comes from the database's clock.
    """
    from icefloe import cleanup, events  # their detections live beside their features

    new = 0
    for kind, statement in (
        ("run_failed", _DETECT_RUN_FAILED),
        ("files_failed", _DETECT_FILES_FAILED),
        ("stale", _DETECT_STALE),
        ("listing_missed_files", _DETECT_LISTING_MISSED),
        ("events_missed_files", events.DETECT_MISSED_BY_EVENTS),
        ("cleanup_failed", cleanup.DETECT_CLEANUP_FAILED),
    ):
        params = {"lookback": lookback_seconds, "listed": FILES_LISTED, "window": 600}
        with db.begin() as conn:
            n = conn.execute(statement, params).rowcount
        if n:
            log.info("%d new %s alert(s)", n, kind, extra={"alert_kind": kind})
        new += n
    return new


# --------------------------------------------------------------------------------------------------
# delivery

# The oldest due alert nobody is sending. The row lock is held while the alert is sent: the
# transaction is idle meanwhile, but a second sender cannot pick the alert up, and a sender that
# dies releases it with its connection.
_CLAIM = text(
    """
    SELECT a.id, a.incident_key, a.kind, a.subject, a.body, a.created_at, a.attempts, i.name AS ingestion
    FROM alerts a
    LEFT JOIN ingestions i ON i.id = a.ingestion_id
    WHERE a.sent_at IS NULL AND a.attempts < :max_attempts
      AND a.created_at + make_interval(secs => (CAST(:schedule AS double precision[]))[a.attempts + 1]) <= now()
    ORDER BY a.id
    LIMIT 1
    FOR UPDATE OF a SKIP LOCKED
    """
)

_RECORD = text(
    """
    UPDATE alerts SET attempts = attempts + 1, last_error = :error,
        sent_at = CASE WHEN CAST(:error AS text) IS NULL THEN clock_timestamp() END
    WHERE id = :id
    """
)


def deliver(
    db: Engine,
    settings: AlertSettings,
    *,
    max_attempts: int = 5,
    backoff_base_seconds: float = 60.0,
    limit: int = 20,
    channels: Sequence[Channel] | None = None,
) -> int:
    """Send due unsent alerts through every channel; returns how many were sent.

    An alert is sent when every channel took it; otherwise the attempt and the error are recorded
    and it is tried again, after :data:`icefloe.retry.ALERT_DELIVERY` (1, 3, 7 … minutes after its
    creation), up to ``max_attempts`` times, then kept
    unsent (``icefloe alerts list`` shows it). A call sends at most ``limit`` alerts and stops at
    the first that fails, so it is bounded by one failing send (the channels' timeouts) however
    many alerts are due. ``channels`` defaults to :func:`channels_for` ``settings``; with none,
    alerts stay recorded and unsent.
    """
    if channels is None:
        if not settings.channel_names:
            return 0
        channels = channels_for(settings)
    if not channels:
        return 0
    schedule = dataclasses.replace(ALERT_DELIVERY, base=backoff_base_seconds).schedule(max_attempts)
    sent = 0
    for _ in range(limit):
        with db.begin() as conn:
            row = conn.execute(_CLAIM, {"max_attempts": max_attempts, "schedule": schedule}).first()
            if row is None:
                break
            message = AlertMessage(
                incident_key=row.incident_key,
                kind=row.kind,
                subject=redact_text(row.subject),  # the ledger's text is masked already; twice is cheap
                ingestion=row.ingestion,
                body=redact_json(row.body),
                created_at=row.created_at,
            )
            errors = [e for e in (_send(channel, message) for channel in channels) if e is not None]
            error = "; ".join(errors) if errors else None
            conn.execute(_RECORD, {"id": row.id, "error": error})
        extra = {"ingestion": row.ingestion}
        if error is not None:
            log.warning("alert %s not sent (attempt %d): %s", row.incident_key, row.attempts + 1, error, extra=extra)
            # A channel that failed (timeouts: up to a minute) is likely to fail the next alert too:
            # stop here, so that a dead receiver costs the caller's loop one alert's time per call.
            break
        sent += 1
        log.info("alert %s sent", row.incident_key, extra=extra)
    return sent


# --------------------------------------------------------------------------------------------------
# listing


def list_recent(db: Engine, *, limit: int = 50, unsent_only: bool = False) -> list[dict[str, Any]]:
    """The most recent alerts, newest first (``icefloe alerts list``)."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT a.id, a.incident_key, a.kind, i.name AS ingestion, a.subject, a.created_at,
                       a.sent_at, a.attempts, a.last_error, a.body
                FROM alerts a
                LEFT JOIN ingestions i ON i.id = a.ingestion_id
                WHERE NOT :unsent_only OR a.sent_at IS NULL
                ORDER BY a.id DESC
                LIMIT :limit
                """
            ),
            {"unsent_only": unsent_only, "limit": limit},
        ).mappings()
        return [dict(row) for row in rows]
