#!/usr/bin/env python3
"""The kill loop (issue #20, item 3): SIGKILL under load, then check that nothing was lost.

    .venv/bin/python scripts/kill_loop.py --cycles 20 --db sqlite|postgresql \
        --target gateway|worker [--clients 4] [--max-tokens 48] [--seed N]

One real `sovllm serve` on the real model, on SQLite or on a private PostgreSQL
(tests/postgres.py). `--clients` threads stream chat completions through the official openai
client, with a user key whose concurrency limit is the number of clients (so a reservation
that stayed behind would refuse the next request with a 429). Each cycle waits until every
client has a stream under way, waits a random moment more, and SIGKILLs

- `gateway`: the `sovllm serve` process (its engine in-process), then starts it again on the
  same data folder and database;
- `worker`: one of two `sovllm worker` replicas the gateway started (`--replicas 2`), which the
  gateway's supervisor restarts.

After the restart, with the load still running, every client must complete a request; then the
load stops and the cycle checks:

1. `sovllm audit verify` is clean;
2. every request id a client got a 200 for has its `request.begin`, and every begin has its
   `request.end` or is listed in a `quota.released` entry as cut by the crash;
3. no reservation is stuck: the killed gateway's in-flight rows were gone when it answered
   /ready again (released at start-up, governance/instances.py), and once the load has drained
   the `inflight` table is empty;
4. usage matches the log: the usage rows' requests and tokens equal the number of `request.end`
   entries and the sum of their token counts;
5. no client was refused for quota (429) and no stream failed in any other way than being cut
   by the kill (a connection lost, or an SSE error event naming the replica).

One line per cycle, a summary, exit 1 on any failed check (2 on bad usage). The working folder
(server logs) is kept on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402
from sqlalchemy import text  # noqa: E402
from tests.conftest import MODEL_ID, free_port, wait_until, wait_until_up  # noqa: E402
from tests.postgres import create_database, private_postgres  # noqa: E402

from sovllm.governance.bootstrap import BOOTSTRAP_FILE  # noqa: E402
from sovllm.store.db import Database  # noqa: E402

RELEASED = "quota.released"


class CheckFailed(Exception):
    pass


# -- the service ---------------------------------------------------------------------------


class Service:
    """`sovllm serve` on a fixed port and data folder, started again after each kill."""

    def __init__(self, work: Path, database_url: str, target: str) -> None:
        self.work, self.target = work, target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / "server.log"
        self.env = {
            **os.environ,
            "SOVLLM_DATA_DIR": str(work / "data"),
            "SOVLLM_DATABASE_URL": database_url,
            "SOVLLM_ENGINE__THREADS": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_key = ""

    def start(self) -> float:
        """Start and wait for /ready; the seconds it took."""
        began = time.monotonic()
        args = ["--replicas", "2"] if self.target == "worker" else []
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sovllm", "serve", "--port", str(self.port), *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until_up(self.proc, f"{self.url}/ready", self.log, 180)
        bootstrap = self.work / "data" / BOOTSTRAP_FILE
        if not self.admin_key:
            self.admin_key = bootstrap.read_text().strip()
            bootstrap.unlink()
        return time.monotonic() - began

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.admin_key}"}
        return httpx.request(method, f"{self.url}/admin/v1{path}", headers=auth, timeout=30, **kw)

    def user_key(self, tenant: str, max_concurrent: int) -> str:
        self.admin("POST", "/tenants", json={"name": tenant})
        body = {"tenant": tenant, "role": "user", "max_concurrent": max_concurrent}
        r = self.admin("POST", "/keys", json=body)
        if r.status_code != 201:
            raise CheckFailed(f"creating the user key: {r.status_code} {r.text}")
        return str(r.json()["key"])

    def replicas(self) -> list[dict[str, Any]]:
        r = self.admin("GET", "/pool")
        r.raise_for_status()
        return list(r.json()["replicas"])

    def verify(self) -> str:
        """`sovllm audit verify` on the service's data, as an operator runs it."""
        run = subprocess.run(
            [sys.executable, "-m", "sovllm", "audit", "verify"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = (run.stdout + run.stderr).strip()
        if run.returncode != 0:
            raise CheckFailed(f"audit verify exited {run.returncode}: {out[-2000:]}")
        return out.splitlines()[-1] if out else ""


# -- the load --------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw; shared by the client threads under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: set[str] = field(default_factory=set)
    """Request ids answered 200 (x-request-id)."""
    streaming: int = 0
    """Streams with a first token, not yet ended."""
    completed: int = 0
    cut: int = 0
    """Streams cut by the kill: the connection lost, or an SSE error event naming the replica."""
    refused: list[str] = field(default_factory=list)
    """Any other failure: a 429, a 5xx, an error that is not the kill's."""
    done_after: dict[int, int] = field(default_factory=dict)
    """Requests completed per client since the restart (`mark_restart`)."""
    restarted: bool = False

    def mark_restart(self) -> None:
        with self.lock:
            self.restarted = True
            self.done_after.clear()


class Load:
    """`n` threads, each streaming one chat completion after another until stopped."""

    def __init__(self, url: str, key: str, n: int, max_tokens: int, target: str) -> None:
        self.url, self.key, self.n, self.max_tokens = url, key, n, max_tokens
        self.gateway_killed = target == "gateway"
        self.tally = Tally()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(n)
        ]
        self.down = threading.Event()
        """Set while the gateway is known to be down: clients wait instead of retrying."""

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=180)
            if t.is_alive():
                raise CheckFailed("a client did not finish its request within 180 s")

    def _client(self, i: int) -> None:
        client = openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=self.key, max_retries=0, timeout=120
        )
        n = 0
        while not self._stop.is_set():
            if self.down.is_set():
                self._stop.wait(0.05)  # the gateway is being restarted
                continue
            n += 1
            self._one(client, i, f"Client {i}, request {n}: tell a long story about a river.")

    def _one(self, client: openai.OpenAI, i: int, content: str) -> None:
        t = self.tally
        started = False
        try:
            with client.chat.completions.with_streaming_response.create(
                model=MODEL_ID,
                messages=[{"role": "user", "content": content}],
                max_tokens=self.max_tokens,
                stream=True,
                extra_body={"ignore_eos": True},
            ) as response:
                rid = response.headers.get("x-request-id", "")
                with t.lock:
                    t.ok.add(rid)
                for chunk in response.parse():
                    if not started and chunk.choices and chunk.choices[0].delta.content:
                        started = True
                        with t.lock:
                            t.streaming += 1
            with t.lock:
                t.completed += 1
                t.done_after[i] = t.done_after.get(i, 0) + 1
        except openai.APIStatusError as exc:  # an answer other than 200
            with t.lock:
                t.refused.append(f"{exc.status_code}: {exc.message}")
        except (openai.APIConnectionError, httpx.TransportError) as exc:
            with t.lock:  # the connection is gone: only a killed gateway may do that
                if self.gateway_killed:
                    t.cut += 1
                else:
                    t.refused.append(f"{exc.__class__.__name__}: {exc}")
        except openai.APIError as exc:  # an SSE error event: a replica that died mid-stream
            with t.lock:
                if "replica" in str(exc):
                    t.cut += 1
                else:
                    t.refused.append(str(exc))
        finally:
            if started:
                with t.lock:
                    t.streaming -= 1

    def wait_streaming(self, at_least: int, timeout: float = 120) -> None:
        wait_until(lambda: self.tally.streaming >= at_least, f"{at_least} streams", timeout)

    def wait_each_completed(self, timeout: float = 180) -> None:
        """Every client completed a request since the restart: the service serves again."""

        def each() -> bool:
            with self.tally.lock:
                return len([v for v in self.tally.done_after.values() if v > 0]) == self.n

        wait_until(each, "every client to complete a request after the restart", timeout)


