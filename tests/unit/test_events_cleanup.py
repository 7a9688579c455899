"""Pure parts of event-driven discovery and source clean-up: notification bodies, per-key order,
queue URLs, the --after-ingest actions and the snapshot-history rule."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from icefloe import cleanup, events
from icefloe.discovery import Filter
from icefloe.durations import parse_delay
from icefloe.errors import ConfigurationError
from icefloe.ingestions import IngestionSpec
from icefloe.s3 import S3Location
from icefloe.stores import parse_source

LOC = S3Location("b", "in/")
SRC = parse_source("s3://b/in/")


def record(key: str, etag: str = "e1", *, name: str = "ObjectCreated:Put", bucket: str = "b", **obj: object) -> dict:
    return {
        "eventName": name,
        "eventTime": "2026-12-01T10:00:00.123Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 5, "eTag": etag, **obj}},
    }


def parsed(body: object, flt: Filter | None = None) -> list[tuple[str, str, str | None]]:
    found = events.objects_of_message(json.dumps(body), LOC, flt or Filter("in/"))
    return [(o.listed.file_path, o.listed.etag, o.sequencer) for o in found]


def test_s3_sns_and_eventbridge_bodies_name_the_same_object() -> None:
    direct = {"Records": [record("in/a+b%2Bc.csv", sequencer="00AB")]}
    assert parsed(direct) == [("s3://b/in/a b+c.csv", "e1", "00AB")]
    assert parsed({"Type": "Notification", "Message": json.dumps(direct)}) == parsed(direct)
    bridge = {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "time": "2026-12-01T10:00:00Z",
        "detail": {"bucket": {"name": "b"}, "object": {"key": "in/a b+c.csv", "size": 5, "etag": "e1"}},
    }
    assert [p[:2] for p in parsed(bridge)] == [("s3://b/in/a b+c.csv", "e1")]


def test_removals_tests_other_buckets_prefixes_and_patterns_are_nothing() -> None:
    assert parsed({"Records": [record("in/a.csv", name="ObjectRemoved:Delete")]}) == []
    assert parsed({"Service": "Amazon S3", "Event": "s3:TestEvent"}) == []
    assert parsed({"Records": [record("in/a.csv", bucket="other")]}) == []
    assert parsed({"Records": [record("out/a.csv")]}) == []
    assert parsed({"Records": [record("in/a.csv")]}, Filter("in/", pattern="*.jsonl")) == []
    assert events.objects_of_message("not json", LOC, Filter("in/")) == []


def test_markers_are_recorded_skipped() -> None:
    (found,) = events.objects_of_message(json.dumps({"Records": [record("in/_SUCCESS")]}), LOC, Filter("in/"))
    assert found.listed.skip_reason is not None


def test_newest_per_key_keeps_the_highest_sequencer_then_the_latest_time() -> None:
    body = {"Records": [record("in/a", "old", sequencer="0A"), record("in/a", "new", sequencer="0A01")]}
    objs = events.objects_of_message(json.dumps(body), LOC, Filter("in/"))
    assert [o.listed.etag for o in events.newest_per_key(objs)] == ["new"]
    assert [o.listed.etag for o in events.newest_per_key(objs[::-1])] == ["new"]


def test_queue_urls_name_their_endpoint_and_region() -> None:
    assert events.queue_endpoint("https://sqs.eu-west-1.amazonaws.com/123456789012/q") == (
        "https://sqs.eu-west-1.amazonaws.com",
        "eu-west-1",
    )
    assert events.queue_endpoint("http://127.0.0.1:5000/123456789012/q") == ("http://127.0.0.1:5000", None)
    with pytest.raises(ConfigurationError, match="SQS queue URL"):
        events.queue_endpoint("arn:aws:sqs:us-east-1:123456789012:q")


def test_after_ingest_actions() -> None:
    assert cleanup.parse_action("keep", "s3://b/in/").kind == "keep"
    assert cleanup.parse_action("delete", "s3://b/in/").kind == "delete"
    tag = cleanup.parse_action("tag:state=ingested", "s3://b/in/")
    assert (tag.tag_key, tag.tag_value) == ("state", "ingested")
    move = cleanup.parse_action("move:archive", "s3://b/in/")
    assert move.destination(SRC, "in/x/y.csv") == ("b", "archive/x/y.csv")
    other = cleanup.parse_action("move:s3://cold/in/", "s3://b/in/")  # same prefix, another bucket: fine
    assert other.destination(SRC, "in/y.csv") == ("cold", "in/y.csv")
    for bad in ("move:in/sub/", "move:s3://b/", "move:", "tag:novalue", "tag:=v", "delete:now", "archive"):
        with pytest.raises(ConfigurationError):
            cleanup.parse_action(bad, "s3://b/in/")


def test_after_ingest_on_gcs_azure_and_local_sources() -> None:
    gs = parse_source("gs://b/in/")
    assert cleanup.parse_action("move:done/", "gs://b/in/").destination_uri(gs, "in/x/y.csv") == "gs://b/done/x/y.csv"
    assert cleanup.parse_action("move:gs://b/done", "gs://b/in/").destination_uri(gs, "in/y.csv") == "gs://b/done/y.csv"
    abfs = "abfss://c@acct.dfs.core.windows.net/in/"
    moved = cleanup.parse_action("move:done/", abfs).destination_uri(parse_source(abfs), "in/y.csv")
    assert moved == "abfss://c@acct.dfs.core.windows.net/done/y.csv"
    local = parse_source("file:///data/in/")
    for target in ("move:/data/done/", "move:file:///data/done/"):
        action = cleanup.parse_action(target, "file:///data/in/")
        assert action.destination_uri(local, "data/in/d/y.csv") == "file:///data/done/d/y.csv"
    assert cleanup.parse_action("delete", "az://c/in/").kind == "delete"
    refusals = {
        ("tag:k=v", "gs://b/in/"): "needs S3 object tags",
        ("tag:k=v", "file:///data/in/"): "needs S3 object tags",
        ("move:gs://other/done/", "gs://b/in/"): "is not on the store of the source",
        ("move:s3://b/done/", "az://b/in/"): "is not on the store of the source",
        ("move:az://c/done/", abfs): "is not on the store of the source",  # another account, maybe
        ("move:done/", "file:///data/in/"): "wants an absolute path",
        ("move:/data/in/old/", "file:///data/in/"): "overlaps the source",
        ("move:file:///data/", "file:///data/in/"): "overlaps the source",
        ("move:in/sub/", "az://c/in/"): "overlaps the source",
    }
    for (value, source), message in refusals.items():
        with pytest.raises(ConfigurationError, match=message):
            cleanup.parse_action(value, source)


def test_a_snapshot_is_in_the_history_or_older_than_what_retention_kept() -> None:
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    history = ({10, 11}, t0)
    assert cleanup.in_history(10, t0 + dt.timedelta(hours=1), history)
    assert cleanup.in_history(5, t0 - dt.timedelta(hours=1), history)  # expired by retention
    assert not cleanup.in_history(12, t0 + dt.timedelta(hours=1), history)  # rolled back
    assert not cleanup.in_history(None, t0 + dt.timedelta(hours=1), history)


def test_the_delay_may_be_zero() -> None:
    assert (parse_delay("0s"), parse_delay("7d")) == (0, 7 * 86400)
    with pytest.raises(ConfigurationError):
        parse_delay("7")


def test_events_discovery_is_refused_for_a_source_that_is_not_s3() -> None:
    """SQS carries S3's notifications only: a gs:// or file:// ingestion by events would never hear
    of a file. Refused at create, in one line that says what to use instead."""
    queue = "http://127.0.0.1:5000/123456789012/landing"
    for source in ("gs://b/in/", "file:///data/in/", "az://c/in/"):
        spec = IngestionSpec(
            name="ev", source=source, format="jsonl", table="a.b", discovery="events", events_queue=queue
        )
        with pytest.raises(ConfigurationError, match="must be s3://") as refused:
            spec.validate()
        assert "\n" not in str(refused.value) and "--discovery listing" in str(refused.value)
    IngestionSpec(
        name="ev", source="s3://b/in/", format="jsonl", table="a.b", discovery="events", events_queue=queue
    ).validate()
