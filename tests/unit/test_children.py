"""A started replica's supervisor: what a dead child leaves behind goes with it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sovllm.pool.children import Child
from tests.conftest import wait_until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_childs_own_processes_are_killed_with_it(tmp_path: Path) -> None:
    # Like vLLM's API server with its engine core: a child that started a process of its own.
    spawned = tmp_path / "spawned.pid"
    script = f"sleep 300 & echo $! > {spawned}; wait"
    child = Child("c", ["sh", "-c", script], {}, "http://127.0.0.1:9/health", tmp_path / "c.log")
    child.start()
    try:
        wait_until(lambda: spawned.exists() and spawned.read_text().strip() != "", "the spawn")
        grandchild = int(spawned.read_text())
        assert child.pid is not None and _alive(grandchild)
        child.supervise()
        os.kill(child.pid, signal.SIGKILL)
        wait_until(lambda: not _alive(grandchild), "the child's own process to end", 10)
    finally:
        child.stop(5)
