"""Alembic environment: migrations run on the connection ``ensure_schema`` hands over, never
from a configuration file (the service knows its database URL, alembic.ini would not)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
