"""Shared fixtures: a real `sovllm serve` process on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import sovllm.engines.llamacpp  # noqa: F401  (before any test imports llama_cpp: native.py)
from sovllm.engines.catalog import MODEL_DIR_ENV
from sovllm.governance.bootstrap import BOOTSTRAP_FILE as BOOTSTRAP
from sovllm.store.db import Database
from tests.postgres import PostgresMissing, create_database, private_postgres

MODEL_ID = "smollm2-135m-instruct"
# The default model is derived from the shipped file at first start (engines/derived.py). Every
# server the tests start shares one folder for it, as several data folders may in production,
# so it is derived once per machine, not once per test. A test of the derivation itself gives
# its server another folder.
os.environ.setdefault(
    MODEL_DIR_ENV, str(Path(tempfile.gettempdir()) / f"sovllm-test-models-{os.getuid()}")
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    api_key: str
    """The admin key the server created at first start."""
    data_dir: Path = Path()
    env: dict[str, str] | None = None
    """The settings the server was started with, for CLI commands on the same data."""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}/admin/v1{path}", headers=self.auth, timeout=30, **kw
        )

    def create_key(self, tenant: str, role: str = "user", **limits: float) -> str:
        """A new key (and its tenant, if new) through the admin API."""
        weight = limits.pop("weight", None)
        tenant_body: dict[str, object] = {"name": tenant}
        if weight is not None:
            tenant_body["weight"] = weight
        self.admin("POST", "/tenants", json=tenant_body)
        r = self.admin("POST", "/keys", json={"tenant": tenant, "role": role, **limits})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10, headers=self.auth).text
        for line in text.splitlines():
            if line.startswith(f"sovllm:{name}{{") or line.startswith(f"sovllm:{name} "):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def wait_for_metric(self, name: str, value: float, timeout: float = 30.0) -> None:
        """Poll /metrics until the gauge reads `value` (the server's state, not a fixed sleep)."""
        deadline = time.monotonic() + timeout
        seen = self.metric(name)
        while seen != value:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} stayed at {seen}, expected {value}")
            time.sleep(0.05)
            seen = self.metric(name)


def _bootstrap_key(log: Path, env: dict[str, str]) -> str:
    """The admin key the server wrote to its bootstrap file on an empty database, read and
    deleted as `sovllm keys bootstrap --print` does ("" if the database had keys). The key
    must be nowhere in the server's output."""
    path = Path(env.get("SOVLLM_BOOTSTRAP_KEY_FILE") or Path(env["SOVLLM_DATA_DIR"]) / BOOTSTRAP)
    if not path.exists():
        return ""
    assert path.stat().st_mode & 0o777 == 0o600, oct(path.stat().st_mode)
    key = path.read_text().strip()
    path.unlink()
    assert key.startswith("sk-sovllm-"), key[:10]
    assert key not in log.read_text()
    return key


def wait_until(predicate: Any, what: str, timeout: float = 60) -> None:
    """Poll a condition with a deadline (never a fixed sleep standing in for one)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def wait_until_async(
    predicate: Any, what: str, timeout: float = 60, interval: float = 0.01
) -> None:
    """wait_until on the event loop, for state the loop itself owns (an in-process engine, a
    stub server): the predicate runs between the loop's other work, never in a thread."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 120) -> None:
    """Poll `url` until it answers 200; fail with the process's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:g} s:\n{log.read_text()}")
        time.sleep(0.1)  # a child process has no readiness signal to wait on


@contextmanager
def run_server(
    tmp: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    ready_timeout: float = 120,
) -> Iterator[Server]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / f"server-{port}.log"
    full_env = {**os.environ, "SOVLLM_DATA_DIR": str(tmp / "data"), **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sovllm", "serve", "--port", str(port), *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, f"{url}/ready", log, ready_timeout)
        cli_env = {"SOVLLM_DATA_DIR": str(tmp / "data"), **(env or {})}
        yield Server(url, proc, log, _bootstrap_key(log, full_env), tmp / "data", cli_env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("server")) as srv:
        yield srv


# -- databases: every test that touches one runs on SQLite and on a real PostgreSQL ---------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server on a free port; yields its URL without a database name."""
    try:
        with private_postgres() as url:
            yield url
    except PostgresMissing as exc:
        pytest.fail(str(exc))


def fresh_database_url(kind: str, tmp: Path, postgres: str | None) -> str:
    """A new, empty database of the given backend."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'sovllm.db'}"
    assert postgres is not None
    return create_database(postgres)


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url_any(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    postgres = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    return fresh_database_url(request.param, tmp_path, postgres)


@pytest.fixture
def db(database_url_any: str) -> Iterator[Database]:
    from sovllm.store.migrate import upgrade

    database = Database(database_url_any)
    upgrade(database)
    yield database
    database.dispose()
