"""Alerts end to end: incidents in a real ledger, delivered to a real SMTP server and a real HTTP receiver.

Both receivers listen on 127.0.0.1 (aiosmtpd's ``Controller``, ``http.server`` in a thread). Incidents
are made by writing runs and files rows directly, except in the last test, which runs an ingestion.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from it_support import ingest, jsonl, run

from icefloe import alerts
from icefloe.alerts import AlertSettings, SmtpSettings
from icefloe.retry import Backoff
from icefloe.runtime import Runtime

if TYPE_CHECKING:
    from tests.conftest import PutObjects

SECRET_PATH = "/hooks/T000/B000/s3cr3t-token"


# ----------------------------------------------------------------------------- receivers


class Webhook:
    """An HTTP receiver on loopback: records every POST, answers ``statuses`` in turn, then 200."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.requests.append(
                        {"path": self.path, "content_type": self.headers["Content-Type"], "json": json.loads(body)}
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"

    @property
    def payloads(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["json"] for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass
class Mailbox:
    """An aiosmtpd handler keeping every message; answers 451 to the first ``reject`` messages."""

    messages: list[EmailMessage] = field(default_factory=list)
    authenticated: list[bool] = field(default_factory=list)
    reject: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.reject:
            self.reject -= 1
            return "451 4.3.0 try again later"
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.authenticated.append(bool(session.authenticated))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpServer:
    mailbox: Mailbox
    controller: Controller
    settings: SmtpSettings


def _start_smtp(**smtp_options: Any) -> SmtpServer:
    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **smtp_options)
    controller.start()
    settings = SmtpSettings("127.0.0.1", port, "icefloe@example.com", ("ops@example.com", "dev@example.com"))
    return SmtpServer(mailbox, controller, settings)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = _start_smtp()
    yield server
    server.controller.stop()


@pytest.fixture
def db(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def fast_webhook_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts.WebhookChannel, "backoff", Backoff(base=0.01, cap=0.02))


# ----------------------------------------------------------------------------- ledger rows


def add_ingestion(
    db: sa.Engine,
    name: str,
    *,
    max_retries: int = 3,
    stale_after: int | None = None,
    status: str = "ACTIVE",
    age_seconds: int = 0,
) -> int:
    with db.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    """
                    INSERT INTO ingestions (name, source, format, table_identifier, max_retries,
                                            alert_stale_after_seconds, status, created_at)
                    VALUES (CAST(:name AS text), 's3://bucket/' || :name || '/', 'jsonl', 'it.' || :name, :max_retries,
                            :stale_after, :status, now() - make_interval(secs => :age))
                    RETURNING id
                    """
                ),
                {
                    "name": name,
                    "max_retries": max_retries,
                    "stale_after": stale_after,
                    "status": status,
                    "age": age_seconds,
                },
            ).scalar_one()
        )


def add_run(db: sa.Engine, ingestion_id: int, status: str, *, error: str | None = None, finished_ago: int = 0) -> int:
    finished = status not in ("PENDING", "RUNNING")
    with db.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    """
                    INSERT INTO runs (ingestion_id, status, error_message, started_at, finished_at)
                    VALUES (:i, :status, :error, now() - make_interval(secs => :ago + 5),
                            CASE WHEN :finished THEN now() - make_interval(secs => :ago) END)
                    RETURNING id
                    """
                ),
                {"i": ingestion_id, "status": status, "error": error, "ago": finished_ago, "finished": finished},
            ).scalar_one()
        )


