"""The CLI at the edge: what it shows of secrets, which names and URLs it refuses, which
ingestions it refuses to let overlap."""

from __future__ import annotations

from e2e_support import cli, one_json


def test_credentials_in_uris_are_never_printed(icefloe_env: dict[str, str]) -> None:
    env = icefloe_env
    created = cli(
        env,
        "ingestion",
        "create",
        "secretive",
        "--source",
        "s3://AKIAUSER:pa55word@bucket/p/",
        "--format",
        "jsonl",
        "--table",
        "e2e.secretive",
    )
    updated = cli(
        env, "ingestion", "update", "secretive", "--spark-remote", "sc://spark:15002/;user_id=etl;token=s3cr3t"
    )
    shown = [
        created.stdout,
        updated.stdout,
        cli(env, "ingestion", "show", "secretive").stdout,
        cli(env, "ingestion", "list").stdout,
        cli(env, "ingestion", "list", "--json").stdout,
        cli(env, "ingestion", "show", "secretive", "--json").stdout,
        cli(env, "ingestion", "update", "secretive", "--max-retries", "4", "--json").stdout,
    ]
    for text in shown:
        assert "pa55word" not in text and "AKIAUSER" not in text and "s3cr3t" not in text, text
    detail = one_json(shown[5])
    assert detail["source"] == "s3://***@bucket/p/"
    assert detail["spark_remote"] == "sc://spark:15002/;user_id=etl;token=***"
    [listed] = one_json(shown[4])
    assert (listed["source"], listed["spark_remote"]) == (detail["source"], detail["spark_remote"])
