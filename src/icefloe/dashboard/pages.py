"""The dashboard's pages (GET): sign-in, the overview, an ingestion with its ledger and file
drawer, its table's health and its schema. Each reads through the functions the API and the CLI
call (:mod:`icefloe.ledger`, :mod:`icefloe.runs`, :mod:`icefloe.ingestions`)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from icefloe import file_operations, ingestions, ledger, runs, schema_changes, tokens
from icefloe.api import pagination
from icefloe.api.deps import DbDep, RuntimeDep
from icefloe.dashboard import charts, sessions
from icefloe.dashboard.web import Form, PageError, Viewer, not_found_as_page, render
from icefloe.errors import AuthenticationError, ConfigurationError, IcefloeError
from icefloe.models import FILE_STATUSES, Ingestion, Run

router = APIRouter(include_in_schema=False)

LOGIN_CSRF_COOKIE = "icefloe_login_csrf"
PAGE_SIZE = 50
IN_PROGRESS = ("PENDING", "RUNNING")


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    """HttpOnly, SameSite=Strict, and Secure when the browser came over HTTPS."""
    response.set_cookie(
        name, value, max_age=max_age, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
    )


def _local(next_page: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//host`` or a URL)."""
    if next_page and next_page.startswith("/") and not next_page.startswith(("//", "/\\")):
        return next_page
    return "/"


# --------------------------------------------------------------------------------------------------
# sign-in


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    # The sign-in form has no session yet: its CSRF token is a double-submit cookie.
    csrf = secrets.token_urlsafe(32)
    response = render(request, "login.html", None, csrf=csrf, next=_local(next))
    set_cookie(request, response, LOGIN_CSRF_COOKIE, csrf, max_age=3600)
    return response


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, db: DbDep, form: Form) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not sessions.csrf_matches(expected, form.get("csrf_token")):
        raise PageError(403, "the sign-in form's CSRF token is missing or wrong: reload the page and try again")
    next_page = _local(form.get("next"))
    try:
        cookie, _ = sessions.sign_in(db, form.get("token", ""))
    except AuthenticationError:
        return render(
            request, "login.html", None, status=401, csrf=expected, next=next_page, failed="That token is not valid."
        )
    response = RedirectResponse(next_page, status_code=303)
    set_cookie(request, response, sessions.COOKIE, cookie, max_age=int(sessions.LIFETIME.total_seconds()))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


# --------------------------------------------------------------------------------------------------
# the overview


def _hours(now: dt.datetime, series: list[tuple[dt.datetime, int, int]]) -> tuple[list[int], list[int]]:
    """24 hourly buckets ending with the current hour: (bytes, records)."""
    top = now.replace(minute=0, second=0, microsecond=0)
    hours = [top - dt.timedelta(hours=23 - i) for i in range(24)]
    found = {h: (b, r) for h, b, r in series}
    return [found.get(h, (0, 0))[0] for h in hours], [found.get(h, (0, 0))[1] for h in hours]


def overview_rows(db: Any) -> list[dict[str, Any]]:
    """Every ingestion's health: each query is one indexed pass for all of them together."""
    all_ingestions = ingestions.list_all(db)
    with db.connect() as conn:
        now = ledger.database_now(conn)
        counts = ledger.status_counts_by_ingestion(conn)
        lags = ledger.lag_by_ingestion(conn)
        last = ledger.last_runs(conn)
        hourly = ledger.hourly_totals(conn)
        alerts = ledger.recent_alerts_by_ingestion(conn)
    rows = []
    for i in all_ingestions:
        byte_series, record_series = _hours(now, hourly.get(i.id, []))
        rows.append(
            {
                "ingestion": i,
                "files": counts.get(i.id, {}),
                "lag": lags.get(i.id),
                "last_run": last.get(i.id),
                "bytes_chart": charts.spark(byte_series, title="bytes read per hour, last 24 h"),
                "records_chart": charts.spark(record_series, title="rows ingested per hour, last 24 h"),
                "bytes_24h": sum(byte_series),
                "records_24h": sum(record_series),
                "alerts": alerts.get(i.id, []),
            }
        )
    return rows


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, who: Viewer, db: DbDep) -> Response:
    return render(request, "overview.html", who, rows=overview_rows(db))