# -- the checks ------------------------------------------------------------------------------


@dataclass
class Log:
    begins: set[str]
    ends: dict[str, dict[str, Any]]
    released: set[str]
    settled: set[str]
    releases: list[dict[str, Any]]


def read_log(db: Database) -> Log:
    with db.read() as s:
        rows = s.execute(
            text(
                "SELECT kind, request_id, body FROM audit_entries "
                "WHERE kind IN ('request.begin', 'request.end', :released) ORDER BY seq"
            ),
            {"released": RELEASED},
        ).all()
    log = Log(set(), {}, set(), set(), [])
    for kind, rid, body in rows:
        if kind == "request.begin":
            log.begins.add(str(rid))
        elif kind == "request.end":
            log.ends[str(rid)] = json.loads(body)
        else:
            entry = json.loads(body)
            log.releases.append(entry)
            log.released |= set(entry["released"])
            log.settled |= set(entry["settled"])
    return log


def scalar(db: Database, sql: str, **params: Any) -> Any:
    with db.read() as s:
        return s.execute(text(sql), params).scalar_one()


def instance_of(db: Database, pid: int) -> str:
    ident = scalar(db, "SELECT max(id) FROM gateway_instances WHERE pid = :pid", pid=pid)
    if ident is None:
        raise CheckFailed(f"no gateway_instances row for the gateway's pid {pid}")
    return str(ident)


