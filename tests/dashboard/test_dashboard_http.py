"""The dashboard's sign-in, sessions, CSRF and roles, through HTTP against the app in this process
(the browser tests cover the same paths as a user; these cover every action and role, fast)."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from icefloe import ingestions, tokens
from icefloe.ingestions import IngestionSpec
from icefloe.models import Ingestion
from tests.support.dashboard import Dashboard, csrf_of

# (path of the action, least role allowed); each called on an ingestion that exists (a missing file
# or schema change: an allowed call comes back with the error, a refused one is a 403).
ACTIONS = [
    ("/ingestions/orders/run", "operator"),
    ("/ingestions/orders/retry-failed", "operator"),
    ("/ingestions/orders/files/999999/retry", "operator"),
    ("/ingestions/orders/files/999999/skip", "operator"),
    ("/ingestions/orders/files/999999/reingest", "operator"),
    ("/ingestions/orders/schema/999999/approve", "operator"),
    ("/ingestions/orders/schema/999999/reject", "operator"),
    ("/ingestions/orders/pause", "admin"),
    ("/ingestions/orders/resume", "admin"),
    ("/ingestions/orders/delete", "admin"),
    ("/ingestions/orders/edit", "admin"),
    ("/new-ingestion", "admin"),
    ("/tokens", "admin"),
    ("/tokens/revoke", "admin"),
]
RANK = {"reader": 0, "operator": 1, "admin": 2}


@pytest.fixture
def orders(dashboard: Dashboard, bucket: str) -> str:
    db = dashboard.api.app.state.runtime.db
    spec = IngestionSpec(name="orders", source=f"s3://{bucket}/orders/", format="jsonl", table="d.orders")
    ingestions.create(db, spec)
    return "orders"


def runs_in(db: sa.Engine) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one())


def runs_of(database_url: str) -> int:
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one())
    finally:
        engine.dispose()


def test_sign_in_sets_a_strict_http_only_cookie_and_no_token_in_any_url(dashboard: Dashboard) -> None:
    with dashboard.anonymous() as client:
        to_login = client.get("/")
        assert to_login.status_code == 303 and to_login.headers["location"] == "/login?next=%2F"
        form = client.get("/login")
        assert 'name="token"' in form.text and 'type="password"' in form.text and 'method="post"' in form.text
        signed_in = dashboard.sign_in(client, dashboard.api.tokens["reader"])
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        cookie = next(v for k, v in signed_in.headers.multi_items() if k == "set-cookie" and "icefloe_session" in v)
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
        assert dashboard.api.tokens["reader"] not in cookie
        page = client.get("/")
        assert page.status_code == 200 and "Ingestions" in page.text and "test-reader" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"


def test_the_cookie_is_secure_under_https(dashboard: Dashboard) -> None:
    import httpx2

    with httpx2.Client(transport=dashboard.api.started._transport, base_url="https://testserver") as client:
        signed_in = dashboard.sign_in(client, dashboard.api.tokens["reader"])
        cookie = next(v for k, v in signed_in.headers.multi_items() if k == "set-cookie" and "icefloe_session" in v)
        assert "Secure" in cookie


def test_a_wrong_or_revoked_token_is_refused(dashboard: Dashboard) -> None:
    for secret in ("ifl_not-a-token", "hello", dashboard.api.tokens["revoked"]):
        with dashboard.anonymous() as client:
            refused = dashboard.sign_in(client, secret)
            assert refused.status_code == 401 and "That token is not valid." in refused.text
            assert "icefloe_session" not in refused.headers.get("set-cookie", "")
            assert client.get("/").status_code == 303


def test_sign_in_without_its_csrf_token_is_refused(dashboard: Dashboard) -> None:
    with dashboard.anonymous() as client:
        client.get("/login")
        refused = client.post("/login", data={"token": dashboard.api.tokens["admin"]})
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert client.get("/").status_code == 303


def test_revoking_the_token_ends_its_sessions(dashboard: Dashboard) -> None:
    with dashboard.client("operator") as client:
        assert client.get("/").status_code == 200
        tokens.revoke(dashboard.api.app.state.runtime.db, "test-operator")
        assert client.get("/").status_code == 303


def test_sign_out_ends_the_session(dashboard: Dashboard) -> None:
    with dashboard.client("reader") as client:
        page = client.get("/")
        assert client.post("/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 303
        assert client.get("/").status_code == 303


@pytest.mark.parametrize("role", ["reader", "operator", "admin"])
def test_a_role_sees_only_what_it_may_do(dashboard: Dashboard, orders: str, role: str) -> None:
    with dashboard.client(role) as client:
        page = client.get(f"/ingestions/{orders}").text
    forms = set(re.findall(r'<form[^>]*method="post" action="([^"]+)"', page))
    expected = {"/logout"}
    if role in ("operator", "admin"):
        expected |= {"/ingestions/orders/run", "/ingestions/orders/retry-failed"}
    if role == "admin":
        expected |= {"/ingestions/orders/pause", "/ingestions/orders/delete", "/ingestions/orders/edit"}
    assert forms == expected
    assert ('href="/tokens"' in page) == (role == "admin")


@pytest.fixture(scope="module")
def matrix(module_dashboard: Dashboard) -> Dashboard:
    db = module_dashboard.api.app.state.runtime.db
    ingestions.create(db, IngestionSpec(name="orders", source="s3://matrix/orders/", format="jsonl", table="m.orders"))
    return module_dashboard


@pytest.mark.parametrize("role", ["reader", "operator", "admin"])
@pytest.mark.parametrize(("path", "least"), ACTIONS)
def test_every_action_needs_the_csrf_token_and_the_role(matrix: Dashboard, role: str, path: str, least: str) -> None:
    db = matrix.api.app.state.runtime.db
    with matrix.client(role) as client:
        csrf = csrf_of(client.get("/").text)
        before = runs_in(db)
        without = client.post(path, data={"name": "nobody"})
        assert without.status_code == 403 and "CSRF" in without.text
        wrong = client.post(path, data={"csrf_token": csrf[::-1], "name": "nobody"})
        assert wrong.status_code == 403
        assert runs_in(db) == before  # refused: nothing done
        # With the token: allowed to the role, else refused naming the role it needs. (Deleting
        # and revoking need a confirmation or a name this form does not give: no side effect.)
        answer = client.post(path, data={"csrf_token": csrf, "name": "nobody"})
        if RANK[role] < RANK[least]:
            assert answer.status_code == 403 and f"needs the {least} role" in answer.text
        else:  # done, or the one-line error of the function it called (422: the form comes back)
            assert answer.status_code in (200, 303, 422), answer.text


def test_an_action_without_a_session_is_refused(dashboard: Dashboard, orders: str, database_url: str) -> None:
    with dashboard.anonymous() as client:
        assert client.post("/ingestions/orders/run", data={"csrf_token": "x"}).status_code == 403
    assert runs_of(database_url) == 0


def test_run_now_queues_a_run_and_says_so(dashboard: Dashboard, orders: str, database_url: str) -> None:
    with dashboard.client("operator") as client:
        csrf = csrf_of(client.get("/").text)
        queued = client.post("/ingestions/orders/run", data={"csrf_token": csrf})
        assert queued.status_code == 303
        shown = client.get(queued.headers["location"])
        assert re.search(r"Run \d+ queued", shown.text)
        again = client.get(client.post("/ingestions/orders/run", data={"csrf_token": csrf}).headers["location"])
        assert "already has run" in again.text  # the one-line error of runs.enqueue, shown on the page
    assert runs_of(database_url) == 1


def test_an_unknown_ingestion_is_a_404_page(dashboard: Dashboard) -> None:
    with dashboard.client("reader") as client:
        missing = client.get("/ingestions/nope")
        assert missing.status_code == 404 and "no ingestion named" in missing.text


def test_the_matrix_covers_every_action() -> None:
    from icefloe.dashboard import actions, definitions

    routers = (actions.router, definitions.router)
    templates = {r.path for router in routers for r in router.routes if "POST" in r.methods} - {"/logout"}  # type: ignore[attr-defined]
    covered = {re.sub(r"/orders/", "/{name}/", p) for p, _ in ACTIONS}
    covered = {re.sub(r"/files/999999/", "/files/{file_id}/", p) for p in covered}
    covered = {re.sub(r"/schema/999999/", "/schema/{change_id}/", p) for p in covered}
    assert covered == templates


def test_an_admin_defines_and_changes_an_ingestion_with_the_apis_checks(dashboard: Dashboard, bucket: str) -> None:
    with dashboard.client("admin") as client:
        form = client.get("/new-ingestion")
        assert form.status_code == 200 and 'name="source"' in form.text
        fields = {"name": "clicks", "source": "ftp://nope/", "format": "jsonl", "table": "web.clicks"}
        refused = client.post("/new-ingestion", data={"csrf_token": csrf_of(form.text), **fields})
        assert refused.status_code == 422 and "s3://" in refused.text and 'value="clicks"' in refused.text
        fields["source"] = f"s3://{bucket}/clicks/"
        created = client.post("/new-ingestion", data={"csrf_token": csrf_of(form.text), **fields, "max_retries": "5"})
        assert created.status_code == 303 and created.headers["location"].startswith("/ingestions/clicks?")
        page = client.get(created.headers["location"])
        assert "Ingestion clicks defined" in page.text
        edited = client.post(
            "/ingestions/clicks/edit",
            data={
                "csrf_token": csrf_of(page.text),
                "max_retries": "7",
                "on_change": "replace",
                "pattern": "**/*.jsonl",
            },
        )
        assert "Changed max_retries, pattern." in client.get(edited.headers["location"]).text
    got = ingestions.get(dashboard.api.app.state.runtime.db, "clicks")
    assert (got.max_retries, got.pattern, got.table_identifier) == (7, "**/*.jsonl", "web.clicks")
    with dashboard.client("operator") as client:
        assert client.get("/new-ingestion").status_code == 403


def add_files(db: sa.Engine, ingestion: Ingestion, first: int, count: int, status: str = "SUCCESS") -> None:
    """Ledger rows ``k-0001``… below the ingestion's prefix, as a discovery would add them."""
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO files (ingestion_id, file_path, size, etag, status) "
                "SELECT :i, :prefix || 'k-' || lpad(n::text, 4, '0'), 10, md5(n::text), :s "
                "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS n"
            ),
            {"i": ingestion.id, "prefix": ingestion.source, "first": first, "last": first + count - 1, "s": status},
        )


