"""Replicas the gateway starts itself (sovllm workers, vLLM servers), kept alive.

A child that dies is restarted after a backoff that doubles up to a minute and resets once the
child has run for a while. At start-up the gateway waits for every child to answer its health
check; one that exits first, or never answers, stops the start with its name and the last
lines of its log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger("sovllm.pool")
MAX_BACKOFF_S = 60.0
PARENT_ENV = "SOVLLM_PARENT_PID"
STABLE_AFTER_S = 30.0


class ChildStartError(Exception):
    pass


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    """Only what the child gets beyond the gateway's own environment."""
    health_url: str
    log_path: Path
    verify: ssl.SSLContext | bool = True
    """How the health check trusts an HTTPS child (a worker's pinned certificate)."""
    on_exit: Callable[[str], None] | None = None
    """Called from the watcher thread when the child dies: the replica leaves the pool."""
    restarts: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _watcher: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return  # stopped while its restart was due
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as out:
                # A session of its own: the terminal's Ctrl-C reaches the gateway, which
                # drains and then stops its children, rather than killing them mid-request.
                # PARENT_ENV lets a sovllm worker exit when the gateway dies without a word.
                env = {**os.environ, **self.env, PARENT_ENV: str(os.getpid())}
                self._proc = subprocess.Popen(
                    self.argv,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the child answers its health check, or raise ChildStartError."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ChildStartError(
                    f"replica '{self.name}' exited with code {code} while starting: {self.tail()}"
                )
            try:
                answer = httpx.get(self.health_url, timeout=2, trust_env=False, verify=self.verify)
                if answer.status_code == 200:
                    return
            except Exception:  # not up yet; below httpx, a dying peer can raise other types
                pass
            if time.monotonic() > deadline:
                self.stop(5)
                raise ChildStartError(
                    f"replica '{self.name}' did not become healthy within {timeout_s:.0f} s: "
                    f"{self.tail()}"
                )
            time.sleep(0.2)  # polling a child process that has no way to signal readiness

    def tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        useful = [t for t in text if t.strip()][-lines:]
        return " | ".join(useful) or "(empty log)"

    def supervise(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name=f"watch-{self.name}", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            assert self._proc is not None
            started = time.monotonic()
            code = self._proc.wait()
            _kill_group(self._proc.pid)
            if self._stopping.is_set():
                return
            log.error("replica %s exited with code %s: %s", self.name, code, self.tail())
            if self.on_exit is not None:
                self.on_exit(f"the process exited with code {code}")
            if time.monotonic() - started > STABLE_AFTER_S:
                backoff = 1.0
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            self.restarts += 1
            log.info("restarting replica %s (restart %d)", self.name, self.restarts)
            self.start()

    def stop(self, grace_s: float) -> None:
        """SIGTERM (the child drains), then SIGKILL after the grace period."""
        with self._lock:  # no restart can slip in between
            self._stopping.set()
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _kill_group(proc.pid)


def _kill_group(pid: int) -> None:
    """SIGKILL what a dead child left behind. A child runs in a session of its own, so its
    process group is its pid; a vLLM killed or crashed leaves its engine core and workers
    running in that group (gigabytes each) unless they go with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing was left
        os.killpg(pid, signal.SIGKILL)


def stop_all(children: Sequence[Child], grace_s: float) -> None:
    threads = [threading.Thread(target=c.stop, args=(grace_s,)) for c in children]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
