"""Alerts and durations, the pure parts: settings, retry schedule, rendering, redaction."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from icefloe import alerts
from icefloe.alerts import AlertMessage, AlertSettings
from icefloe.durations import format_duration, parse_duration
from icefloe.errors import ConfigurationError

# ----------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1w", 604800), ("1h30m", 5400), (" 2H ", 7200)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "h", "1.5h", "-1h", "30m1h", "1h1h", "2 h", "1y", "0s", "1h 30m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ConfigurationError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [1, 59, 60, 90, 3600, 5400, 7200, 86400, 90061, 604800 + 1])
def test_format_duration_reads_back(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_format_duration_is_short() -> None:
    assert [format_duration(s) for s in (7200, 5400, 86400, 45)] == ["2h", "1h30m", "1d", "45s"]


# ----------------------------------------------------------------------------- settings

SMTP = {"ICEFLOE_ALERT_SMTP_HOST": "mail.example.com", "ICEFLOE_ALERT_SMTP_TO": "a@example.com, b@example.com"}


def test_no_variables_no_channels() -> None:
    settings = AlertSettings.from_env({})
    assert settings.channel_names == []
    assert alerts.channels_for(settings) == []


def test_smtp_defaults() -> None:
    smtp = AlertSettings.from_env(SMTP).smtp
    assert smtp is not None
    assert (smtp.port, smtp.starttls, smtp.user, smtp.password) == (25, False, None, None)
    assert smtp.recipients == ("a@example.com", "b@example.com")
    assert smtp.sender.startswith("icefloe@")


def test_starttls_defaults_to_submission_port() -> None:
    smtp = AlertSettings.from_env(SMTP | {"ICEFLOE_ALERT_SMTP_STARTTLS": "true"}).smtp
    assert smtp is not None and (smtp.port, smtp.starttls) == (587, True)
    smtp = AlertSettings.from_env(SMTP | {"ICEFLOE_ALERT_SMTP_STARTTLS": "yes", "ICEFLOE_ALERT_SMTP_PORT": "2525"}).smtp
    assert smtp is not None and smtp.port == 2525


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ICEFLOE_ALERT_WEBHOOK_URL": "ftp://x/y"}, "WEBHOOK_URL"),
        ({"ICEFLOE_ALERT_WEBHOOK_URL": "hooks.example.com/x"}, "WEBHOOK_URL"),
        ({"ICEFLOE_ALERT_TIMEOUT_SECONDS": "soon"}, "TIMEOUT_SECONDS"),
        ({"ICEFLOE_ALERT_TIMEOUT_SECONDS": "0"}, "TIMEOUT_SECONDS"),
        ({"ICEFLOE_ALERT_TIMEOUT_SECONDS": "inf"}, "TIMEOUT_SECONDS"),
        ({"ICEFLOE_ALERT_TIMEOUT_SECONDS": "nan"}, "TIMEOUT_SECONDS"),
        ({"ICEFLOE_ALERT_SMTP_TO": "a@example.com"}, "SMTP_HOST is not"),
        ({"ICEFLOE_ALERT_SMTP_HOST": "mail"}, "SMTP_TO"),
        (SMTP | {"ICEFLOE_ALERT_SMTP_PORT": "smtp"}, "SMTP_PORT"),
        (SMTP | {"ICEFLOE_ALERT_SMTP_PORT": "70000"}, "SMTP_PORT"),
        (SMTP | {"ICEFLOE_ALERT_SMTP_STARTTLS": "maybe"}, "STARTTLS"),
        (SMTP | {"ICEFLOE_ALERT_SMTP_USER": "me"}, "both"),
    ],
)
def test_settings_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AlertSettings.from_env(env)


def test_password_is_taken_verbatim() -> None:
    env = SMTP | {"ICEFLOE_ALERT_SMTP_USER": " me ", "ICEFLOE_ALERT_SMTP_PASSWORD": " pass word "}
    smtp = AlertSettings.from_env(env).smtp
    assert smtp is not None and (smtp.user, smtp.password) == ("me", " pass word ")


def test_secrets_stay_out_of_reprs() -> None:
    settings = AlertSettings.from_env(
        SMTP
        | {
            "ICEFLOE_ALERT_SMTP_USER": "me",
            "ICEFLOE_ALERT_SMTP_PASSWORD": "hunter2",
            "ICEFLOE_ALERT_WEBHOOK_URL": "https://hooks.example.com/services/T0/B0/s3cr3t",
        }
    )
    assert settings.channel_names == ["webhook", "email"]
    assert settings.smtp is not None and settings.smtp.password == "hunter2"
    assert "hunter2" not in repr(settings)
    assert "s3cr3t" not in repr(settings)
    webhook = alerts.channels_for(settings)[0]
    assert isinstance(webhook, alerts.WebhookChannel)
    assert webhook.target == "https://hooks.example.com"


def test_retryable_status() -> None:
    assert [s for s in (200, 301, 400, 404, 429, 500, 503) if alerts.retryable_status(s)] == [429, 500, 503]


# ----------------------------------------------------------------------------- messages

CREATED = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _files_alert() -> AlertMessage:
    return AlertMessage(
        incident_key="files-failed:3:7",
        kind="files_failed",
        subject="2 file(s) of orders failed permanently in run 7",
        ingestion="orders",
        body={
            "run_id": 7,
            "total": 2,
            "truncated": False,
            "files": [
                {"path": "s3://b/a.csv", "error_type": "CorruptFile", "error_message": "bad row 3", "attempts": 3},
                {"path": "s3://b/b.csv", "error_type": "SchemaMismatch", "error_message": None, "attempts": 3},
            ],
        },
        created_at=CREATED,
    )


def test_payload_is_the_documented_json() -> None:
    payload = json.loads(json.dumps(_files_alert().payload()))
    assert payload == {
        "kind": "files_failed",
        "subject": "2 file(s) of orders failed permanently in run 7",
        "ingestion": "orders",
        "body": _files_alert().body,
        "created_at": "2026-01-02T03:04:05+00:00",
        "incident_key": "files-failed:3:7",
    }


def test_text_lists_the_files_one_a_line() -> None:
    text = _files_alert().text()
    assert text.startswith("2 file(s) of orders failed permanently in run 7\n")
    assert "  - s3://b/a.csv — CorruptFile: bad row 3\n" in text
    assert "  - s3://b/b.csv — SchemaMismatch\n" in text
    assert "ingestion: orders\n" in text
    assert "incident: files-failed:3:7" in text


def test_email_headers_are_one_line() -> None:
    smtp = alerts.SmtpSettings("mail", 25, "icefloe@example.com", ("ops@example.com", "dev@example.com"))
    message = AlertMessage(
        incident_key="run-failed:1",
        kind="run_failed",
        subject="run 1 of x failed: boom\r\nBcc: victim@example.com",
        ingestion="x",
        body={},
        created_at=CREATED,
    )
    email = message.email(smtp)
    assert email["Subject"] == "[icefloe] run 1 of x failed: boom Bcc: victim@example.com"
    assert email["Bcc"] is None
    assert email["To"] == "ops@example.com, dev@example.com"
    assert email["X-Icefloe-Incident"] == "run-failed:1"
    assert email["Message-ID"].endswith("@example.com>")


def test_describe_redacts_and_drops_object_reprs() -> None:
    exc = OSError("<urllib3.connection.HTTPSConnection object at 0x7f00aa>: failed for /services/s3cr3t")
    assert alerts._describe(exc, ["/services/s3cr3t"]) == "OSError: failed for ***"


def test_a_failing_channel_does_not_stop_the_others() -> None:
    class Broken:
        name = "broken"

        def send(self, message: AlertMessage) -> None:
            raise RuntimeError("bug")

    assert alerts._send(Broken(), _files_alert()) == "RuntimeError: bug"


def test_test_alert_needs_a_channel() -> None:
    with pytest.raises(ConfigurationError, match="no alert channel"):
        alerts.send_test_alert(AlertSettings())