def keys_and_next(html: str) -> tuple[list[str], str | None]:
    keys = re.findall(r'#drawer">(k-\d+)</a>', html)
    found = re.search(r'<a rel="next" href="([^"]+)"', html)
    return keys, found.group(1).replace("&amp;", "&") if found else None


def test_the_ledger_pages_by_keyset_while_files_arrive_and_filters_by_status_and_key(
    dashboard: Dashboard, orders: str
) -> None:
    db = dashboard.api.app.state.runtime.db
    ingestion = ingestions.get(db, orders)
    add_files(db, ingestion, 1, 70)
    with dashboard.client("reader") as client:
        keys, next_page = keys_and_next(client.get("/ingestions/orders").text)
        assert keys == [f"k-{n:04d}" for n in range(1, 51)] and next_page is not None
        add_files(db, ingestion, 71, 10, status="FAILED")  # discovery goes on meanwhile
        keys, last = keys_and_next(client.get(next_page).text)
        assert keys == [f"k-{n:04d}" for n in range(51, 81)] and last is None  # nothing twice, nothing lost
        failed, _ = keys_and_next(client.get("/ingestions/orders", params={"status": "FAILED"}).text)
        assert failed == [f"k-{n:04d}" for n in range(71, 81)]
        by_key, _ = keys_and_next(client.get("/ingestions/orders", params={"key": "k-000"}).text)
        assert by_key == [f"k-{n:04d}" for n in range(1, 10)]
        assert client.get("/ingestions/orders", params={"cursor": "forged"}).status_code == 422


