"""What every page and action of the dashboard shares: the templates, who is signed in, the
CSRF-checked form of an action, and the HTML answers to errors.

A page needs a session (else: to the sign-in form); an action needs a session, the form's CSRF
token, and a role (else: 403, and nothing done). Errors of the functions an action calls come back
to the page as a one-line message.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from icefloe.api.deps import DbDep
from icefloe.dashboard import charts, sessions
from icefloe.dashboard.sessions import SignedIn
from icefloe.errors import IcefloeError, NotFoundError

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
MAX_FORM_BYTES = 64 << 10


class PageError(Exception):
    """An HTML error page: ``status`` and one line saying what went wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignInRequired(Exception):
    """No live session: the browser goes to the sign-in form, and back here after it."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


def viewer(request: Request, db: DbDep) -> SignedIn:
    signed_in = sessions.lookup(db, request.cookies.get(sessions.COOKIE))
    if signed_in is None:
        raise SignInRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    request.state.token_name = signed_in.token.name  # into the access log, as for API tokens
    return signed_in


Viewer = Annotated[SignedIn, Depends(viewer)]


async def form_data(request: Request) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (the only kind our forms send);
    parsed here rather than with python-multipart, a dependency for one standard-library call."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PageError(413, f"the form is larger than {MAX_FORM_BYTES >> 10} KiB")
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "the form could not be read (not URL-encoded UTF-8)") from None
    return dict(pairs)


Form = Annotated[dict[str, str], Depends(form_data)]


def _action(role: str) -> Callable[[SignedIn, dict[str, str]], Awaitable[SignedIn]]:
    async def check(who: Viewer, form: Form) -> SignedIn:
        if not sessions.csrf_matches(who.csrf, form.get("csrf_token")):
            raise PageError(403, "the form's CSRF token is missing or wrong: reload the page and try again")
        if not who.may(role):
            raise PageError(403, f"this needs the {role} role; you are signed in as a {who.role}")
        return who

    check.__name__ = f"action_by_{role}"
    return check


ReaderAction = Annotated[SignedIn, Depends(_action("reader"))]
OperatorAction = Annotated[SignedIn, Depends(_action("operator"))]
AdminAction = Annotated[SignedIn, Depends(_action("admin"))]


# Our own origin only (no inline script; inline style attributes draw the funnel's bars), no framing
# (the action buttons cannot be clickjacked), forms post only here. Pages carry CSRF tokens and a new
# token's secret: never cached.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def render(request: Request, template: str, who: SignedIn | None, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {"who": who, "notice": request.query_params.get("notice"), "error": request.query_params.get("error")}
        | context,
        status_code=status,
        headers=PAGE_HEADERS,
    )


def back(
    to: str, *, notice: str | None = None, error: str | None = None, params: dict[str, Any] | None = None
) -> RedirectResponse:
    """303 to the page ``to`` (a path of ours) with ``params``, and a one-line notice or error to
    show there."""
    encoded = query({**(params or {}), "notice": notice, "error": error})
    return RedirectResponse(to + (f"?{encoded}" if encoded else ""), status_code=303)


@contextmanager
def not_found_as_page() -> Iterator[None]:
    try:
        yield
    except NotFoundError as exc:
        raise PageError(404, str(exc)) from None


def acted(to: str, done: Callable[[], str], params: dict[str, Any] | None = None) -> Response:
    """Run an action: back to ``to`` with its notice, or with the one-line error it raised."""
    try:
        return back(to, notice=done(), params=params)
    except IcefloeError as exc:
        return back(to, error=str(exc), params=params)


def install_handlers(app: Any) -> None:
    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return render(request, "error.html", None, status=exc.status, message=exc.message)

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        if request.method != "GET":
            return render(request, "error.html", None, status=403, message="sign in first (your session has ended)")
        return RedirectResponse("/login?" + urllib.parse.urlencode({"next": exc.back_to}), status_code=303)

    app.add_exception_handler(PageError, page_error)
    app.add_exception_handler(SignInRequired, sign_in_required)


# --------------------------------------------------------------------------------------------------
# filters of the templates


def ago(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = ((now or dt.datetime.now(dt.UTC)) - value).total_seconds()
    return duration(seconds) + " ago" if seconds >= 0 else "in " + duration(-seconds)


def duration(seconds: float | dt.timedelta | None) -> str:
    if seconds is None:
        return "-"
    s = seconds.total_seconds() if isinstance(seconds, dt.timedelta) else float(seconds)
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{s // 60:.0f} min {s % 60:.0f} s"
    if s < 86400:
        return f"{s // 3600:.0f} h {s % 3600 // 60:.0f} min"
    return f"{s // 86400:.0f} d {s % 86400 // 3600:.0f} h"


def when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def size(value: int | None) -> str:
    if value is None:
        return "-"
    for limit, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= limit:
            return f"{value / limit:.1f} {unit}"
    return f"{value} B"


def page(name: str, suffix: str = "") -> str:
    """The path of an ingestion's page (its name quoted: names may hold ``?``, ``#``, spaces)."""
    return "/ingestions/" + urllib.parse.quote(name, safe="") + suffix


def query(params: dict[str, Any]) -> str:
    """A query string of the non-empty ``params``."""
    return urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, "")})


templates.env.filters.update(
    ago=ago, duration=duration, when=when, size=size, human=charts.human, page=page, query=query
)
