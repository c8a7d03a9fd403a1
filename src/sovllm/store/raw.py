"""Plain DBAPI transactions for the request path.

Per request, SQLAlchemy's execution layers cost about as much again as the database work
itself (measured on SQLite: 0.57 ms against 0.29 ms for admission). The few statements run on
every request therefore go straight to the driver, through SQLAlchemy's connection pool.
Statements are written once with :name parameters and translated to each driver's style.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sovllm.store.db import Database


class SQL:
    """One statement in both drivers' parameter styles (`postgresql`: where its text differs)."""

    def __init__(self, text: str, postgresql: str | None = None) -> None:
        self.sqlite = text  # sqlite3 takes :name as it is
        self.postgresql = re.sub(r"(?<!:):(\w+)", r"%(\1)s", postgresql or text)


class RawTransaction:
    def __init__(self, cursor: Any, backend: str) -> None:
        self._cursor = cursor
        self._postgres = backend == "postgresql"

    def _run(self, sql: SQL, params: Mapping[str, object]) -> Any:
        self._cursor.execute(sql.postgresql if self._postgres else sql.sqlite, params)
        return self._cursor

    def run(self, sql: SQL, params: Mapping[str, object]) -> None:
        self._run(sql, params)

    def changed(self, sql: SQL, params: Mapping[str, object]) -> int:
        """Run a writing statement; the number of rows it changed."""
        return int(self._run(sql, params).rowcount)

    def all(self, sql: SQL, params: Mapping[str, object]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run(sql, params).fetchall()]

    def one(self, sql: SQL, params: Mapping[str, object]) -> tuple[Any, ...] | None:
        row = self._run(sql, params).fetchone()
        return tuple(row) if row is not None else None


@contextmanager
def raw_transaction(db: Database) -> Iterator[RawTransaction]:
    """A transaction on a pooled driver connection: committed on success, else rolled back.

    On SQLite it starts with BEGIN IMMEDIATE, as every writing transaction here does.
    """
    conn = db.engine.raw_connection()
    try:
        cursor = conn.cursor()
        if db.backend == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        try:
            yield RawTransaction(cursor, db.backend)
        except BaseException:
            conn.rollback() if db.backend != "sqlite" else cursor.execute("ROLLBACK")
            raise
        if db.backend == "sqlite":
            cursor.execute("COMMIT")
        else:
            conn.commit()
    finally:
        conn.close()