def check(db: Database, service: Service, tally: Tally) -> dict[str, Any]:
    """Checks 1, 2, 4 and 5 (3 is checked around the restart); what they found."""
    verified = service.verify()
    log = read_log(db)
    missing_begin = tally.ok - log.begins
    if missing_begin:
        raise CheckFailed(f"{len(missing_begin)} request(s) answered 200 have no begin entry: "
                          f"{sorted(missing_begin)[:5]}")  # fmt: skip
    open_begins = log.begins - set(log.ends) - log.released
    if open_begins:
        raise CheckFailed(f"{len(open_begins)} begin(s) with no end and not released as cut: "
                          f"{sorted(open_begins)[:5]}")  # fmt: skip
    requests, tokens = (
        int(v)
        for v in scalar_row(
            db,
            "SELECT coalesce(sum(requests), 0), "
            "coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage_daily",
        )
    )
    logged = sum(
        int(e.get("tokens", {}).get("prompt", 0)) + int(e.get("tokens", {}).get("completion", 0))
        for e in log.ends.values()
    )
    if (requests, tokens) != (len(log.ends), logged):
        raise CheckFailed(f"usage ({requests} requests, {tokens} tokens) does not match the log "
                          f"({len(log.ends)} request.end entries, {logged} tokens)")  # fmt: skip
    if tally.refused:
        raise CheckFailed(f"{len(tally.refused)} request(s) failed: {tally.refused[:3]}")
    return {"verify": verified, "ends": len(log.ends), "tokens": tokens, "log": log}


def scalar_row(db: Database, sql: str) -> tuple[Any, ...]:
    with db.read() as s:
        return tuple(s.execute(text(sql)).one())


# -- the loop --------------------------------------------------------------------------------


@dataclass
class Cycle:
    seconds: float
    back_s: float
    released: int
    settled: int
    cut: int
    completed: int


