"""A run that "succeeds" on a likely mistake says so: in its summary on stderr and in `warnings` of
its JSON — a pattern matching nothing, a CSV read with the wrong delimiter, a `.txt` file ingested
as 0 rows, files of unrelated layouts merged into one table."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tests.support.cli import cli, create, run_json

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def test_likely_mistakes_are_warned_about(icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects) -> None:
    env = icefloe_env
    put_objects(
        bucket,
        {
            "csv/orders.csv": b"id;amount;city\n1;9.5;Lyon\n2;3.0;Nice\n",  # ';' but read with ','
            "csv/README.txt": b"exported by the shop system\n",  # a header line and no rows
            "events/a.jsonl": b'{"id": 1, "kind": "click"}\n',
        },
    )
    create(env, "orders", f"s3://{bucket}/csv/", "--no-check", fmt="csv")
    create(env, "nothing", f"s3://{bucket}/events/", "--pattern", "*.csv", "--no-check")
    create(env, "layouts", f"s3://{bucket}/events/", "--no-check")

    orders = run_json(env, "orders")
    assert orders["status"] == "SUCCESS"
    [delimiter, empty] = sorted(orders["warnings"], key=lambda w: "header" not in w)
    assert "'id;amount;city'" in delimiter and "--csv-delimiter" in delimiter
    assert "0 rows" in empty and f"s3://{bucket}/csv/README.txt" in empty

    nothing = run_json(env, "nothing")
    [warning] = nothing["warnings"]
    assert "matches" in warning and "*.csv" in warning
    human = cli(env, "run", "nothing")
    assert "warning: no object" in human.stderr

    assert run_json(env, "layouts")["warnings"] == []
    put_objects(bucket, {"events/b.jsonl": json.dumps({"sku": "x", "price": 1.5, "stock": 3}).encode() + b"\n"})
    merged = run_json(env, "layouts")
    [warning] = merged["warnings"]
    assert "added 3 column(s)" in warning and "unrelated" in warning
