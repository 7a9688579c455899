"""The monitoring dashboard, served by ``icefloe serve`` at ``/`` beside the API (``/api/v1``):
server-rendered pages (Jinja2 templates and static assets shipped in this package, nothing fetched
at run time), read through the functions the API and the CLI call.

- :mod:`~icefloe.dashboard.sessions` — sign-in with an API token, the session cookie, CSRF tokens;
- :mod:`~icefloe.dashboard.web` — what pages and actions share (who is signed in, forms, errors);
- :mod:`~icefloe.dashboard.pages` — the pages; :mod:`~icefloe.dashboard.actions` — the forms' actions;
- :mod:`~icefloe.dashboard.definitions` — defining and changing ingestions (admins);
- :mod:`~icefloe.dashboard.charts` — bar charts as inline SVG.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from icefloe.dashboard import actions, definitions, pages, web

ROUTES = [route.path for router in (pages.router, actions.router, definitions.router) for route in router.routes]  # type: ignore[attr-defined]


def install(app: FastAPI) -> None:
    """Mount the dashboard on ``app``: its pages, actions, static assets and HTML error pages."""
    app.mount("/static", StaticFiles(directory=web.HERE / "static"), name="dashboard-static")
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.include_router(definitions.router)
    web.install_handlers(app)


__all__ = ["ROUTES", "install"]
