"""Connecting: one place decides the URL, SQLite's pragmas and how transactions lock."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_FILE = "sovllm.db"
# scheme://user:PASSWORD@host: what a URL's password looks like inside any text.
_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@\s]*@")


def hide_password(text: str, url: str | None = None) -> str:
    """`text` with every URL's password shown as ***, and `url`'s password wherever it appears
    (a driver's error may quote it); for messages and logs, which must never hold one."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    try:
        password = make_url(url).password if url else None
    except (ArgumentError, ValueError):  # ValueError: a port that is no number
        password = None
    if password and len(str(password)) >= 4:  # shorter would mask ordinary words
        text = text.replace(str(password), "***")
    return text


class DatabaseConfigError(Exception):
    pass


def database_url(explicit: str | None, data_dir: Path) -> str:
    """The configured URL, or the default SQLite file under the data directory."""
    if explicit:
        try:
            url = make_url(explicit)
        except (ArgumentError, ValueError):  # ValueError: a port that is no number
            raise DatabaseConfigError(
                f"database_url {hide_password(explicit)!r} is not a database URL"
            ) from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise DatabaseConfigError(
                f"database_url: backend {url.get_backend_name()!r} is not supported "
                "(use sqlite:///FILE or postgresql+psycopg://...)"
            )
        return explicit
    return f"sqlite:///{data_dir / SQLITE_FILE}"


Durability = Literal["process_crash", "power_loss"]
SYNCHRONOUS: dict[str, str] = {"process_crash": "NORMAL", "power_loss": "FULL"}
"""In WAL mode, NORMAL loses no commit when the process dies, but a power cut may lose the last
ones (the WAL is synced at checkpoints only); FULL syncs the WAL at every commit."""


def _sqlite_pragmas(durability: Durability) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take control of transactions from pysqlite so every one starts with BEGIN
        # IMMEDIATE: writers then queue on the file lock instead of failing mid-transaction,
        # and a quota check and its insert happen under one lock across processes.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={SYNCHRONOUS[durability]}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        # Deleted and overwritten content is zeroed, in its page and on the freelist, so an
        # erased key's bytes do not linger in free space (GDPR Art. 17; checkpoint_wal: WAL).
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    return on_connect


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin_deferred(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def make_engine(
    url: str, readonly: bool = False, durability: Durability = "process_crash"
) -> Engine:
    """`durability` applies to SQLite; PostgreSQL's default (synchronous_commit on) already
    survives a power cut."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas(durability))
        event.listen(engine, "begin", _sqlite_begin_deferred if readonly else _sqlite_begin)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class Database:
    def __init__(self, url: str, durability: Durability = "process_crash") -> None:
        self.url = url
        self.durability = durability
        self.engine = make_engine(url, durability=durability)
        self.backend = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite reads need no write lock: a second engine whose transactions BEGIN DEFERRED.
        self._read_engine = (
            make_engine(url, readonly=True, durability=durability)
            if self.backend == "sqlite"
            else self.engine
        )
        self._reads = sessionmaker(self._read_engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only: on SQLite it does not take the write lock."""
        with self._reads() as session, session.begin():
            yield session

    def checkpoint_wal(self) -> bool:
        """SQLite: copy the WAL into the database file and truncate it to zero bytes.

        The WAL keeps old images of every page written since the last checkpoint, so bytes a
        transaction overwrote are still in it; after this they are nowhere in the files. Waits
        for readers up to the busy timeout. True when complete (always on PostgreSQL, which has
        no such file here: see docs/audit.md for what it needs).
        """
        if self.backend != "sqlite":
            return True
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            row = cur.fetchone()  # (busy, WAL frames, frames copied)
            cur.close()
        finally:
            conn.close()
        return row is not None and int(row[0]) == 0

    def dispose(self) -> None:
        self.engine.dispose()
        self._read_engine.dispose()
