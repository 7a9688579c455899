"""Source clean-up (--after-ingest delete|move) on a local directory and the emulators, through each
store's own client: the files gone or moved, the ledger rows DONE, nothing ingested again, a file
changed since its ingestion left in place as a FAILED clean-up. (S3: tests/integration/test_cleanup.py.)"""

from __future__ import annotations

import pytest

from icefloe import cleanup, ingestions
from icefloe.errors import ConfigurationError
from icefloe.runtime import Runtime
from icefloe.stores import parse_source
from tests.support.emulators import Source
from tests.support.inprocess import files, ingest, run
from tests.support.tables import jsonl, rows

N = 3


def listed(rt: Runtime, uri: str) -> list[str]:
    """The URIs below ``uri``, as the store lists them."""
    location = parse_source(uri)
    return sorted(location.uri(e.key) for page in rt.store(location).list_pages(location) for e in page)


def clean(rt: Runtime, name: str, *, dry_run: bool = False) -> cleanup.CleanupReport:
    ingestion = ingestions.get(rt.db, name)
    return cleanup.clean(rt.db, rt.catalog, rt.s3, ingestion, stores=rt.store, dry_run=dry_run)


def seed_and_run(rt: Runtime, source: Source, name: str, after_ingest: str) -> list[str]:
    source.put({f"in/d/{i}.jsonl": jsonl([{"id": i}]) for i in range(N)})
    ingest(rt, name, source.root, after_ingest=after_ingest, after_ingest_delay_seconds=0, on_change="replace")
    assert run(rt, name).files_succeeded == N
    return [source.uri(f"in/d/{i}.jsonl") for i in range(N)]


def assert_done_and_nothing_again(rt: Runtime, name: str) -> None:
    ledger = files(rt, name)
    assert len(ledger) == N
    assert {(r["status"], r["cleanup_status"], r["cleanup_error"]) for r in ledger.values()} == {
        ("SUCCESS", "DONE", None)
    }
    again = run(rt, name)
    assert (again.files_discovered, again.files_new, again.files_changed, again.files_succeeded) == (0, 0, 0, 0)
    assert clean(rt, name).cleaned == 0
    assert sorted(rows(rt, f"it.{name}").column("id").to_pylist()) == list(range(N))


def test_delete_after_ingest(rt: Runtime, source: Source) -> None:
    uris = seed_and_run(rt, source, "del", "delete")
    assert sorted(f["file_path"] for f in clean(rt, "del", dry_run=True).files) == uris
    assert listed(rt, source.root) == uris  # a dry run changes nothing

    report = clean(rt, "del")
    assert (report.cleaned, report.failed) == (N, 0)
    assert listed(rt, source.root) == []
    assert_done_and_nothing_again(rt, "del")


@pytest.mark.parametrize("source", ["az", "file"], indirect=True)  # fake-gcs-server has no copy
def test_move_after_ingest(rt: Runtime, source: Source) -> None:
    archive = source.uri("archive/")
    uris = seed_and_run(rt, source, "mv", f"move:{archive}")
    moved = [source.uri(f"archive/d/{i}.jsonl") for i in range(N)]
    assert sorted(f["destination"] for f in clean(rt, "mv", dry_run=True).files) == moved
    assert listed(rt, source.root) == uris

    report = clean(rt, "mv")
    assert (report.cleaned, report.failed) == (N, 0)
    assert listed(rt, source.root) == []
    assert listed(rt, archive) == moved
    store = rt.store(parse_source(archive))
    assert store.read(moved[1], store.current_version(moved[1]) or "") == jsonl([{"id": 1}])
    assert_done_and_nothing_again(rt, "mv")


@pytest.mark.parametrize("source", ["az", "file"], indirect=True)
def test_a_file_changed_since_ingestion_is_left_in_place_as_a_failed_cleanup(rt: Runtime, source: Source) -> None:
    uris = seed_and_run(rt, source, "chg", f"move:{source.uri('archive/')}")
    source.put({"in/d/1.jsonl": jsonl([{"id": 100}])})  # a new version, not yet discovered

    report = clean(rt, "chg")
    assert (report.cleaned, report.failed) == (N - 1, 1)
    assert listed(rt, source.root) == [uris[1]]  # the newer version is neither moved nor deleted
    assert listed(rt, source.uri("archive/")) == [source.uri(f"archive/d/{i}.jsonl") for i in (0, 2)]
    row = files(rt, "chg")[uris[1]]
    assert (row["status"], row["cleanup_status"]) == ("SUCCESS", "FAILED")
    assert "changed since it was ingested" in str(row["cleanup_error"])

    again = run(rt, "chg")  # the new version is ingested as such, not the old one again
    assert (again.files_changed, again.files_succeeded) == (1, 1)
    assert sorted(rows(rt, "it.chg").column("id").to_pylist()) == [0, 2, 100]
    assert clean(rt, "chg").cleaned == 1
    assert listed(rt, source.root) == []


@pytest.mark.parametrize("source", ["file"], indirect=True)
def test_a_local_move_by_absolute_path(rt: Runtime, source: Source) -> None:
    archive_path = parse_source(source.uri("archive/")).prefix  # the path without its leading /
    seed_and_run(rt, source, "abs", f"move:/{archive_path}")
    assert clean(rt, "abs").cleaned == N
    assert listed(rt, source.uri("archive/")) == [source.uri(f"archive/d/{i}.jsonl") for i in range(N)]


@pytest.mark.parametrize("source", ["file"], indirect=True)
def test_tag_and_a_move_to_another_store_are_refused_at_create_and_update(rt: Runtime, source: Source) -> None:
    with pytest.raises(ConfigurationError, match="needs S3 object tags; a file:// source can keep, delete or move"):
        ingest(rt, "tagged", source.root, after_ingest="tag:ingested=yes")
    ingest(rt, "kept", source.root)
    with pytest.raises(ConfigurationError, match="needs S3 object tags"):
        ingestions.update(rt.db, "kept", {"after_ingest": "tag:ingested=yes"})
    with pytest.raises(ConfigurationError, match="is not on the store of the source"):
        ingestions.update(rt.db, "kept", {"after_ingest": "move:s3://bucket/archive/"})
    assert ingestions.get(rt.db, "kept").after_ingest == "keep"
