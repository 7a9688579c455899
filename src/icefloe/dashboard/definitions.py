"""Defining and changing ingestions from the dashboard (admins): the form's fields go to
:func:`icefloe.ingestions.create` and :func:`icefloe.ingestions.update`, the functions of
`icefloe ingestion create|update` and of ``POST|PATCH /api/v1/ingestions``, with their checks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from icefloe import ingestions
from icefloe.api.deps import DbDep
from icefloe.dashboard.web import AdminAction, Form, PageError, Viewer, acted, back, page, render, templates
from icefloe.errors import ConfigurationError, IcefloeError
from icefloe.ingestions import IngestionSpec
from icefloe.models import FORMATS, ON_CHANGE, SCHEMA_EVOLUTIONS

router = APIRouter(include_in_schema=False)

# The options the forms offer (the CLI and the API have them all); text fields, then choices.
EDITABLE = ("pattern", "max_retries", "max_files_per_commit", "on_change", "schema_evolution")
CHOICES = {"format": FORMATS, "on_change": ON_CHANGE, "schema_evolution": SCHEMA_EVOLUTIONS}
NUMBERS = ("max_retries", "max_files_per_commit")
templates.env.globals["choices"] = CHOICES  # the option forms, on the new-ingestion and ingestion pages


def _options(form: dict[str, str], fields: tuple[str, ...]) -> dict[str, Any]:
    """The form's fields as the spec's types: blanks left out, numbers parsed."""
    out: dict[str, Any] = {}
    for field in fields:
        value = form.get(field, "").strip()
        if not value:
            continue
        if field in NUMBERS:
            if not value.isdigit():
                raise ConfigurationError(f"{field} must be a whole number, got {value!r}")
            out[field] = int(value)
        else:
            out[field] = value
    return out


@router.get("/new-ingestion", response_class=HTMLResponse)
def new_form(request: Request, who: Viewer) -> Response:
    if not who.may("admin"):
        raise PageError(403, f"defining ingestions is for admins; you are signed in as a {who.role}")
    return render(request, "new_ingestion.html", who, values={})


@router.post("/new-ingestion", response_class=HTMLResponse)
def create(request: Request, who: AdminAction, db: DbDep, form: Form) -> Response:
    try:
        fields = _options(form, ("name", "source", "format", "table", *EDITABLE))
        created = ingestions.create(db, IngestionSpec(**fields))
    except TypeError:
        return _refused(request, who, form, "give a name, a source, a format and a table")
    except IcefloeError as exc:
        return _refused(request, who, form, str(exc))
    return back(page(created.name), notice=f"Ingestion {created.name} defined: Run now reads its source.")


def _refused(request: Request, who: Any, form: dict[str, str], message: str) -> Response:
    # The form comes back filled in, with the one-line reason.
    values = {k: v for k, v in form.items() if k != "csrf_token"}
    return render(request, "new_ingestion.html", who, status=422, values=values, failed=message)


@router.post("/ingestions/{name}/edit")
def edit(who: AdminAction, db: DbDep, name: str, form: Form) -> Response:
    def done() -> str:
        current = ingestions.get(db, name)
        changes = {k: v for k, v in _options(form, EDITABLE).items() if getattr(current, k) != v}
        if "pattern" in form and not form["pattern"].strip() and current.pattern is not None:
            changes["pattern"] = None  # emptied: every key below the prefix
        if not changes:
            return "Nothing changed."
        ingestions.update(db, name, changes)
        return f"Changed {', '.join(sorted(changes))}."

    return acted(page(name), done)
