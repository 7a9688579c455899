"""The ledger's one edge to its database: engines whose lost connections raise icefloe errors.

A restarted or unreachable PostgreSQL surfaces from SQLAlchemy as ``OperationalError`` or
``InterfaceError`` — but so do a lock timeout or a cancelled statement, which are not outages.
:func:`translate_connection_errors` installs a ``handle_error`` hook that turns only the outages
(disconnects, SQLSTATE class 08, server shutting down or starting) into
:class:`~icefloe.errors.LedgerUnavailableError`, so callers catch icefloe errors only and wait
outages out; every other database error passes through unchanged.
"""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import InterfaceError, OperationalError

from icefloe.errors import LedgerUnavailableError

# Server states that are outages, not errors of a statement: admin/crash shutdown, starting up,
# too many connections, and this session cut by a bound of the commit window (statement_timeout,
# idle_in_transaction_session_timeout): the transaction is gone, the next attempt starts afresh.
_OUTAGE_SQLSTATES = {"57P01", "57P02", "57P03", "53300", "57014", "25P03"}


def is_outage(exc: BaseException, *, is_disconnect: bool = False) -> bool:
    """Whether a database error means "the server cannot be reached now" (pure)."""
    if is_disconnect or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    # No SQLSTATE: the driver failed before the server answered (refused, reset, timed out).
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _OUTAGE_SQLSTATES


def describe(exc: BaseException) -> str:
    """The driver's error class and the first line of its message."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines() or [""]
    return f"{type(cause).__module__}.{type(cause).__name__}: {lines[0]}"


def _translate(context: ExceptionContext) -> None:
    if context.is_pre_ping:
        return  # the pool replaces a dead pooled connection by itself
    exc = context.sqlalchemy_exception
    if exc is not None and is_outage(exc, is_disconnect=context.is_disconnect):
        raise LedgerUnavailableError(f"the ledger database is unavailable: {describe(exc)}") from exc


def translate_connection_errors(engine: Engine) -> Engine:
    """Make ``engine`` raise :class:`LedgerUnavailableError` for outages (also used on the default
    catalog's engine, which lives in the same database)."""
    event.listen(engine, "handle_error", _translate)
    return engine


def connect(url: str) -> Engine:
    """The ledger's engine. ``pool_pre_ping``: a pooled connection killed by a restart is replaced."""
    return translate_connection_errors(create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10))
