"""Output a user can trust: keys and messages with brackets printed literally (not read as Rich
markup), 80-column terminals, plain text in pipes, keys below the prefix wherever a key is taken."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from tests.support.cli import cli, create, one_json, stderr_lines

if TYPE_CHECKING:
    from tests.support.services import PutObjects

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BRACKETED = "x[1]-[bold]y[/bold].jsonl"


def terminal(env: dict[str, str]) -> dict[str, str]:
    return env | {"COLUMNS": "80", "LINES": "50", "FORCE_COLOR": "1", "TERM": "xterm"}


def screen(text: str) -> str:
    lines = ANSI.sub("", text).splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    return "\n".join(lines)


def test_bracketed_keys_and_messages_are_printed_literally(
    icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects
) -> None:
    env = icefloe_env
    put_objects(
        bucket,
        {
            f"in/{BRACKETED}": b'{"id": 1}\n{not json\n',
            "in/good.jsonl": json.dumps({"id": 2, "note": "[red]not markup[/red]"}).encode() + b"\n",
        },
    )
    create(env, "brackets", f"s3://{bucket}/in/")
    summary = one_json(cli(env, "run", "brackets", "--json", expect=3).stdout)
    assert (summary["files_succeeded"], summary["files_failed"]) == (1, 1)

    # piped: plain text, whole lines, the key and the error message exactly as they are
    piped = cli(env, "files", "brackets", "--status", "FAILED")
    assert "┃" not in piped.stdout and "│" not in piped.stdout
    [row] = [line for line in piped.stdout.splitlines() if line.startswith(BRACKETED)]
    assert "MalformedJSON" in row and f"s3://{bucket}/in/{BRACKETED}" in row

    # an 80-column terminal: everything fits, the key is still whole
    shown = screen(cli(terminal(env), "files", "brackets").stdout)
    assert BRACKETED in shown
    cells = screen(cli(terminal(env), "sql", 'SELECT note FROM e2e."brackets" WHERE id = 2').stdout)
    assert "[red]not markup[/red]" in cells

    # keys below the prefix (as `files` shows them) or full URIs, wherever a key is taken
    history = one_json(cli(env, "files", "brackets", "--history", BRACKETED, "--json").stdout)
    assert history[-1]["status"] == "FAILED"
    retried = one_json(cli(env, "retry", "brackets", "--path", BRACKETED, "--json").stdout)
    assert retried == {"ingestion": "brackets", "file_path": f"s3://{bucket}/in/{BRACKETED}", "retried": 1}
    again = one_json(cli(env, "retry", "brackets", "--path", f"s3://{bucket}/in/{BRACKETED}", "--json").stdout)
    assert again["retried"] == 0  # not FAILED any more: claimable already
    unknown = cli(env, "retry", "brackets", "--path", "in/nope.jsonl", expect=2)
    [line] = stderr_lines(unknown)
    assert "nope.jsonl" in line


def test_library_hints_keep_their_brackets(icefloe_env: dict[str, str], bucket: str) -> None:
    proc = cli(
        terminal(icefloe_env),
        "ingestion", "create", "sparky", "--source", f"s3://{bucket}/x/", "--format", "jsonl",
        "--table", "e2e.sparky", "--engine", "spark",
        expect=None,
    )  # fmt: skip
    if proc.returncode == 0:  # the Spark client is installed here: nothing to hint at
        return
    assert "pip install 'icefloe[spark]'" in ANSI.sub("", proc.stderr).replace("\n", "")


def test_delete_without_yes_off_a_terminal_refuses(icefloe_env: dict[str, str], bucket: str) -> None:
    create(icefloe_env, "keepme", f"s3://{bucket}/k/")
    refused = cli(icefloe_env, "ingestion", "delete", "keepme", expect=2)
    [line] = stderr_lines(refused)
    assert "--yes" in line
    assert one_json(cli(icefloe_env, "ingestion", "show", "keepme", "--json").stdout)["name"] == "keepme"
    assert one_json(cli(icefloe_env, "ingestion", "delete", "keepme", "--yes", "--json").stdout) == {
        "deleted": "keepme"
    }