def test_an_admin_pauses_and_resumes(dashboard: Dashboard, orders: str) -> None:
    with dashboard.client("admin") as client:
        page = client.get("/ingestions/orders")
        paused = client.get(
            client.post("/ingestions/orders/pause", data={"csrf_token": csrf_of(page.text)}).headers["location"]
        )
        assert "orders is paused." in paused.text and 'action="/ingestions/orders/resume"' in paused.text
        resumed = client.post("/ingestions/orders/resume", data={"csrf_token": csrf_of(paused.text)})
        assert "active again" in client.get(resumed.headers["location"]).text
    assert ingestions.get(dashboard.api.app.state.runtime.db, "orders").status == "ACTIVE"


def test_pages_for_admins_are_refused_to_others(dashboard: Dashboard) -> None:
    for role in ("reader", "operator"):
        with dashboard.client(role) as client:
            for path in ("/tokens", "/new-ingestion"):
                refused = client.get(path)
                assert refused.status_code == 403 and "admin" in refused.text


def test_a_name_with_url_characters_links_to_its_page(dashboard: Dashboard, bucket: str) -> None:
    db = dashboard.api.app.state.runtime.db
    name = "odd name?#%&"
    ingestions.create(db, IngestionSpec(name=name, source=f"s3://{bucket}/odd/", format="jsonl", table="d.odd"))
    with dashboard.client("operator") as client:
        link = re.search(r'<a href="(/ingestions/[^"]+)">odd name\?#%&amp;</a>', client.get("/").text)
        assert link is not None and link.group(1) == "/ingestions/odd%20name%3F%23%25%26"
        page = client.get(link.group(1))
        assert page.status_code == 200 and 'action="/ingestions/odd%20name%3F%23%25%26/run"' in page.text
        queued = client.post(f"{link.group(1)}/run", data={"csrf_token": csrf_of(page.text)})
        assert "queued" in client.get(queued.headers["location"]).text
