"""Alembic environment: online migrations only, serialised across processes."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from icefloe.models import Base

# Any number of icefloe processes may start at once and each applies pending migrations;
# this lock makes them take turns (the later ones then find nothing to do).
_MIGRATION_LOCK_KEY = 0x1CEF10E


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        try:
            context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            connection.commit()
    engine.dispose()


run_migrations_online()
