"""The database: SQLite file by default, PostgreSQL in production (SQLAlchemy 2 + Alembic)."""
