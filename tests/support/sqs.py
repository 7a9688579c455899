"""moto in server mode on loopback (S3 and SQS, in a process of its own), and S3 notifications in
AWS's JSON shape.

Most event-driven discovery tests read the bucket's data from SeaweedFS (the S3 every other test
uses) and notifications the test publishes to moto's SQS exactly as S3 publishes them
(``s3_event``), so that it can drop, duplicate or reorder them on purpose; one test uses moto's S3 as
the source, whose own notifications reach its SQS.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from tests.support.services import free_port
from tests.support.waiting import wait_for


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server (S3 and SQS) on 127.0.0.1 and a free port, in a process of its own (in this one
    it would compete for the GIL with what it serves); yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _answers(port) or proc.poll() is not None, timeout=60, what="moto's server to answer")
        assert proc.poll() is None, f"moto's server exited with {proc.returncode}"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def sqs_client(endpoint: str) -> Any:
    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


def s3_event(
    bucket: str,
    key: str,
    etag: str,
    size: int,
    *,
    at: dt.datetime | None = None,
    sequencer: str | None = None,
    name: str = "ObjectCreated:Put",
) -> dict[str, Any]:
    """One S3 notification record (event structure 2.1; the key form-encoded, as S3 sends it)."""
    obj: dict[str, Any] = {"key": urllib.parse.quote_plus(key), "size": size, "eTag": etag.strip('"')}
    if sequencer is not None:
        obj["sequencer"] = sequencer
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": (at or dt.datetime.now(dt.UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
    }


def publish(sqs: Any, queue_url: str, records: list[dict[str, Any]]) -> None:
    """One message per record (as S3 sends them), ten per SendMessageBatch."""
    for start in range(0, len(records), 10):
        entries = [
            {"Id": str(n), "MessageBody": json.dumps({"Records": [record]})}
            for n, record in enumerate(records[start : start + 10])
        ]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not response.get("Failed"), response["Failed"]


def queue_depth(sqs: Any, queue_url: str) -> int:
    """Messages in the queue, visible or in flight."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
