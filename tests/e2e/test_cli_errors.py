"""What the CLI does when things are wrong: exit codes 2 (usage/configuration) and 1 (the run
failed), and one readable line instead of a traceback."""

from __future__ import annotations

import socket
import uuid
from typing import TYPE_CHECKING

from tests.support.cli import cli, create, one_json, run_json, stderr_lines

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_wrong_usage_exits_2_with_one_line(icefloe_env: dict[str, str]) -> None:
    env = icefloe_env
    bad_source = cli(
        env,
        "ingestion",
        "create",
        "x",
        "--source",
        "http://bucket/p/",
        "--format",
        "csv",
        "--table",
        "a.b",
        expect=2,
    )
    [line] = stderr_lines(bad_source)
    assert "http://bucket/p/" in line and "s3://" in line

    unknown = cli(env, "run", "no-such-ingestion", "--json", expect=2)
    [line] = stderr_lines(unknown)
    assert "no-such-ingestion" in line
    assert unknown.stdout.strip() == ""


def test_missing_bucket_bad_credentials_unreachable_endpoint(
    icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects
) -> None:
    env = icefloe_env
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    put_objects(bucket, {"in/a.jsonl": b'{"id": 1}\n'})
    create(env, "good", f"s3://{bucket}/in/")
    create(env, "nobucket", f"s3://{missing}/in/")

    # the run itself fails: exit 1, status FAILED, one line naming the bucket
    failed = run_json(env, "nobucket", expect=1)
    assert failed["status"] == "FAILED"
    assert failed["files_discovered"] == 0
    message = failed.get("error_message")
    assert message and "\n" not in message and missing in message, message

    no_bucket = cli(env, "ingestion", "check", "nobucket", expect=None)
    assert no_bucket.returncode != 0
    [line] = stderr_lines(no_bucket)
    assert missing in line

    wrong_secret = cli(env | {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "ingestion", "check", "good", expect=None)
    assert wrong_secret.returncode != 0
    [line] = stderr_lines(wrong_secret)
    assert bucket in line and ("denied" in line.lower() or "credential" in line.lower()), line

    endpoint = f"http://127.0.0.1:{closed_port()}"
    unreachable = cli(env | {"AWS_ENDPOINT_URL": endpoint}, "ingestion", "check", "good", expect=None)
    assert unreachable.returncode != 0
    [line] = stderr_lines(unreachable)
    assert endpoint.removeprefix("http://") in line, line

    check = one_json(cli(env, "ingestion", "check", "good", "--json").stdout)
    assert check["source"] == "ok"
    assert check["objects_on_first_page"] == 1
