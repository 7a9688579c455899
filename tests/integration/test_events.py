"""Event-driven discovery against real SeaweedFS, PostgreSQL and moto's SQS on loopback: files
found by their notifications with no LIST call, notifications dropped on purpose found by the
reconciling listing and counted exactly, duplicates and out-of-order notifications harmless, and a
message left in the queue until the ledger has it."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from icefloe import alerts, events, ingestions, metrics, worker
from icefloe.discovery import Filter
from icefloe.errors import SourceError
from icefloe.runtime import Runtime
from icefloe.s3 import S3Location
from icefloe.settings import Settings
from tests.support.inprocess import files, ingest, run
from tests.support.sqs import moto_server, publish, queue_depth, s3_event, sqs_client
from tests.support.tables import jsonl, rows

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.support.services import PutObjects


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def sqs(moto: str) -> Iterator[Any]:
    client = sqs_client(moto)
    yield client
    client.close()


@pytest.fixture
def queue(sqs: Any) -> str:
    url: str = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    return url


@pytest.fixture
def list_calls(rt: Runtime) -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(dict(params))

    rt.s3.meta.events.register("provide-client-params.s3.ListObjectsV2", record)
    yield calls
    rt.s3.meta.events.unregister("provide-client-params.s3.ListObjectsV2", record)


def head(s3_client: S3Client, bucket: str, key: str) -> tuple[str, int]:
    meta = s3_client.head_object(Bucket=bucket, Key=key)
    return meta["ETag"], meta["ContentLength"]


def counter(name: str, ingestion: str) -> float:
    return metrics.REGISTRY.get_sample_value(f"{name}_total", {"ingestion": ingestion}) or 0.0


@pytest.mark.slow
def test_thousand_files_by_events_then_the_reconciling_listing_finds_the_dropped_ones_exactly(
    rt: Runtime,
    bucket: str,
    put_objects: PutObjects,
    s3_client: S3Client,
    sqs: Any,
    queue: str,
    list_calls: list[dict[str, Any]],
) -> None:
    ingest(rt, "ev", f"s3://{bucket}/in/", discovery="events", events_queue=queue)
    first = run(rt, "ev")  # the first run lists once: a backfill of what was there (nothing), not "missed"
    assert (first.status, first.discovery, first.listing, first.list_requests) == ("SUCCESS", "events", "full", 1)
    assert first.files_missed_by_events == 0

    keys = [f"in/{n // 100:02d}/{n:04d}.jsonl" for n in range(1000)]
    put_objects(bucket, {key: jsonl([{"id": n}]) for n, key in enumerate(keys)})
    dropped = set(random.Random(14).sample(keys, 5))
    with ThreadPoolExecutor(max_workers=16) as pool:
        records = list(pool.map(lambda key: s3_event(bucket, key, *head(s3_client, bucket, key)), keys))
    records = [r for r, key in zip(records, keys, strict=True) if key not in dropped]
    publish(sqs, queue, records + records[:25])  # 25 delivered twice, as SQS may

    list_calls.clear()
    second = run(rt, "ev")
    assert (second.status, second.discovery, second.listing) == ("SUCCESS", "events", None)
    assert (second.event_messages, second.files_new, second.files_succeeded) == (1020, 995, 995)
    assert second.list_requests == len(list_calls) == 0  # steady state: no LIST at all
    assert second.files_missed_by_events == 0
    assert queue_depth(sqs, queue) == 0  # every message deleted once recorded
    assert not dropped & set(files(rt, "ev"))

    missed_before = counter("icefloe_files_missed_by_events", "ev")
    third = worker.run_ingestion(rt, ingestions.get(rt.db, "ev"), trigger="test", full_listing=True)
    assert (third.status, third.listing, third.list_requests, third.files_new) == ("SUCCESS", "full", 1, 5)
    assert (third.files_missed_by_events, third.files_succeeded) == (5, 5)
    assert counter("icefloe_files_missed_by_events", "ev") == missed_before + 5

    ids = rows(rt, "it.ev").column("id").to_pylist()
    assert sorted(ids) == list(range(1000))  # every file once
    ledger = files(rt, "ev")
    assert len(ledger) == 1000 and {r["status"] for r in ledger.values()} == {"SUCCESS"}

    assert alerts.detect(rt.db) >= 1
    (alert,) = [a for a in alerts.list_recent(rt.db) if a["kind"] == "events_missed_files"]
    assert "found 5 file(s) its event notifications missed" in alert["subject"]

    # A fourth run: nothing new from the queue, no listing due, nothing ingested twice.
    fourth = run(rt, "ev")
    assert (fourth.files_new, fourth.files_succeeded, fourth.list_requests, fourth.event_messages) == (0, 0, 0, 0)


def test_out_of_order_and_redelivered_notifications_never_replace_the_newer_version(
    rt: Runtime, bucket: str, put_objects: PutObjects, s3_client: S3Client, sqs: Any, queue: str
) -> None:
    ingest(rt, "order", f"s3://{bucket}/in/", discovery="events", events_queue=queue)
    run(rt, "order")  # backfill of an empty prefix
    now = dt.datetime.now(dt.UTC)

    put_objects(bucket, {"in/seq.jsonl": jsonl([{"id": 1}])})
    old_seq = s3_event(bucket, "in/seq.jsonl", *head(s3_client, bucket, "in/seq.jsonl"), sequencer="0055AED6DCD90281E5")
    put_objects(bucket, {"in/seq.jsonl": jsonl([{"id": 2}])})
    new_seq = s3_event(bucket, "in/seq.jsonl", *head(s3_client, bucket, "in/seq.jsonl"), sequencer="0055AED6DCD90281F0")
    # No sequencer (as moto sends them): the event time orders them.
    put_objects(bucket, {"in/time.jsonl": jsonl([{"id": 3}])})
    old_time = s3_event(bucket, "in/time.jsonl", *head(s3_client, bucket, "in/time.jsonl"), at=now)
    put_objects(bucket, {"in/time.jsonl": jsonl([{"id": 4}])})
    new_time = s3_event(
        bucket, "in/time.jsonl", *head(s3_client, bucket, "in/time.jsonl"), at=now + dt.timedelta(seconds=2)
    )

    publish(sqs, queue, [new_seq, new_time])
    publish(sqs, queue, [old_seq, old_time])  # later pages: arrive after the newer versions
    first = run(rt, "order")
    assert (first.status, first.files_new, first.files_succeeded, first.files_failed) == ("SUCCESS", 2, 2, 0)
    assert sorted(rows(rt, "it.order").column("id").to_pylist()) == [2, 4]

    publish(sqs, queue, [old_seq, new_seq, old_time, new_time])  # redelivered, in any order
    again = run(rt, "order")
    assert (again.event_messages, again.files_new, again.files_changed, again.files_succeeded) == (4, 0, 0, 0)
    assert sorted(rows(rt, "it.order").column("id").to_pylist()) == [2, 4]


def test_notifications_outside_the_ingestion_are_read_and_ignored(
    rt: Runtime, bucket: str, put_objects: PutObjects, s3_client: S3Client, sqs: Any, queue: str
) -> None:
    ingest(rt, "sel", f"s3://{bucket}/in/", discovery="events", events_queue=queue, pattern="**/*.jsonl")
    run(rt, "sel")
    put_objects(bucket, {"in/a b.jsonl": jsonl([{"id": 1}]), "in/x.csv": b"id\n2\n", "other/c.jsonl": b"{}\n"})
    records = [s3_event(bucket, k, *head(s3_client, bucket, k)) for k in ("in/a b.jsonl", "in/x.csv", "other/c.jsonl")]
    records.append(s3_event(bucket, "in/a b.jsonl", '"gone"', 0, name="ObjectRemoved:Delete"))
    publish(sqs, queue, records)
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
    sqs.send_message(QueueUrl=queue, MessageBody="not json at all")
    result = run(rt, "sel")
    assert (result.event_messages, result.files_new, result.files_succeeded) == (6, 1, 1)
    assert list(files(rt, "sel")) == [f"s3://{bucket}/in/a b.jsonl"]  # the key decoded as S3 encodes it
    assert queue_depth(sqs, queue) == 0


def test_a_message_stays_in_the_queue_until_the_ledger_has_it(rt: Runtime, bucket: str, sqs: Any, queue: str) -> None:
    publish(sqs, queue, [s3_event(bucket, f"in/{n}.jsonl", "e", 1) for n in range(3)])
    assert events.check_queue(rt.settings.s3, queue) == 3
    location = S3Location.parse(f"s3://{bucket}/in/")
    with pytest.raises(Exception, match="ingestion_id"):  # no such ingestion: the upsert fails
        events.drain(
            rt.db, sqs, queue_url=queue, ingestion_id=-1, location=location, flt=Filter("in/"), visibility_seconds=0
        )
    assert queue_depth(sqs, queue) == 3


def test_a_missing_queue_is_one_line_naming_it(rt: Runtime, bucket: str, moto: str) -> None:
    missing = f"{moto}/123456789012/no-such-queue"
    ingest(rt, "noq", f"s3://{bucket}/in/", discovery="events", events_queue=missing)
    result = run(rt, "noq")
    assert result.status == "FAILED"
    assert result.error_message is not None and missing in result.error_message
    assert "\n" not in result.error_message
    with pytest.raises(SourceError, match="no-such-queue"):  # `icefloe ingestion check`
        events.check_queue(rt.settings.s3, missing)
    with pytest.raises(SourceError):
        client = events.make_sqs_client(rt.settings.s3, missing)
        try:
            events.drain(
                rt.db, client, queue_url=missing, ingestion_id=1, location=S3Location(bucket, ""), flt=Filter("")
            )
        finally:
            client.close()


def test_moto_s3_notification_is_understood(moto: str, sqs: Any, queue: str) -> None:
    """The message a real producer (moto's S3) sends for a created object parses to that object."""
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3 = boto3.client(
        "s3", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    try:
        name = f"moto-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=name)
        s3.put_bucket_notification_configuration(
            Bucket=name,
            NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
        )
        etag = s3.put_object(Bucket=name, Key="in/a b+c.jsonl", Body=b'{"id": 1}\n')["ETag"].strip('"')
        bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]]
    finally:
        s3.close()
    location = S3Location(name, "in/")
    found = [o for body in bodies for o in events.objects_of_message(body, location, Filter("in/"))]
    assert [(o.listed.file_path, o.listed.etag, o.listed.size) for o in found] == [
        (f"s3://{name}/in/a b+c.jsonl", etag, 10)
    ]


