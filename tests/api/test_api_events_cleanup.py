"""The event-driven discovery and source clean-up options over HTTP (in process): given at create,
changed by PATCH, refused in one line when wrong; a file's clean-up columns in the ledger's JSON."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.api import InProcessApi


def test_events_and_cleanup_options_round_trip(make_api: Callable[..., InProcessApi], bucket: str) -> None:
    api = make_api()
    queue = "http://127.0.0.1:9/123456789012/landing"
    with api.client("admin") as admin:
        created = admin.post(
            "/api/v1/ingestions",
            json={"name": "ev", "source": f"s3://{bucket}/in/", "format": "jsonl", "table": "api.ev"}
            | {"discovery": "events", "events_queue": queue, "reconcile_every_seconds": 3600}
            | {"after_ingest": f"move:s3://{bucket}/done/", "after_ingest_delay_seconds": 0},
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert (body["discovery"], body["events_queue"], body["reconcile_every_seconds"]) == ("events", queue, 3600)
        assert (body["after_ingest"], body["after_ingest_delay_seconds"]) == (f"move:s3://{bucket}/done/", 0)

        base = f"/api/v1/ingestions/{body['id']}"
        patched = admin.patch(base, json={"after_ingest": "tag:ingested=yes", "discovery": "listing"})
        assert patched.status_code == 200, patched.text
        assert (patched.json()["after_ingest"], patched.json()["discovery"]) == ("tag:ingested=yes", "listing")

        inside = admin.patch(base, json={"after_ingest": "move:in/done/"})
        assert inside.status_code in (400, 422), inside.text
        assert "overlaps the source" in inside.text
        no_queue = admin.post(
            "/api/v1/ingestions",
            json={"name": "nq", "source": f"s3://{bucket}/x/", "format": "jsonl", "table": "api.nq"}
            | {"discovery": "events"},
        )
        assert no_queue.status_code in (400, 422) and "--events-queue" in no_queue.text
        assert admin.get(f"{base}/files").status_code == 200
