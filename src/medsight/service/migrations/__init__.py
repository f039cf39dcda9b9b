"""Alembic migrations of the service database (see ``medsight.service.schema``)."""
