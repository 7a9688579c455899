"""The ingestion contract on GCS (fake-gcs-server), Azure (Azurite) and a local directory: the same
tests the S3 sources pass, each run against every store."""

from __future__ import annotations

import datetime as dt

import pytest

from icefloe.discovery import Filter, listing_pages
from icefloe.errors import ConfigurationError, ObjectChangedError, PermanentFileError, SourceError
from icefloe.runtime import Runtime
from icefloe.stores import parse_source
from tests.support.emulators import Source
from tests.support.inprocess import files, ingest, run
from tests.support.tables import ids_by_file, jsonl, rows


def test_first_run_second_run_and_a_change(rt: Runtime, source: Source) -> None:
    source.put(
        {
            "in/a.jsonl": jsonl([{"id": 1}, {"id": 2}]),
            "in/day=1/b.jsonl": jsonl([{"id": 3}]),
            "in/_SUCCESS": b"",
            "other/c.jsonl": jsonl([{"id": 99}]),
        }
    )
    ingest(rt, "src", source.root)

    first = run(rt, "src")
    assert first.status == "SUCCESS", first.error_message
    assert (first.files_new, first.files_succeeded, first.files_skipped, first.records_ingested) == (2, 2, 1, 3)
    assert ids_by_file(rows(rt, "it.src")) == {source.uri("in/a.jsonl"): [1, 2], source.uri("in/day=1/b.jsonl"): [3]}

    second = run(rt, "src")  # nothing new: nothing happens
    assert (second.files_new, second.files_changed, second.snapshots_committed) == (0, 0, 0)

    source.put({"in/a.jsonl": jsonl([{"id": 4}])})  # a new version: its rows replace the old ones
    third = run(rt, "src")
    assert third.status == "SUCCESS", third.error_message
    assert (third.files_new, third.files_changed, third.files_succeeded) == (0, 1, 1)
    assert ids_by_file(rows(rt, "it.src")) == {source.uri("in/a.jsonl"): [4], source.uri("in/day=1/b.jsonl"): [3]}
    assert files(rt, "src")[source.uri("in/a.jsonl")]["version"] == 2


def test_bad_file_is_isolated_and_pattern_applies(rt: Runtime, source: Source) -> None:
    source.put(
        {
            "in/good.jsonl": jsonl([{"id": 1}]),
            "in/bad.jsonl": b'{"id": 2\n',
            "in/skip.csv": b"id\n5\n",
        }
    )
    ingest(rt, "iso", source.root, pattern="*.jsonl")
    result = run(rt, "iso")
    assert result.status == "PARTIAL"
    ledger = files(rt, "iso")
    assert set(ledger) == {source.uri("in/good.jsonl"), source.uri("in/bad.jsonl")}
    assert ledger[source.uri("in/bad.jsonl")]["status"] == "FAILED"
    assert ledger[source.uri("in/bad.jsonl")]["error_type"]
    assert ids_by_file(rows(rt, "it.iso")) == {source.uri("in/good.jsonl"): [1]}