@pytest.fixture
def moto_rt(icefloe_env: dict[str, str], moto: str) -> Iterator[Runtime]:
    """A runtime whose sources are moto's S3 (the ledger and the warehouse stay the test's own)."""
    env = icefloe_env | {"AWS_ENDPOINT_URL": moto, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    runtime = Runtime.open(Settings.from_env(env))
    try:
        yield runtime
    finally:
        runtime.close()


def notify(s3: Any, sqs: Any, bucket: str, queue: str) -> None:
    """Configure ``bucket`` to send its object-created notifications to ``queue`` (as on AWS)."""
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )


def put_many(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket=bucket, Key=item[0], Body=item[1]), objects.items()))


def test_real_notifications_and_the_files_they_missed_found_exactly(moto_rt: Runtime, sqs: Any, queue: str) -> None:
    """moto's S3 (listing, conditional reads) delivers its own notifications to its SQS; 5 of 100
    files land before the bucket's notification is configured (a common way events go missing): the
    events ingest 95 with no LIST call, the reconciling listing finds the 5, counts them exactly, and
    every file is in the table once."""
    rt, s3 = moto_rt, moto_rt.s3
    bucket = f"moto-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    ingest(rt, "ev", f"s3://{bucket}/in/", discovery="events", events_queue=queue)
    first = run(rt, "ev")  # the first run lists once: a backfill of what was there (nothing), not "missed"
    assert (first.status, first.discovery, first.listing, first.list_requests) == ("SUCCESS", "events", "full", 1)

    keys = [f"in/{n // 10:02d}/{n:04d}.jsonl" for n in range(100)]
    early = set(random.Random(14).sample(keys, 5))
    put_many(s3, bucket, {k: jsonl([{"id": n}]) for n, k in enumerate(keys) if k in early})
    notify(s3, sqs, bucket, queue)
    put_many(s3, bucket, {k: jsonl([{"id": n}]) for n, k in enumerate(keys) if k not in early})

    missed_before = counter("icefloe_files_missed_by_events", "ev")
    second = run(rt, "ev")
    assert (second.status, second.discovery, second.listing) == ("SUCCESS", "events", None)
    # 95 notifications and the s3:TestEvent S3 sends when a notification is configured
    assert (second.event_messages, second.files_new, second.files_succeeded) == (96, 95, 95)
    assert second.list_requests == 0  # steady state: no LIST at all
    assert queue_depth(sqs, queue) == 0  # every message deleted once recorded
    assert not early & {p.removeprefix(f"s3://{bucket}/") for p in files(rt, "ev")}

    third = worker.run_ingestion(rt, ingestions.get(rt.db, "ev"), trigger="test", full_listing=True)
    assert (third.status, third.listing, third.list_requests, third.files_new) == ("SUCCESS", "full", 1, 5)
    assert (third.files_missed_by_events, third.files_succeeded) == (5, 5)
    assert counter("icefloe_files_missed_by_events", "ev") == missed_before + 5

    assert sorted(rows(rt, "it.ev").column("id").to_pylist()) == list(range(100))  # every file once
    ledger = files(rt, "ev")
    assert len(ledger) == 100 and {r["status"] for r in ledger.values()} == {"SUCCESS"}
    assert alerts.detect(rt.db) >= 1
    (alert,) = [a for a in alerts.list_recent(rt.db) if a["kind"] == "events_missed_files"]
    assert "found 5 file(s) its event notifications missed" in alert["subject"]

    fourth = run(rt, "ev")  # nothing new, no listing due, nothing twice
    assert (fourth.files_new, fourth.files_succeeded, fourth.list_requests, fourth.event_messages) == (0, 0, 0, 0)