# --------------------------------------------------------------------------------------------------
# an ingestion


def _ingestion(db: Any, name: str) -> Ingestion:
    with not_found_as_page():
        return ingestions.get(db, name)


def run_charts(recent: list[Run]) -> list[dict[str, Any]]:
    """Files, rows, bytes, duration and failures per run, oldest run first."""
    ordered = list(reversed(recent))
    labels = [f"run {r.id}" for r in ordered]

    def seconds(r: Run) -> float:
        return (r.finished_at - r.started_at).total_seconds() if r.finished_at and r.started_at else 0.0

    series: list[tuple[str, Sequence[float], str, bool]] = [
        ("files", [r.files_succeeded for r in ordered], "", False),
        ("rows", [r.records_ingested for r in ordered], "", False),
        ("bytes", [r.bytes_read for r in ordered], " B", False),
        ("duration", [seconds(r) for r in ordered], " s", False),
        ("failures", [r.files_failed for r in ordered], "", True),
    ]
    return [
        {"name": name, "chart": charts.bars(values, title=f"{name} per run", labels=labels, unit=unit, alarm=alarm)}
        for name, values, unit, alarm in series
    ]


def live_state(db: Any, ingestion: Ingestion) -> dict[str, Any]:
    """What changes while a run is in progress: the counts, the funnel, the latest run."""
    with db.connect() as conn:
        counts = ledger.status_counts(conn, ingestion.id)
    latest = runs.list_for(db, ingestion.id, limit=1)
    total = sum(counts.values())
    claimed = total - counts.get("DISCOVERED", 0)
    funnel = [
        ("discovered", total),
        ("claimed", claimed),
        ("committed", counts.get("SUCCESS", 0)),
    ]
    run = latest[0] if latest else None
    return {
        "counts": counts,
        "statuses": FILE_STATUSES,
        "funnel": funnel,
        "funnel_top": max(total, 1),
        "run": run,
        "in_progress": run is not None and run.status in IN_PROGRESS,
    }


