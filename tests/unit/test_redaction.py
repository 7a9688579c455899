"""What may never be shown: presigned URLs, signing parameters, credentials in URIs."""

from __future__ import annotations

import logging

import pytest

from icefloe import logs
from icefloe.redaction import redact_json, redact_text, redact_uri

PRESIGNED = (
    "http://127.0.0.1:8333/landing/a.jsonl?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20261201%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261201T000000Z"
    "&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=0123abcd"
)
RELATIVE = PRESIGNED.removeprefix("http://127.0.0.1:8333")


def _clean(text: str) -> None:
    for secret in ("AKIAEXAMPLE", "0123abcd", "X-Amz-Credential=A", "X-Amz-Signature=0"):
        assert secret not in text, text


@pytest.mark.parametrize(
    "text",
    [
        f"S3 unreachable while reading s3://landing/a.jsonl: Max retries exceeded with url: {RELATIVE} (Caused by x)",
        f"Retrying (Retry(total=4)) after connection broken by 'RemoteDisconnected()': {RELATIVE}",
        f"GET {PRESIGNED} failed",
        f"quoted '{PRESIGNED}' and \"{RELATIVE}\"",
        "headers: X-Amz-Credential=AKIAEXAMPLE/x X-Amz-Signature=0123abcd",
        "http://u:AKIAEXAMPLE@host/x and sc://spark:15002/;token=0123abcd",
    ],
)
def test_signed_urls_and_credentials_are_masked(text: str) -> None:
    redacted = redact_text(text)
    _clean(redacted)
    assert "***" in redacted


def test_the_object_and_the_cause_stay_readable() -> None:
    text = f"S3 unreachable while reading s3://landing/a.jsonl: Max retries exceeded with url: {RELATIVE}"
    assert redact_text(text) == (
        "S3 unreachable while reading s3://landing/a.jsonl: Max retries exceeded with url: /landing/a.jsonl?***"
    )
    plain = "line 3: invalid JSON in s3://b/k.jsonl (column a=1, what?)"
    assert redact_text(plain) == plain


def test_uris_and_json_bodies() -> None:
    assert redact_uri("s3://AKIA:secret@bucket/p/") == "s3://***@bucket/p/"
    assert redact_uri("sc://h:15002/;user_id=etl;token=abc") == "sc://h:15002/;user_id=etl;token=***"
    body = {"files": [{"error_message": f"boom {PRESIGNED}", "attempts": 3}], "n": None}
    _clean(str(redact_json(body)))
    assert redact_json(body)["files"][0]["attempts"] == 3


def test_log_records_are_masked_by_both_formatters() -> None:
    record = logging.LogRecord("urllib3.connectionpool", logging.WARNING, __file__, 1, "Retrying %s", (RELATIVE,), None)
    _clean(json_line := logs.JsonFormatter().format(record))
    _clean(text_line := logs.TextFormatter().format(record))
    assert "/landing/a.jsonl?***" in json_line and "/landing/a.jsonl?***" in text_line


def test_an_s3_key_with_a_question_mark_stays_readable() -> None:
    text = "line 3: invalid JSON in s3://b/what?.jsonl"
    assert redact_text(text) == text
    assert redact_text("GET http://h/b/what?x=1 failed") == "GET http://h/b/what?*** failed"
