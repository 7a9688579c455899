"""The dashboard as a user sees it, in Debian's chromium against a real ``icefloe serve
--with-worker``, PostgreSQL and SeaweedFS: sign in, read the overview and an ingestion, open a
file's drawer, act on it. Every page is screenshotted (test-output/screenshots/) and no page may
log a console error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from icefloe import ingestions
from icefloe.ingestions import IngestionSpec
from tests.support.api import ApiServer
from tests.support.browser import UserContext
from tests.support.services import PutObjects

pytestmark = [pytest.mark.browser, pytest.mark.server]

BAD = b'{"id": 1000}\n{"id": \n'


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


def run_now(user: UserContext) -> None:
    """Click "Run now" and wait, watching the live section, until the run has finished."""
    page = user.page
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("status")).to_contain_text("queued")
    expect(page.locator("#run-status")).to_have_text(["SUCCESS", "PARTIAL", "FAILED"][0:3], timeout=300_000)


@pytest.fixture
def story(served: ApiServer, database_url: str, bucket: str, put_objects: PutObjects) -> ApiServer:
    good = {f"events/part-{n}.jsonl": jsonl(range(n * 10, n * 10 + 10)) for n in range(3)}
    put_objects(bucket, good | {"events/bad.jsonl": BAD})
    define(database_url, "story", f"s3://{bucket}/events/")
    return served


def test_a_reader_sees_the_failed_file_and_its_error_but_no_buttons(
    story: ApiServer, open_pages: Callable[..., UserContext]
) -> None:
    operator = open_pages(story.url)
    sign_in(operator, story.tokens["operator"])
    operator.page.get_by_role("link", name="story").click()
    operator.page.get_by_role("button", name="Run now").click()
    expect(operator.page.locator("#run-status")).to_have_text("PARTIAL", timeout=300_000)

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
    expect(page.locator(".timeline li").first).to_contain_text("current")
    expect(page.locator(".timeline li").first).to_contain_text("_source_file")

    phone = open_pages(story.url, width=390, height=844)
    sign_in(phone, story.tokens["reader"])
    expect(phone.page.get_by_role("link", name="story")).to_be_visible()
    phone.shot("overview-phone")


def test_a_wrong_token_is_refused(story: ApiServer, open_pages: Callable[..., UserContext]) -> None:
    user = open_pages(story.url)
    sign_in(user, "ifl_this-is-not-a-token")
    expect(user.page.get_by_role("alert")).to_have_text("That token is not valid.")
    user.shot("login-refused")
    # Chromium logs the refused sign-in's 401 as a console error: that one is expected.
    assert len(user.take_console_errors("status of 401")) == 1
    user.page.goto("/")
    expect(user.page).to_have_url("/login?next=%2F")