@router.get("/ingestions/{name}", response_class=HTMLResponse)
def ingestion_page(
    request: Request,
    who: Viewer,
    db: DbDep,
    name: str,
    status: Annotated[str | None, Query(max_length=20)] = None,
    key: Annotated[str | None, Query(max_length=2000)] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    file: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    ingestion = _ingestion(db, name)
    status = status or None
    if status is not None and status not in FILE_STATUSES:
        raise PageError(422, f"status must be one of {', '.join(FILE_STATUSES)}, got {status!r}")
    try:
        after_id = pagination.decode(cursor or None)
    except ConfigurationError as exc:
        raise PageError(422, str(exc)) from None
    prefix = None
    if key:  # a key below the ingestion's prefix, as the table shows them, or a whole s3:// URI
        prefix = key if key.startswith("s3://") else ingestion.source.rstrip("/") + "/" + key.lstrip("/")
    drawer: dict[str, Any] | None = None
    with db.connect() as conn:
        rows = ledger.list_files(
            conn, ingestion.id, status=status, path_prefix=prefix, after_id=after_id, limit=PAGE_SIZE + 1
        )
        if file is not None:
            with not_found_as_page():
                chosen = ledger.get_file(conn, ingestion.id, file)
            drawer = {"file": chosen, "attempts": ledger.attempts(conn, file)}
    page, next_cursor = pagination.page(rows, PAGE_SIZE, lambda r: int(str(r["id"])))
    for row in page:
        row["key"] = ingestions.key_below_prefix(ingestion, str(row["file_path"]))
    if drawer is not None:
        drawer["key"] = ingestions.key_below_prefix(ingestion, str(drawer["file"]["file_path"]))
        drawer["versions"] = _versions(drawer["attempts"])
    recent = runs.list_for(db, ingestion.id, limit=30)
    return render(
        request,
        "ingestion.html",
        who,
        ingestion=ingestion,
        definition=ingestions.as_dict(ingestion),
        live=live_state(db, ingestion),
        charts=run_charts(recent),
        recent=recent[:10],
        files=page,
        next_cursor=next_cursor,
        filters={"status": status or "", "key": key or ""},
        drawer=drawer,
        file_actions=drawer is not None and _file_actions(str(drawer["file"]["status"])),
    )


def _file_actions(status: str) -> dict[str, bool]:
    """Which per-file actions the drawer offers: those :mod:`icefloe.file_operations` accepts for
    the file's status (a file under a lease has none)."""
    return {
        "retry": status in file_operations.RETRYABLE,
        "skip": status in file_operations.SKIPPABLE,
        "reingest": status in file_operations.REINGESTABLE,
    }


def _versions(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The attempts grouped by file version, newest version first."""
    by_version: dict[int, list[dict[str, Any]]] = {}
    for a in attempts:
        by_version.setdefault(int(a["version"]), []).append(a)
    return [{"version": v, "attempts": by_version[v]} for v in sorted(by_version, reverse=True)]


@router.get("/ingestions/{name}/live", response_class=HTMLResponse)
def live_fragment(request: Request, who: Viewer, db: DbDep, name: str) -> Response:
    """The live part of the ingestion page alone: the page's script polls it while a run runs."""
    ingestion = _ingestion(db, name)
    return render(request, "live.html", who, ingestion=ingestion, live=live_state(db, ingestion))


@router.get("/ingestions/{name}/table", response_class=HTMLResponse)
def table_page(request: Request, who: Viewer, rt: RuntimeDep, name: str) -> Response:
    from icefloe.maintenance import health

    ingestion = _ingestion(rt.db, name)
    found: dict[str, Any] | None = None
    problem = None
    try:
        found = health.table_health(health.load(rt.catalog, ingestion.table_identifier))
    except IcefloeError as exc:
        problem = str(exc)
    return render(request, "table.html", who, ingestion=ingestion, health=found, problem=problem)


# --------------------------------------------------------------------------------------------------
# tokens (admins)


@router.get("/tokens", response_class=HTMLResponse)
def tokens_page(request: Request, who: Viewer, db: DbDep) -> Response:
    if not who.may("admin"):
        raise PageError(403, f"tokens are for admins; you are signed in as a {who.role}")
    return render(request, "tokens.html", who, tokens=tokens.list_all(db), created=None)


# --------------------------------------------------------------------------------------------------
# schema


def schema_columns(table: Any) -> dict[int, dict[str, str]]:
    """Iceberg schema id → its columns (name → type), from the table's metadata."""
    return {schema.schema_id: {f.name: str(f.field_type) for f in schema.fields} for schema in table.metadata.schemas}


@router.get("/ingestions/{name}/schema", response_class=HTMLResponse)
def schema_page(request: Request, who: Viewer, rt: RuntimeDep, name: str) -> Response:
    """Pending changes (approve/reject for operators) and the history of the table's schema: the
    versions icefloe gave it (:mod:`icefloe.schema_changes`), each with its columns."""
    from icefloe.maintenance import health

    ingestion = _ingestion(rt.db, name)
    columns: dict[int, dict[str, str]] = {}
    current: int | None = None
    problem = None
    try:
        table = health.load(rt.catalog, ingestion.table_identifier)
        columns, current = schema_columns(table), table.metadata.current_schema_id
    except IcefloeError as exc:
        problem = str(exc)
    timeline = [
        {"version": v, "columns": columns.get(v.schema_id) if v.schema_id is not None else None}
        for v in reversed(schema_changes.history(rt.db, ingestion))
    ]
    return render(
        request,
        "schema.html",
        who,
        ingestion=ingestion,
        pending=schema_changes.pending(rt.db, ingestion),
        timeline=timeline,
        current=columns.get(current) if current is not None else None,
        problem=problem,
    )
