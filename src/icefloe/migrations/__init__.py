"""Alembic migrations of the ledger, applied with :func:`upgrade` (``icefloe db upgrade``).

Every command that uses the ledger checks the schema at start-up. Importing Alembic and loading
its script directory (Mako, env.py) cost ~0.3 s of each command's start, so the common case —
the database already at the newest revision — is one SQL query against ``alembic_version``; only
a database behind (or new) goes through Alembic.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

if TYPE_CHECKING:
    from alembic.config import Config

_HERE = Path(__file__).parent
_REVISION = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision\s*=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged scripts; no alembic.ini needed."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@cache
def head_revision() -> str:
    """The newest revision of the packaged scripts, read from their ``revision``/``down_revision``
    lines (the one no other script names as its parent); Alembic's own head is checked against it
    in the tests. More than one head is an error of the scripts."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (_HERE / "versions").glob("*.py"):
        source = script.read_text()
        found = _REVISION.search(source)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN.search(source)
        if down is not None and down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the ledger migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


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
    if current_revisions(database_url) == {head_revision()}:
        return
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


def pending(database_url: str) -> bool:
    """True when the database is not at the newest revision."""
    return current_revisions(database_url) != {head_revision()}