def run_cycle(
    n: int, args: argparse.Namespace, service: Service, db: Database, key: str, rng: random.Random
) -> Cycle:
    began = time.monotonic()
    released_before = len(read_log(db).releases)
    with Load(service.url, key, args.clients, args.max_tokens, args.target) as load:
        load.wait_streaming(args.clients)
        time.sleep(rng.uniform(0, args.jitter))  # a random moment of the streams to kill at
        in_flight = load.tally.streaming
        if args.target == "gateway":
            assert service.proc is not None
            pid = service.proc.pid
            dead = instance_of(db, pid)
            load.down.set()
            killed_at = time.monotonic()
            service.kill()
            load.tally.mark_restart()
            service.start()
            back = time.monotonic() - killed_at
            # Released at start-up: nothing of the dead gateway is left once it is ready.
            left = scalar(db, "SELECT count(*) FROM inflight WHERE owner = :o", o=dead)
            alive = scalar(db, "SELECT count(*) FROM gateway_instances WHERE id = :o", o=dead)
            if left or alive:
                raise CheckFailed(f"after the restart, the killed gateway {dead} still has "
                                  f"{left} in-flight row(s) (instance row: {alive})")  # fmt: skip
            load.down.clear()
            victim = f"gateway pid {pid}"
        else:
            name = f"worker-{n % 2}"
            before = next(r for r in service.replicas() if r["name"] == name)
            killed_at = time.monotonic()
            os.kill(int(before["pid"]), signal.SIGKILL)
            load.tally.mark_restart()

            def back_up() -> bool:
                now = next(r for r in service.replicas() if r["name"] == name)
                return bool(now["restarts"] > before["restarts"] and now["state"] == "healthy")

            wait_until(back_up, f"{name} to be restarted and healthy", 180)
            back = time.monotonic() - killed_at
            victim = f"{name} pid {before['pid']}"
        load.wait_each_completed()
    # The load has stopped: every reservation settles.
    wait_until(lambda: scalar(db, "SELECT count(*) FROM inflight") == 0,
               "the in-flight table to empty", 60)  # fmt: skip
    found = check(db, service, load.tally)
    new = found["log"].releases[released_before:]
    released = sum(len(e["released"]) for e in new)
    settled = sum(len(e["settled"]) for e in new)
    if args.target == "worker" and new:
        raise CheckFailed(f"a release without a gateway's death: {new}")
    if args.target == "gateway" and len(new) != 1:
        raise CheckFailed(f"expected one quota.released entry for the killed gateway, got {new}")
    seconds = time.monotonic() - began
    t = load.tally
    print(
        f"cycle {n + 1}/{args.cycles}: killed {victim} with {in_flight} stream(s) under way; "
        f"back in {back:.1f} s; released at start-up: {released} cut, {settled} settled from "
        f"the log; requests {t.completed} completed, {t.cut} cut, 0 refused; "
        f"begins/ends OK; inflight 0; usage {found['tokens']} tokens = log "
        f"({found['ends']} ends); {found['verify']}; {seconds:.1f} s",
        flush=True,
    )
    return Cycle(seconds, back, released, settled, t.cut, t.completed)


@contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{work / 'data' / 'sovllm.db'}"
        return
    with private_postgres() as server:
        yield create_database(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--target", choices=["gateway", "worker"], default="gateway")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--jitter", type=float, default=1.0,
                        help="kill up to this many seconds after every client streams")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cycles < 1 or args.clients < 1 or args.max_tokens < 1 or args.jitter < 0:
        parser.error("--cycles, --clients and --max-tokens must be at least 1, --jitter >= 0")
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="sovllm-kill-loop-"))
    (work / "data").mkdir(mode=0o700)
    print(f"kill loop: {args.cycles} cycles, target {args.target}, database {args.db}, "
          f"{args.clients} clients, max_tokens {args.max_tokens}, seed {seed}, in {work}",
          flush=True)  # fmt: skip
    cycles: list[Cycle] = []
    failed: str | None = None
    with ExitStack() as stack:
        url = stack.enter_context(database(args.db, work))
        service = Service(work, url, args.target)
        stack.callback(service.stop)
        try:
            first = service.start()
            db = Database(url)
            stack.callback(db.dispose)
            key = service.user_key("kill-loop", args.clients)
            print(f"started in {first:.1f} s", flush=True)
            for n in range(args.cycles):
                cycles.append(run_cycle(n, args, service, db, key, rng))
        except CheckFailed as exc:
            failed = f"cycle {len(cycles) + 1}: {exc}"
        except Exception as exc:  # anything unexpected is a failed run, with its cause
            failed = f"cycle {len(cycles) + 1}: {exc.__class__.__name__}: {exc}"
    times = [c.seconds for c in cycles] or [0.0]
    backs = [c.back_s for c in cycles] or [0.0]
    print(
        f"summary: {len(cycles)}/{args.cycles} cycles passed every check "
        f"(target {args.target}, {args.db}, seed {seed}); per cycle {min(times):.1f}/"
        f"{statistics.median(times):.1f}/{max(times):.1f} s (min/median/max); back up in "
        f"{statistics.median(backs):.1f} s median; {sum(c.completed for c in cycles)} requests "
        f"completed, {sum(c.cut for c in cycles)} cut by the kills; released at start-up: "
        f"{sum(c.released for c in cycles)} cut, {sum(c.settled for c in cycles)} settled",
        flush=True,
    )
    if failed is not None:
        print(f"FAILED {failed}\nserver log and data kept in {work}", flush=True)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
