"""Alembic migrations of the ledger, applied with :func:`upgrade` (``icefloe db upgrade``).

Every command that uses the ledger checks the schema at start-up. Importing Alembic and loading
its script directory (Mako, env.py) cost ~0.3 s of each command's start, so the common case —
the database already at the newest revision — is one SQL query against ``alembic_version``; only
a database behind (or new) goes through Alembic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

if TYPE_CHECKING:
    from alembic.config import Config

_HERE = Path(__file__).parent
# `revision = "0007"`, `down_revision: str | None = "0006"`, `down_revision = ("a", "b")` (a merge)
_ASSIGNMENT = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged scripts; no alembic.ini needed."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@cache
def head_revision() -> str | None:
    """The newest revision of the packaged scripts, read from their ``revision``/``down_revision``
    lines (the one no other script names as a parent); None when that is not one revision, and
    then Alembic decides. Alembic's own head is checked against it in the tests."""
    return head_of(script.read_text() for script in (_HERE / "versions").glob("*.py"))


def head_of(sources: Iterable[str]) -> str | None:
    """The single head of the migration scripts whose texts are ``sources``, else None."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for source in sources:
        found = dict((name, value) for name, value in _ASSIGNMENT.findall(source))
        revision = _QUOTED.findall(found.get("revision", ""))
        if len(revision) != 1:
            continue
        revisions.add(revision[0])
        parents.update(_QUOTED.findall(found.get("down_revision", "")))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def current_revisions(database_url: str) -> set[str]:
    """The revisions recorded in the database (empty: never migrated)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    except ProgrammingError:  # no alembic_version table yet
        return set()
    finally:
        engine.dispose()


def upgrade(database_url: str) -> None:
    """Apply every pending migration (idempotent; serialised by an advisory lock in env.py)."""
    head = head_revision()
    if head is not None and current_revisions(database_url) == {head}:
        return
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


def pending(database_url: str) -> bool:
    """True when the database is not at the newest revision."""
    head = head_revision()
    if head is None:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    return current_revisions(database_url) != {head}