def add_files(
    db: sa.Engine, ingestion_id: int, run_id: int | None, count: int, *, status: str, retry_count: int, prefix: str
) -> None:
    with db.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO files (ingestion_id, run_id, file_path, size, etag, status, retry_count,
                                   error_type, error_message, processed_at)
                SELECT :i, :run, format('s3://bucket/%s/%s.jsonl', CAST(:prefix AS text), lpad(n::text, 4, '0')),
                       10, 'e', CAST(:status AS text), :retries, CASE WHEN :status = 'FAILED' THEN 'CorruptFile' END,
                       CASE WHEN :status = 'FAILED' THEN 'bad line ' || n END, now()
                FROM generate_series(1, :count) AS n
                """
            ),
            {
                "i": ingestion_id,
                "run": run_id,
                "prefix": prefix,
                "status": status,
                "retries": retry_count,
                "count": count,
            },
        )


def alert_rows(db: sa.Engine) -> list[sa.Row[Any]]:
    with db.connect() as conn:
        return list(conn.execute(sa.text("SELECT * FROM alerts ORDER BY id")))


# ----------------------------------------------------------------------------- tests


def test_failed_run_alerts_once_from_concurrent_workers(db: sa.Engine, webhook: Webhook, smtp: SmtpServer) -> None:
    ingestion = add_ingestion(db, "orders")
    run_id = add_run(db, ingestion, "FAILED", error="catalog unreachable: connection refused")
    settings = AlertSettings(webhook_url=webhook.url, smtp=smtp.settings)
    webhook.delay = 0.3  # the other worker polls while this one is sending
    start = threading.Barrier(2)

    def worker() -> tuple[int, int]:
        start.wait()
        new = sent = 0
        for _ in range(8):
            new += alerts.detect(db)
            sent += alerts.deliver(db, settings)
        return new, sent

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(worker), pool.submit(worker)]]

    assert sum(new for new, _ in results) == 1
    assert sum(sent for _, sent in results) == 1
    assert len(webhook.requests) == 1 and len(smtp.mailbox.messages) == 1
    request = webhook.requests[0]
    assert request["path"] == SECRET_PATH and request["content_type"] == "application/json"
    payload = request["json"]
    assert payload["kind"] == "run_failed"
    assert payload["incident_key"] == f"run-failed:{run_id}"
    assert payload["ingestion"] == "orders"
    assert payload["subject"] == f"run {run_id} of orders failed: catalog unreachable: connection refused"
    assert payload["body"]["run_id"] == run_id
    assert payload["body"]["error_message"] == "catalog unreachable: connection refused"
    assert payload["created_at"]
    mail = smtp.mailbox.messages[0]
    assert mail["Subject"].strip() == f"[icefloe] {payload['subject']}"  # folded: long
    assert mail["To"] == "ops@example.com, dev@example.com"
    assert "catalog unreachable" in mail.get_content()
    [row] = alert_rows(db)
    assert (row.kind, row.attempts, row.last_error) == ("run_failed", 1, None)
    assert row.sent_at is not None


def test_many_failed_files_make_one_alert_per_finished_run(db: sa.Engine, webhook: Webhook) -> None:
    ingestion = add_ingestion(db, "events", max_retries=3)
    done = add_run(db, ingestion, "PARTIAL")
    add_files(db, ingestion, done, 57, status="FAILED", retry_count=3, prefix="dead")
    add_files(db, ingestion, done, 5, status="FAILED", retry_count=1, prefix="retrying")  # retries left
    add_files(db, ingestion, done, 10, status="SUCCESS", retry_count=0, prefix="ok")
    running = add_run(db, ingestion, "RUNNING")
    add_files(db, ingestion, running, 4, status="FAILED", retry_count=3, prefix="later")

    assert alerts.detect(db) == 1
    assert alerts.detect(db) == 0
    [row] = alert_rows(db)
    assert (row.incident_key, row.kind) == (f"files-failed:{ingestion}:{done}", "files_failed")
    assert row.subject == f"57 file(s) of events failed permanently in run {done}"
    assert row.body["total"] == 57 and row.body["truncated"] is True
    assert [f["path"] for f in row.body["files"]] == [f"s3://bucket/dead/{n:04d}.jsonl" for n in range(1, 21)]
    assert row.body["files"][0] == {
        "path": "s3://bucket/dead/0001.jsonl",
        "error_type": "CorruptFile",
        "error_message": "bad line 1",
        "attempts": 3,
    }

    # the running run's failures are alerted once it has finished, all of them in one alert
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET status = 'PARTIAL', finished_at = now() WHERE id = :id"), {"id": running})
    assert alerts.detect(db) == 1
    assert alert_rows(db)[-1].body["total"] == 4

    assert alerts.deliver(db, AlertSettings(webhook_url=webhook.url)) == 2
    assert [p["incident_key"] for p in webhook.payloads] == [
        f"files-failed:{ingestion}:{done}",
        f"files-failed:{ingestion}:{running}",
    ]
    assert alerts.detect(db) == 0 and alerts.deliver(db, AlertSettings(webhook_url=webhook.url)) == 0


def test_files_failed_outside_a_run_are_grouped_per_closed_ten_minutes(db: sa.Engine) -> None:
    ingestion = add_ingestion(db, "orphans", max_retries=0)
    add_files(db, ingestion, None, 3, status="FAILED", retry_count=0, prefix="old")
    add_files(db, ingestion, None, 2, status="FAILED", retry_count=0, prefix="now")
    with db.begin() as conn:  # the run rows are gone (ON DELETE SET NULL); "old" failed 20 minutes ago
        conn.execute(
            sa.text("UPDATE files SET processed_at = now() - interval '20 minutes' WHERE file_path LIKE '%/old/%'")
        )

    assert alerts.detect(db) == 1  # the current window is still open
    [row] = alert_rows(db)
    assert row.incident_key.startswith(f"files-failed:{ingestion}:0:")
    assert row.subject == "3 file(s) of orphans failed permanently"
    assert row.body["run_id"] is None and row.body["total"] == 3
    assert alerts.detect(db) == 0


def test_stale_ingestion_alerts_once_and_rearms_after_a_success(db: sa.Engine, webhook: Webhook) -> None:
    stale = add_ingestion(db, "stale", stale_after=3600, age_seconds=7200)
    add_ingestion(db, "paused", stale_after=3600, age_seconds=7200, status="PAUSED")
    add_ingestion(db, "unwatched", age_seconds=10 * 86400)
    fresh = add_ingestion(db, "fresh", stale_after=3600, age_seconds=7200)
    add_run(db, fresh, "SUCCESS", finished_ago=60)
    young = add_ingestion(db, "young", stale_after=3600)  # never ran, but created just now
    assert young

    assert alerts.detect(db) == 1
    for _ in range(3):
        assert alerts.detect(db) == 0
    [first] = alert_rows(db)
    assert (first.incident_key, first.kind, first.ingestion_id) == (f"stale:{stale}:0", "stale", stale)
    assert first.subject == "stale has had no successful run for more than 1h"
    assert first.body["last_success_run_id"] is None

    succeeded = add_run(db, stale, "SUCCESS")  # re-arms: fresh now, nothing to say
    assert alerts.detect(db) == 0
    with db.begin() as conn:  # ... and two hours later it is stale again: a new incident
        conn.execute(
            sa.text("UPDATE runs SET finished_at = now() - interval '2 hours' WHERE id = :id"), {"id": succeeded}
        )
    assert alerts.detect(db) == 1
    assert alerts.detect(db) == 0
    second = alert_rows(db)[-1]
    assert second.incident_key == f"stale:{stale}:{succeeded}"
    assert second.body["last_success_run_id"] == succeeded

    assert alerts.deliver(db, AlertSettings(webhook_url=webhook.url)) == 2
    assert [p["kind"] for p in webhook.payloads] == ["stale", "stale"]


def test_webhook_answering_500_twice_then_200_gets_the_alert(
    db: sa.Engine, webhook: Webhook, fast_webhook_retries: None
) -> None:
    add_run(db, add_ingestion(db, "flaky"), "FAILED", error="boom")
    alerts.detect(db)
    webhook.statuses = [500, 503]

    assert alerts.deliver(db, AlertSettings(webhook_url=webhook.url)) == 1

    assert len(webhook.requests) == 3
    assert len({json.dumps(p, sort_keys=True) for p in webhook.payloads}) == 1  # the same alert, three times
    [row] = alert_rows(db)
    assert row.sent_at is not None and row.attempts == 1


def test_delivery_is_retried_across_calls_with_backoff_then_given_up(
    db: sa.Engine, webhook: Webhook, fast_webhook_retries: None
) -> None:
    add_run(db, add_ingestion(db, "down"), "FAILED", error="boom")
    alerts.detect(db)
    settings = AlertSettings(webhook_url=webhook.url)
    webhook.statuses = [500] * 6  # two deliver() calls' worth of in-place retries

    assert alerts.deliver(db, settings, backoff_base_seconds=1.5, max_attempts=3) == 0
    [row] = alert_rows(db)
    assert (row.attempts, row.sent_at) == (1, None)
    assert row.last_error == f"webhook http://127.0.0.1:{webhook.server.server_address[1]} answered HTTP 500"
    assert len(webhook.requests) == 3

    assert alerts.deliver(db, settings, backoff_base_seconds=1.5, max_attempts=3) == 0  # not due yet
    assert len(webhook.requests) == 3
    _wait_until_due(db, 1.5)
    assert alerts.deliver(db, settings, backoff_base_seconds=1.5, max_attempts=3) == 0
    assert alert_rows(db)[0].attempts == 2 and len(webhook.requests) == 6
    _wait_until_due(db, 1.5 + 3.0)
    assert alerts.deliver(db, settings, backoff_base_seconds=1.5, max_attempts=3) == 1  # the receiver is back
    [row] = alert_rows(db)
    assert (row.attempts, row.last_error) == (3, None) and row.sent_at is not None

    # an alert that fails max_attempts times stays unsent, listed, and is not tried again
    add_run(db, add_ingestion(db, "gone"), "FAILED", error="boom")
    alerts.detect(db)
    webhook.statuses = [404]
    assert alerts.deliver(db, settings, max_attempts=1) == 0
    assert alerts.deliver(db, settings, max_attempts=1, backoff_base_seconds=0) == 0
    assert len(webhook.requests) == 8  # one more: 404 is not retried in place either
    [unsent] = alerts.list_recent(db, unsent_only=True)
    assert unsent["ingestion"] == "gone" and unsent["attempts"] == 1 and "HTTP 404" in unsent["last_error"]


def test_a_dead_receiver_costs_one_alert_per_call(db: sa.Engine, webhook: Webhook) -> None:
    for name in ("a", "b", "c"):
        add_run(db, add_ingestion(db, name), "FAILED", error="boom")
    assert alerts.detect(db) == 3
    settings = AlertSettings(webhook_url=webhook.url)
    webhook.statuses = [400]

    assert alerts.deliver(db, settings) == 0
    assert len(webhook.requests) == 1  # the call stopped at the first failure
    assert [r.attempts for r in alert_rows(db)] == [1, 0, 0]

    assert alerts.deliver(db, settings) == 2  # the first waits for its backoff; the others go
    assert [r.sent_at is not None for r in alert_rows(db)] == [False, True, True]


def _wait_until_due(db: sa.Engine, seconds_after_creation: float) -> None:
    with db.connect() as conn:
        age = conn.execute(sa.text("SELECT extract(epoch FROM now() - max(created_at)) FROM alerts")).scalar_one()
    time.sleep(max(0.0, seconds_after_creation - float(age)) + 0.1)


def test_one_failing_channel_retries_the_alert_on_every_channel(
    db: sa.Engine, webhook: Webhook, smtp: SmtpServer
) -> None:
    add_run(db, add_ingestion(db, "mixed"), "FAILED", error="boom")
    alerts.detect(db)
    settings = AlertSettings(webhook_url=webhook.url, smtp=smtp.settings)
    smtp.mailbox.reject = 1

    assert alerts.deliver(db, settings, backoff_base_seconds=0.5) == 0
    [row] = alert_rows(db)
    assert row.last_error.startswith(f"email via 127.0.0.1:{smtp.settings.port}: SMTPDataError")
    assert SECRET_PATH not in row.last_error
    _wait_until_due(db, 0.5)
    assert alerts.deliver(db, settings, backoff_base_seconds=0.5) == 1
    # at least once: the webhook took the first attempt too
    assert len(webhook.requests) == 2 and len(smtp.mailbox.messages) == 1


def test_email_with_starttls_and_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this server's certificate

    def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"icefloe", b"hunter2")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    server = _start_smtp(tls_context=tls, require_starttls=True, auth_required=True, authenticator=authenticator)
    try:
        base = server.settings
        good = SmtpSettings(base.host, base.port, base.sender, base.recipients, True, "icefloe", "hunter2")
        assert alerts.send_test_alert(AlertSettings(smtp=good)) == {"email": None}
        assert server.mailbox.authenticated == [True]
        assert server.mailbox.messages[0]["Subject"] == "[icefloe] icefloe test alert"

        wrong = SmtpSettings(base.host, base.port, base.sender, base.recipients, True, "icefloe", "wrong-pw")
        error = alerts.send_test_alert(AlertSettings(smtp=wrong))["email"]
        assert error is not None and "SMTPAuthenticationError" in error and "wrong-pw" not in error

        plain = SmtpSettings(base.host, base.port, base.sender, base.recipients, False, None, None)
        error = alerts.send_test_alert(AlertSettings(smtp=plain))["email"]
        assert error is not None and "STARTTLS" in error.upper()
        assert len(server.mailbox.messages) == 1
    finally:
        server.controller.stop()


# ----------------------------------------------------------------------------- CLI


def _cli_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEFLOE_", "AWS_", "PYICEBERG_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env.update(variables)
    return env


def _icefloe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["icefloe", *args], env=env, capture_output=True, text=True, timeout=120)


def test_cli_alerts_test_reports_each_channel(webhook: Webhook, smtp: SmtpServer) -> None:
    env = _cli_env(
        ICEFLOE_ALERT_WEBHOOK_URL=webhook.url,
        ICEFLOE_ALERT_SMTP_HOST="127.0.0.1",
        ICEFLOE_ALERT_SMTP_PORT=str(smtp.settings.port),
        ICEFLOE_ALERT_SMTP_FROM="icefloe@example.com",
        ICEFLOE_ALERT_SMTP_TO="ops@example.com",
    )
    ok = _icefloe(env, "alerts", "test")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "webhook: ok; email: ok"
    assert [p["kind"] for p in webhook.payloads] == ["test"]
    assert len(smtp.mailbox.messages) == 1 and smtp.mailbox.messages[0]["To"] == "ops@example.com"

    webhook.statuses = [404]
    failed = _icefloe(env, "alerts", "test")
    assert failed.returncode == 1
    port = webhook.server.server_address[1]
    assert failed.stdout.strip() == f"webhook: error: webhook http://127.0.0.1:{port} answered HTTP 404; email: ok"
    assert "s3cr3t" not in failed.stdout + failed.stderr

    unconfigured = _icefloe(_cli_env(), "alerts", "test")
    assert unconfigured.returncode == 2 and "no alert channel configured" in unconfigured.stderr


def test_cli_stale_threshold_and_alert_list(db: sa.Engine, database_url: str, tmp_path: Path) -> None:
    env = _cli_env(ICEFLOE_DATABASE_URL=database_url, ICEFLOE_HOME=str(tmp_path / "home"))
    created = _icefloe(
        env,
        "ingestion",
        "create",
        "watched",
        "--source",
        "s3://bucket/in/",
        "--format",
        "jsonl",
        "--table",
        "it.watched",
        "--alert-stale-after",
        "2h",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["alert_stale_after_seconds"] == 7200
    bad = _icefloe(
        env,
        "ingestion",
        "create",
        "bad",
        "--source",
        "s3://bucket/in/",
        "--format",
        "jsonl",
        "--table",
        "it.bad",
        "--alert-stale-after",
        "2 hours",
    )
    assert bad.returncode == 2 and "duration" in bad.stderr

    with db.connect() as conn:
        ingestion = conn.execute(sa.text("SELECT id FROM ingestions WHERE name = 'watched'")).scalar_one()
    run_id = add_run(db, ingestion, "FAILED", error="boom")
    alerts.detect(db)
    listed = _icefloe(env, "alerts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["kind"], row["ingestion"], row["incident_key"]) == ("run_failed", "watched", f"run-failed:{run_id}")
    assert row["sent_at"] is None and row["attempts"] == 0


# ----------------------------------------------------------------------------- a real run


def test_files_failing_in_a_real_run_make_one_alert(
    rt: Runtime, bucket: str, put_objects: PutObjects, webhook: Webhook
) -> None:
    put_objects(bucket, {f"in/bad-{n}.jsonl": b'{"id": 1\n' for n in range(30)} | {"in/ok.jsonl": jsonl([{"id": 1}])})
    ingest(rt, "real", f"s3://{bucket}/in/", max_retries=0)
    result = run(rt, "real")
    assert (result.status, result.files_failed, result.files_succeeded) == ("PARTIAL", 30, 1), result.error_message

    assert alerts.detect(rt.db) == 1
    assert alerts.deliver(rt.db, AlertSettings(webhook_url=webhook.url)) == 1
    [payload] = webhook.payloads
    assert payload["incident_key"].startswith("files-failed:") and payload["incident_key"].endswith(f":{result.id}")
    assert payload["body"]["total"] == 30 and len(payload["body"]["files"]) == 20
    assert {f["path"].rsplit("/", 1)[1] for f in payload["body"]["files"]} <= {f"bad-{n}.jsonl" for n in range(30)}
    assert alerts.detect(rt.db) == 0
