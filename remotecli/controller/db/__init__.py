"""The database: the engine, sessions and retries (``engine.py``), the tables (``models.py``)
and the Alembic migrations (``migrations/``)."""