def test_since_skips_older_objects(rt: Runtime, source: Source) -> None:
    source.put({"in/a.jsonl": jsonl([{"id": 1}])})
    ingest(rt, "since", source.root, since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    result = run(rt, "since")
    assert (result.status, result.files_discovered) == ("SUCCESS", 0)


def test_read_is_conditional_on_the_listed_version(rt: Runtime, source: Source) -> None:
    source.put({"in/a.jsonl": jsonl([{"id": 1}])})
    location = parse_source(source.root)
    store = rt.store(location)
    (page,) = [p for p in listing_pages(store, location, Filter(location.prefix)) if p.objects]
    (listed,) = page.objects
    assert store.read(listed.file_path, listed.etag) == jsonl([{"id": 1}])
    assert store.current_version(listed.file_path) == listed.etag

    body = store.open(listed.file_path, listed.etag)  # streamed, in pieces
    try:
        pieces = [body.read(5), body.read(5), body.read()]
    finally:
        body.release_conn()
    assert b"".join(pieces) == jsonl([{"id": 1}]) and len(pieces[0]) == 5

    source.put({"in/a.jsonl": jsonl([{"id": 2}, {"id": 3}])})
    with pytest.raises(ObjectChangedError):
        store.read(listed.file_path, listed.etag)
    with pytest.raises(ObjectChangedError):
        store.open(listed.file_path, listed.etag)
    assert store.current_version(listed.file_path) not in (None, listed.etag)


def test_listing_pages_in_key_order_after_a_watermark(rt: Runtime, source: Source) -> None:
    keys = ["in/a-1.jsonl", "in/a/b.jsonl", "in/a0.jsonl", "in/b.jsonl", "in/b/c/d.jsonl"]
    source.put({k: jsonl([{"id": i}]) for i, k in enumerate(keys)})
    location = parse_source(source.root + "a")  # a prefix that ends inside a name
    store = rt.store(location)
    listed = [o.file_path for p in listing_pages(store, location, Filter(location.prefix)) for o in p.objects]
    assert listed == [source.uri(k) for k in keys[:3]]
    whole = parse_source(source.root)
    after = [
        o.file_path
        for p in listing_pages(store, whole, Filter(whole.prefix), start_after=whole.prefix + "a/b.jsonl")
        for o in p.objects
    ]
    assert after == [source.uri(k) for k in keys[2:]]


def test_missing_bucket_is_one_line(rt: Runtime, source: Source) -> None:
    missing = {"gs": "gs://no-such-bucket-here/in/", "az": "az://no-such-container/in/", "file": "file:///no/such/dir/"}
    location = parse_source(missing[source.scheme])
    with pytest.raises(SourceError) as caught:
        next(listing_pages(rt.store(location), location, Filter(location.prefix)))
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300
    if source.scheme != "gs":  # fake-gcs-server answers 500 where GCS answers 404
        assert "does not exist" in message, message


def test_a_name_obstore_cannot_list_fails_the_run_in_one_line_naming_it(rt: Runtime, source: Source) -> None:
    """GCS and Azure accept an object name with an empty segment; obstore ends the listing on it
    (obstore#429). The run fails in one line that names the object and what to do; a directory has
    no such names (the path collapses to in/d/e.jsonl) and lists them all."""
    source.put({"in/a.jsonl": jsonl([{"id": 1}]), "in/d//e.jsonl": jsonl([{"id": 2}])})
    ingest(rt, "odd", source.root)
    result = run(rt, "odd")
    if source.scheme == "file":
        assert result.status == "SUCCESS" and result.files_succeeded == 2
        return
    assert result.status == "FAILED"
    message = result.error_message or ""
    assert "\n" not in message and 'Path "in/d//e.jsonl" contained empty path segment' in message, message
    assert "rename that object or use a prefix that leaves it out" in message


def test_incremental_listing_after_the_watermark(rt: Runtime, source: Source) -> None:
    if source.scheme == "az":  # List Blobs has no start-after: refused at create, in one line
        with pytest.raises(ConfigurationError, match="incremental") as refused:
            ingest(rt, "inc", source.root, listing="incremental")
        assert "\n" not in str(refused.value)
        return
    source.put({"in/dt=2025-01-01/a.jsonl": jsonl([{"id": 1}])})
    ingest(rt, "inc", source.root, listing="incremental")
    assert run(rt, "inc").files_succeeded == 1
    source.put({"in/dt=2025-01-02/b.jsonl": jsonl([{"id": 2}])})
    second = run(rt, "inc")
    assert (second.status, second.listing, second.files_new, second.files_succeeded) == ("SUCCESS", "incremental", 1, 1)
    assert sorted(rows(rt, "it.inc").column("id").to_pylist()) == [1, 2]


def test_a_large_file_is_streamed(rt: Runtime, source: Source, monkeypatch: pytest.MonkeyPatch) -> None:
    from icefloe.engines import arrow

    monkeypatch.setattr(arrow, "SMALL_FILE_BYTES", 4096)  # "large" from 4 KiB: streamed, not fetched whole
    records = [{"id": i, "text": "x" * 50} for i in range(2000)]
    source.put({"in/big.jsonl": jsonl(records), "in/small.jsonl": jsonl([{"id": -1, "text": ""}])})
    ingest(rt, "big", source.root)
    result = run(rt, "big")
    assert result.status == "SUCCESS", result.error_message
    assert result.records_ingested == 2001
    assert sorted(rows(rt, "it.big").column("id").to_pylist()) == list(range(-1, 2000))


def test_copy_and_delete(rt: Runtime, source: Source) -> None:
    """What the source clean-up (--after-ingest move/delete) needs of every store."""
    source.put({"in/a.jsonl": jsonl([{"id": 1}])})
    location = parse_source(source.root)
    store = rt.store(location)
    a, moved = location.uri(location.prefix + "a.jsonl"), location.uri(location.prefix + "done/a.jsonl")
    if source.scheme != "gs":  # fake-gcs-server has no XML-API copy (x-goog-copy-source), which obstore uses
        store.copy(a, moved)
        version = store.current_version(moved)
        assert version is not None and store.read(moved, version) == jsonl([{"id": 1}])
    listed = store.current_version(a)
    assert listed is not None
    store.delete(a)
    assert store.current_version(a) is None
    store.delete(a)  # gone already: fine
    with pytest.raises(PermanentFileError) as gone:  # deleted after it was listed
        store.read(a, listed)
    assert gone.value.error_type == "ObjectMissing"
