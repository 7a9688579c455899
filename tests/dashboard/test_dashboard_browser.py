"""The dashboard as a user sees it, in Debian's chromium against a real ``icefloe serve
--with-worker``, PostgreSQL and SeaweedFS: sign in, read the overview and an ingestion, open a
file's drawer, act on it. Every page is screenshotted (test-output/screenshots/) and no page may
log a console error."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import Locator, expect

from icefloe import ingestions
from icefloe.ingestions import IngestionSpec
from tests.support.api import ApiServer
from tests.support.browser import UserContext
from tests.support.services import PutObjects
from tests.support.tables import default_catalog

pytestmark = [pytest.mark.browser, pytest.mark.server]

BAD = b'{"id": 1000}\n{"id": \n'
RUN_TIMEOUT_MS = 300_000  # a run on a loaded 2-core machine


def jsonl(ids: range) -> bytes:
    return "".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in ids).encode()


def define(database_url: str, name: str, source: str, **options: Any) -> None:
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    try:
        ingestions.create(engine, IngestionSpec(name=name, source=source, format="jsonl", table=f"d.{name}", **options))
    finally:
        engine.dispose()


def sign_in(user: UserContext, secret: str) -> None:
    page = user.page
    page.goto("/")
    expect(page).to_have_url("/login?next=%2F")
    page.get_by_label("API token").fill(secret)
    page.get_by_role("button", name="Sign in").click()


def run_now(user: UserContext, expected: str | None) -> str:
    """Click "Run now" and watch the live section (no reload by the test) until the run has
    finished (``expected``: with that status); returns its status."""
    page = user.page
    page.get_by_role("button", name="Run now").click()
    notice = page.get_by_role("status")
    expect(notice).to_contain_text("queued")
    found = re.search(r"Run (\d+) queued", notice.inner_text())
    assert found is not None
    live = page.locator(f'#live[data-run="{found.group(1)}"]')
    expect(live).to_have_attribute("data-in-progress", "no", timeout=RUN_TIMEOUT_MS)
    if expected is not None:
        expect(live.locator("#run-status")).to_have_text(expected)
    return live.locator("#run-status").inner_text()


def open_file(user: UserContext, key: str) -> Locator:
    user.page.get_by_role("link", name=key, exact=True).click()
    drawer = user.page.locator("#drawer")
    expect(drawer.get_by_role("heading", name=key)).to_be_visible()
    return drawer


@pytest.fixture
def story(served: ApiServer, database_url: str, bucket: str, put_objects: PutObjects) -> ApiServer:
    good = {f"events/part-{n}.jsonl": jsonl(range(n * 10, n * 10 + 10)) for n in range(3)}
    put_objects(bucket, good | {"events/bad.jsonl": BAD})
    define(database_url, "story", f"s3://{bucket}/events/")
    return served


def test_a_wrong_token_is_refused_and_a_reader_sees_the_failed_file_and_its_error_but_no_buttons(
    story: ApiServer, open_pages: Callable[..., UserContext]
) -> None:
    stranger = open_pages(story.url)
    sign_in(stranger, "ifl_this-is-not-a-token")
    expect(stranger.page.get_by_role("alert")).to_have_text("That token is not valid.")
    stranger.shot("login-refused")
    # Chromium logs the refused sign-in's 401 as a console error: that one is expected.
    assert len(stranger.take_console_errors("status of 401")) == 1
    stranger.page.goto("/")
    expect(stranger.page).to_have_url("/login?next=%2F")

    operator = open_pages(story.url)
    sign_in(operator, story.tokens["operator"])
    operator.page.get_by_role("link", name="story").click()
    run_now(operator, "PARTIAL")

    reader = open_pages(story.url)
    sign_in(reader, story.tokens["reader"])
    page = reader.page
    expect(page.get_by_role("heading", name="Ingestions")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="story")
    expect(row).to_contain_text("✗ 1")
    expect(row).to_contain_text("PARTIAL")
    reader.shot("overview")
    page.get_by_role("link", name="story").click()
    expect(page.get_by_role("heading", name="story")).to_be_visible()
    reader.shot("ingestion")
    page.get_by_role("link", name="bad.jsonl").click()
    drawer = page.locator("#drawer")
    expect(drawer.locator("#file-status")).to_have_text("FAILED")
    expect(drawer.locator("#file-error")).not_to_be_empty()
    reader.shot("file-drawer")
    # A reader has no action in the page: the one button left is the ledger's filter (a GET form);
    # "Sign out" is in the header.
    expect(page.locator("main button")).to_have_text(["Filter"])
    expect(page.locator("main form[method=post]")).to_have_count(0)
    page.get_by_role("link", name="Table health").click()
    expect(page.locator("#health-snapshots")).to_have_text("1")
    reader.shot("table-health")
    page.get_by_role("link", name="← story").click()
    page.get_by_role("link", name="Schema").click()
    expect(page.locator(".timeline li").first).to_contain_text("table created")
    expect(page.locator("#columns")).to_contain_text("_source_file")
    reader.shot("schema")

    phone = open_pages(story.url, width=390, height=844)
    sign_in(phone, story.tokens["reader"])
    expect(phone.page.get_by_role("link", name="story")).to_be_visible()
    phone.shot("overview-phone")
    # The keyboard alone: Tab reaches the skip link first, then the links in order; Enter follows one.
    phone.page.keyboard.press("Tab")
    expect(phone.page.get_by_role("link", name="Skip to content")).to_be_focused()
    for _ in range(10):
        phone.page.keyboard.press("Tab")
        if phone.page.evaluate("document.activeElement.textContent") == "story":
            break
    phone.page.keyboard.press("Enter")
    expect(phone.page.get_by_role("heading", name="story")).to_be_visible()
    phone.shot("ingestion-phone")

    # An admin: the tokens page (a new token's secret shown once) and the new-ingestion form.
    admin = open_pages(story.url)
    sign_in(admin, story.tokens["admin"])
    admin.page.get_by_role("link", name="Tokens").click()
    admin.page.get_by_label("Name").fill("ci")
    admin.page.get_by_label("Role").select_option("operator")
    admin.page.get_by_role("button", name="Create token").click()
    expect(admin.page.locator("#new-token")).to_have_text(re.compile(r"^ifl_"))
    admin.shot("tokens")
    admin.page.get_by_role("link", name="Overview").click()
    admin.page.get_by_role("link", name="New ingestion").click()
    expect(admin.page.get_by_label("Source")).to_be_visible()
    admin.shot("new-ingestion")


def test_an_operator_skips_one_file_retries_a_mended_one_and_reingests_another(
    served: ApiServer,
    open_pages: Callable[..., UserContext],
    database_url: str,
    bucket: str,
    put_objects: PutObjects,
    icefloe_env: dict[str, str],
) -> None:
    good = {f"events/part-{n}.jsonl": jsonl(range(n * 10, n * 10 + 10)) for n in range(3)}
    put_objects(bucket, good | {"events/bad.jsonl": BAD, "events/garbage.jsonl": BAD})
    define(database_url, "ops", f"s3://{bucket}/events/")
    operator = open_pages(served.url)
    sign_in(operator, served.tokens["operator"])
    page = operator.page
    page.get_by_role("link", name="ops").click()
    run_now(operator, "PARTIAL")

    # Skip: SKIPPED with the reason the operator typed.
    drawer = open_file(operator, "garbage.jsonl")
    drawer.get_by_label("Reason for skipping").fill("the vendor re-sends it as garbage-v2")
    drawer.get_by_role("button", name="Skip file").click()
    expect(page.get_by_role("status")).to_contain_text("is SKIPPED now")
    expect(page.locator("#drawer #file-status")).to_have_text("SKIPPED")
    expect(page.locator("#drawer #file-error")).to_contain_text("the vendor re-sends it as garbage-v2")
    expect(page.locator("#drawer")).to_contain_text("operator test-operator")  # who did it, in the attempts

    # Retry after mending the file in S3: the next run ingests it.
    put_objects(bucket, {"events/bad.jsonl": jsonl(range(100, 105))})
    drawer = open_file(operator, "bad.jsonl")
    drawer.get_by_role("button", name="Retry file").click()
    expect(page.locator("#drawer #file-status")).to_have_text("DISCOVERED")
    operator.shot("file-retried")
    run_now(operator, "SUCCESS")
    expect(page.locator("#drawer #file-status")).to_have_text("SUCCESS")
    expect(page.locator("#drawer")).not_to_contain_text("not committed")

    # Re-ingest under replace: version 2 replaces the rows of version 1, exactly once.
    drawer = open_file(operator, "part-0.jsonl")
    drawer.get_by_role("button", name="Re-ingest file").click()
    expect(page.locator("#drawer #file-status")).to_have_text("DISCOVERED")
    run_now(operator, "SUCCESS")
    expect(page.locator("#drawer #file-status")).to_have_text("SUCCESS")
    expect(page.locator("#drawer").get_by_role("heading", name="Version 2")).to_be_visible()
    operator.shot("file-reingested")
    catalog = default_catalog(icefloe_env)
    try:
        table = catalog.load_table("d.ops").scan().to_arrow()
    finally:
        catalog.engine.dispose()
    assert sorted(table.column("id").to_pylist()) == [*range(30), *range(100, 105)]

    # An action whose form lost its CSRF token is refused, and nothing is queued.
    page.locator("form[action$='/run'] input[name=csrf_token]").evaluate("e => e.remove()")
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("alert")).to_contain_text("CSRF token is missing or wrong")
    operator.shot("csrf-refused")
    assert len(operator.take_console_errors("status of 403")) == 1
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 3
    finally:
        engine.dispose()


def test_an_operator_approves_a_pending_schema_change_and_sees_the_new_column(
    served: ApiServer,
    open_pages: Callable[..., UserContext],
    database_url: str,
    bucket: str,
    put_objects: PutObjects,
) -> None:
    put_objects(bucket, {"events/a.jsonl": jsonl(range(3))})
    define(database_url, "evolving", f"s3://{bucket}/events/", schema_evolution="approve")
    operator = open_pages(served.url)
    sign_in(operator, served.tokens["operator"])
    page = operator.page
    page.get_by_role("link", name="evolving").click()
    run_now(operator, "SUCCESS")
    put_objects(bucket, {"events/b.jsonl": b'{"id": 7, "name": "n7", "email": "x@example.com"}\n'})
    run_now(operator, None)
    expect(page.locator("[data-status=HELD]")).to_have_text("1")

    page.get_by_role("link", name="Schema").click()
    pending = page.locator("#pending")
    expect(pending).to_contain_text("email")
    expect(page.locator("#columns")).not_to_contain_text("email")
    operator.shot("schema-pending")
    pending.get_by_role("button", name=re.compile("^Approve change")).click()
    expect(page.get_by_role("status")).to_contain_text("approved")
    expect(page.locator("#pending")).to_contain_text("No change waits for approval.")
    expect(page.locator("#columns")).to_contain_text("email")
    expect(page.locator(".timeline")).to_contain_text("approved by test-operator")
    operator.shot("schema-approved")

    page.get_by_role("link", name="← evolving").click()
    run_now(operator, "SUCCESS")
    drawer = open_file(operator, "b.jsonl")
    expect(drawer.locator("#file-status")).to_have_text("SUCCESS")
