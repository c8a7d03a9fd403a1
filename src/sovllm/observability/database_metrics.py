"""The database's size and its write-ahead log's, and this process's memory and open files, as
gauges: what a long run (`sovllm bench --soak`, docs/bench.md) and an alert on growth watch.

SQLite: the database file and its `-wal` file, two `stat` calls. PostgreSQL:
`pg_database_size` of this database, and the size of the cluster's WAL directory
(`pg_ls_waldir`, which needs the `pg_monitor` role or a superuser: without it the WAL series is
left out rather than reported wrong). The WAL is the cluster's, shared by its databases.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from sovllm.store.db import Database

_PG_SIZE = text("SELECT pg_database_size(current_database())")
_PG_WAL = text("SELECT coalesce(sum(size), 0) FROM pg_ls_waldir()")


def _file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


class DatabaseSizeCollector(Collector):
    def __init__(self, db: Database) -> None:
        self._db = db
        self._sqlite_path = make_url(db.url).database if db.backend == "sqlite" else None

    def sizes(self) -> tuple[int | None, int | None]:
        """(database bytes, WAL bytes); None where it cannot be read."""
        if self._sqlite_path is not None:
            main = _file_size(self._sqlite_path)
            wal_file = _file_size(self._sqlite_path + "-wal")
            # No -wal file is an empty WAL (after a checkpoint, or before the first write).
            return main, (wal_file or 0) if main is not None else None
        size: int | None = None
        wal: int | None = None
        try:
            with self._db.engine.connect() as conn:
                size = int(conn.execute(_PG_SIZE).scalar() or 0)
                wal = int(conn.execute(_PG_WAL).scalar() or 0)
        except SQLAlchemyError:
            pass  # no pg_monitor: the size alone (or nothing, if the database is down)
        return size, wal

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size, wal = self.sizes()
        if size is not None:
            yield GaugeMetricFamily(
                "sovllm:database_size_bytes",
                "Bytes of the database (SQLite: its file; PostgreSQL: pg_database_size).",
                size,
            )
        if wal is not None:
            yield GaugeMetricFamily(
                "sovllm:database_wal_bytes",
                "Bytes of the write-ahead log (SQLite: the -wal file; PostgreSQL: the "
                "cluster's WAL directory).",
                wal,
            )


def register(registry: CollectorRegistry, db: Database) -> None:
    """The database gauges, and prometheus_client's process_* series (resident memory, open
    files, CPU seconds) for this process: a custom registry has none by default."""
    registry.register(DatabaseSizeCollector(db))
    ProcessCollector(registry=registry)
