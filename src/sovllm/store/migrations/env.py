"""Alembic environment: the engine comes from sovllm, never from alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

from sovllm.store.schema import Base

engine: Engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two gateways starting at once must not both create the tables.
            connection.execute(text("SELECT pg_advisory_xact_lock(7263541)"))
        context.run_migrations()
