"""A source clean-up killed with SIGKILL mid-way (``icefloe cleanup`` in a real process) resumes on the
next pass without losing a file or ingesting one again: killed after a move's copy and before its
delete, and after a delete before the ledger recorded it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import cli, create, one_json, run_json
from tests.support.services import PutObjects
from tests.support.tables import default_catalog, jsonl

pytestmark = pytest.mark.faults

N = 20


def keys(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed)


@pytest.mark.parametrize(
    ("action", "point"),
    [("move:archive/", "cleanup-after-copy"), ("delete", "cleanup-after-action")],
    ids=["move-killed-between-copy-and-delete", "delete-killed-before-the-ledger-knew"],
)
def test_cleanup_killed_resumes_without_losing_or_reingesting(
    icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects, s3_client: Any, action: str, point: str
) -> None:
    put_objects(bucket, {f"in/{n:02d}.jsonl": jsonl([{"id": n}]) for n in range(N)})
    create(icefloe_env, "kc", f"s3://{bucket}/in/", "--after-ingest", action, "--after-ingest-delay", "0s")
    assert run_json(icefloe_env, "kc")["files_succeeded"] == N

    preview = cli(icefloe_env, "cleanup", "kc", "--dry-run").stdout  # a person's view: every key, literally
    assert all(f"s3://{bucket}/in/{n:02d}.jsonl" in preview for n in range(N)), preview
    assert len(keys(s3_client, bucket, "in/")) == N

    killed = cli(dict(icefloe_env, ICEFLOE_FAULT_POINT=point), "cleanup", "kc", expect=None)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    if action.startswith("move"):  # the first file was copied, its source not yet deleted
        assert keys(s3_client, bucket, "archive/") == ["archive/00.jsonl"]
        assert len(keys(s3_client, bucket, "in/")) == N
    else:  # the first file was deleted, the ledger does not know yet
        assert len(keys(s3_client, bucket, "in/")) == N - 1

    resumed = one_json(cli(icefloe_env, "cleanup", "kc", "--json").stdout)
    assert (resumed["cleaned"], resumed["failed"]) == (N, 0)
    assert keys(s3_client, bucket, "in/") == []
    if action.startswith("move"):
        assert keys(s3_client, bucket, "archive/") == [f"archive/{n:02d}.jsonl" for n in range(N)]
        assert s3_client.get_object(Bucket=bucket, Key="archive/00.jsonl")["Body"].read() == jsonl([{"id": 0}])

    ledger = one_json(cli(icefloe_env, "files", "kc", "--json").stdout)
    assert len(ledger) == N
    assert {(f["status"], f["cleanup_status"]) for f in ledger} == {("SUCCESS", "DONE")}
    after = run_json(icefloe_env, "kc")
    assert (after["files_new"], after["files_changed"], after["files_succeeded"]) == (0, 0, 0)

    catalog = default_catalog(icefloe_env)
    try:
        ids = catalog.load_table("e2e.kc").scan().to_arrow().column("id").to_pylist()
    finally:
        catalog.engine.dispose()
    assert sorted(ids) == list(range(N))  # nothing lost, nothing twice


def test_a_local_move_killed_between_copy_and_delete_resumes(icefloe_env: dict[str, str], tmp_path: Path) -> None:
    """The same on a file:// source, whose move is the store's copy and then its delete."""
    source, archive = tmp_path / "in", tmp_path / "archive"
    source.mkdir()
    for n in range(N):
        (source / f"{n:02d}.jsonl").write_bytes(jsonl([{"id": n}]))
    create(
        icefloe_env,
        "kl",
        f"file://{source}/",
        "--after-ingest",
        f"move:file://{archive}/",
        "--after-ingest-delay",
        "0s",
    )
    assert run_json(icefloe_env, "kl")["files_succeeded"] == N

    killed = cli(dict(icefloe_env, ICEFLOE_FAULT_POINT="cleanup-after-copy"), "cleanup", "kl", expect=None)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    assert sorted(p.name for p in archive.iterdir()) == ["00.jsonl"]  # copied, its source not yet deleted
    assert len(list(source.iterdir())) == N

    resumed = one_json(cli(icefloe_env, "cleanup", "kl", "--json").stdout)
    assert (resumed["cleaned"], resumed["failed"]) == (N, 0)
    assert list(source.iterdir()) == []
    assert sorted(p.name for p in archive.iterdir()) == [f"{n:02d}.jsonl" for n in range(N)]
    assert (archive / "00.jsonl").read_bytes() == jsonl([{"id": 0}])

    ledger = one_json(cli(icefloe_env, "files", "kl", "--json").stdout)
    assert {(f["status"], f["cleanup_status"]) for f in ledger} == {("SUCCESS", "DONE")} and len(ledger) == N
    after = run_json(icefloe_env, "kl")
    assert (after["files_new"], after["files_changed"], after["files_succeeded"]) == (0, 0, 0)
    catalog = default_catalog(icefloe_env)
    try:
        ids = catalog.load_table("e2e.kl").scan().to_arrow().column("id").to_pylist()
    finally:
        catalog.engine.dispose()
    assert sorted(ids) == list(range(N))  # nothing lost, nothing twice
