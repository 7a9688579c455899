"""The dashboard's actions (POST forms): each checks the session's CSRF token and role
(:mod:`icefloe.dashboard.web`), calls the one function the CLI and the API call, and goes back to
the page with what it did, or the one-line error it met."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Engine

from icefloe import file_operations, ingestions, ledger, runs, schema_changes, tokens
from icefloe.api.deps import DbDep, FileId, RuntimeDep
from icefloe.api.routes.schema import ChangeId
from icefloe.dashboard import sessions
from icefloe.dashboard.web import AdminAction, Form, OperatorAction, ReaderAction, acted, back, render
from icefloe.dashboard.web import page as _page
from icefloe.errors import IcefloeError
from icefloe.file_operations import FileAction
from icefloe.models import Ingestion

router = APIRouter(include_in_schema=False)


@router.post("/logout")
def logout(request: Request, who: ReaderAction, db: DbDep) -> Response:
    sessions.sign_out(db, request.cookies.get(sessions.COOKIE))
    response = back("/login", notice="Signed out.")
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


@router.post("/ingestions/{name}/run")
def run_now(who: OperatorAction, db: DbDep, name: str, form: Form) -> Response:
    def done() -> str:
        run = runs.enqueue(db, ingestions.get(db, name), trigger="dashboard")
        return f"Run {run.id} queued."

    # Back to the page as it was: with the file drawer that was open, if any.
    file_id = form.get("file", "")
    return acted(_page(name), done, params={"file": file_id} if file_id.isdigit() else None)


@router.post("/ingestions/{name}/retry-failed")
def retry_failed(who: OperatorAction, db: DbDep, name: str) -> Response:
    def done() -> str:
        ingestion = ingestions.get(db, name)
        with db.begin() as conn:
            n = ledger.make_retryable(conn, ingestion.id)
        return f"{n} FAILED file(s) will be retried by the next run."

    return acted(_page(name), done)


@router.post("/ingestions/{name}/pause")
def pause(who: AdminAction, db: DbDep, name: str) -> Response:
    return acted(_page(name), lambda: f"{ingestions.set_status(db, name, 'PAUSED').name} is paused.")


@router.post("/ingestions/{name}/resume")
def resume(who: AdminAction, db: DbDep, name: str) -> Response:
    return acted(_page(name), lambda: f"{ingestions.set_status(db, name, 'ACTIVE').name} is active again.")


@router.post("/ingestions/{name}/delete")
def delete(who: AdminAction, db: DbDep, name: str, form: Form) -> Response:
    if form.get("confirm") != name:
        return back(_page(name), error="type the ingestion's name to confirm its deletion")

    try:
        ingestions.delete(db, name)
    except IcefloeError as exc:
        return back(_page(name), error=str(exc))
    return back("/", notice=f"Ingestion {name} deleted (its Iceberg table is kept).")


@router.post("/tokens")
def create_token(request: Request, who: AdminAction, db: DbDep, form: Form) -> Response:
    try:
        token, secret = tokens.create(db, name=form.get("name", "").strip(), role=form.get("role", ""))
    except IcefloeError as exc:
        return back("/tokens", error=str(exc))
    # The secret is shown once, on this page, and never put into a URL.
    return render(request, "tokens.html", who, tokens=tokens.list_all(db), created=(token, secret))


@router.post("/tokens/revoke")
def revoke_token(who: AdminAction, db: DbDep, form: Form) -> Response:
    return acted("/tokens", lambda: f"Token {tokens.revoke(db, form.get('name', '')).name} revoked.")


# --------------------------------------------------------------------------------------------------
# one file (the functions of `icefloe files retry|skip|reingest` and the API's)


def _on_file(db: Engine, name: str, file_id: int, act: Callable[[Ingestion], FileAction]) -> Response:
    """Back to the file's drawer with what the action made of it."""

    def done() -> str:
        result = act(ingestions.get(db, name))
        return f"{result.action}: {result.file_path} is {result.status} now (version {result.version})."

    return acted(_page(name), done, params={"file": file_id})


@router.post("/ingestions/{name}/files/{file_id}/retry")
def retry_file(who: OperatorAction, db: DbDep, name: str, file_id: FileId) -> Response:
    return _on_file(db, name, file_id, lambda i: file_operations.retry_file(db, i, file_id, actor=who.token.name))


@router.post("/ingestions/{name}/files/{file_id}/skip")
def skip_file(who: OperatorAction, db: DbDep, name: str, file_id: FileId, form: Form) -> Response:
    reason = form.get("reason", "")
    return _on_file(
        db, name, file_id, lambda i: file_operations.skip_file(db, i, file_id, reason, actor=who.token.name)
    )


@router.post("/ingestions/{name}/files/{file_id}/reingest")
def reingest_file(who: OperatorAction, db: DbDep, name: str, file_id: FileId) -> Response:
    return _on_file(db, name, file_id, lambda i: file_operations.reingest_file(db, i, file_id, actor=who.token.name))


# --------------------------------------------------------------------------------------------------
# schema changes (the functions of `icefloe schema approve|reject` and the API's)


@router.post("/ingestions/{name}/schema/{change_id}/approve")
def approve_change(who: OperatorAction, rt: RuntimeDep, name: str, change_id: ChangeId) -> Response:
    def done() -> str:
        d = schema_changes.approve(rt.db, rt.catalog, ingestions.get(rt.db, name), change_id, actor=who.token.name)
        return (
            f"Schema change {d.id} approved ({d.description}): {d.files} held file(s) will be ingested by the next run."
        )

    return acted(_page(name, "/schema"), done)


@router.post("/ingestions/{name}/schema/{change_id}/reject")
def reject_change(who: OperatorAction, db: DbDep, name: str, change_id: ChangeId) -> Response:
    def done() -> str:
        d = schema_changes.reject(db, ingestions.get(db, name), change_id, actor=who.token.name)
        return f"Schema change {d.id} rejected ({d.description}): {d.files} held file(s) are FAILED."

    return acted(_page(name, "/schema"), done)
