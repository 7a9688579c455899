"""The CLI on every store: create (its source check), ``ingestion check``, ``run``, a SIGKILL after
the Iceberg commit recovered without a row twice, and one-line source errors."""

from __future__ import annotations

import sqlalchemy as sa

from icefloe.runtime import Runtime
from tests.support.cli import cli, one_json, run_json, stderr_lines
from tests.support.emulators import Source
from tests.support.tables import ids_by_file, jsonl, rows


def test_create_check_run_and_a_kill_after_the_commit(rt: Runtime, source: Source, source_env: dict[str, str]) -> None:
    source.put({f"in/{n}.jsonl": jsonl([{"id": n * 10 + i} for i in range(3)]) for n in range(4)})
    created = cli(
        source_env, "ingestion", "create", "cli", "--source", source.root, "--format", "jsonl",
        "--table", "e2e.cli", "--max-files-per-commit", "2", "--json",
    )  # fmt: skip
    assert "warnings" not in one_json(created.stdout), created.stdout
    check = one_json(cli(source_env, "ingestion", "check", "cli", "--json").stdout)
    assert (check["source"], check["objects_on_first_page"]) == ("ok", 4)

    died = cli(source_env | {"ICEFLOE_FAULT_POINT": "after-commit"}, "run", "cli", expect=None)
    assert died.returncode == -9, died.stderr
    with rt.db.begin() as conn:  # the dead worker's lease runs out
        conn.execute(sa.text("UPDATE files SET lease_expires_at = now() - interval '1 minute'"))
    summary = run_json(source_env, "cli")
    assert summary["status"] == "SUCCESS", summary
    expected = {source.uri(f"in/{n}.jsonl"): [n * 10 + i for i in range(3)] for n in range(4)}
    assert ids_by_file(rows(rt, "e2e.cli")) == expected  # every row once
    again = run_json(source_env, "cli")
    assert (again["files_new"], again["files_changed"], again["snapshots_committed"]) == (0, 0, 0)


def test_source_errors_are_one_line(source: Source, source_env: dict[str, str]) -> None:
    if source.scheme == "gs":
        env_change, said = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}, "cannot reach"
    elif source.scheme == "az":
        env_change, said = {"AZURE_STORAGE_CONNECTION_STRING": _wrong_key(source_env)}, "denied"
    else:
        env_change, said = {}, "does not exist"
    root = "file:///no/such/dir/" if source.scheme == "file" else source.root
    created = cli(
        source_env | env_change, "ingestion", "create", "bad", "--source", root, "--format", "jsonl",
        "--table", "e2e.bad", "--json",
    )  # fmt: skip
    (warning,) = one_json(created.stdout)["warnings"]
    assert said in warning, warning
    check = cli(source_env | env_change, "ingestion", "check", "bad", expect=None)
    assert check.returncode != 0
    (line,) = stderr_lines(check)
    assert said in line and "Traceback" not in line, line


def _wrong_key(env: dict[str, str]) -> str:
    parts = dict(p.split("=", 1) for p in env["AZURE_STORAGE_CONNECTION_STRING"].split(";") if p)
    parts["AccountKey"] = "d3Jvbmcga2V5IHdyb25nIGtleQ=="
    return ";".join(f"{k}={v}" for k, v in parts.items())
