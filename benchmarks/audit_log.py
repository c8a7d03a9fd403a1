"""Audit log speed: sustained appends with group commit, and verification of a large log.

    .venv/bin/python benchmarks/audit_log.py [--appends 20000] [--verify 100000]

Appends come from 64 threads at once (as from many concurrent requests) into one SQLite file;
the baseline is the same number of appends committed one by one (no group commit). Then a log
of --verify entries is verified end to end (every leaf rehashed, the tree recomputed, every
signed checkpoint checked).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.verify import verify_database
from sovllm.store.db import Database
from sovllm.store.migrate import upgrade

FIELDS = {
    "principal": {"tenant": "radiology", "key_id": "key_0123456789abcdef", "role": "user"},
    "route": "/v1/chat/completions",
    "tokens": {"prompt": 412, "completion": 128},
}


def fresh(tmp: Path, name: str) -> tuple[Database, Signer]:
    db = Database(f"sqlite:///{tmp / name}.db")
    upgrade(db)
    return db, Signer.load_or_create(tmp / f"{name}.key", "bench")


def grouped(tmp: Path, n: int) -> float:
    db, signer = fresh(tmp, "grouped")
    log = AuditLog(db, signer, "bench", checkpoint_every=1000)
    log.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=64) as pool:
        futures = list(pool.map(lambda i: log.append("request.end", FIELDS, f"r{i}"), range(n)))
        for f in futures:
            f.result()
    elapsed = time.perf_counter() - start
    log.close()
    return n / elapsed


def one_by_one(tmp: Path, n: int) -> float:
    db, signer = fresh(tmp, "single")
    log = AuditLog(db, signer, "bench", checkpoint_every=10**9)  # no writer thread
    start = time.perf_counter()
    for i in range(n):
        log.append("request.end", FIELDS, f"r{i}").result()
    return n / (time.perf_counter() - start)


def verify_time(tmp: Path, n: int) -> tuple[float, int]:
    db, signer = fresh(tmp, "verify")
    log = AuditLog(db, signer, "bench", checkpoint_every=10_000)
    log.start()
    batch = 5000
    for lo in range(0, n, batch):
        futures = [
            log.append("request.end", FIELDS, f"r{i}") for i in range(lo, min(n, lo + batch))
        ]
        futures[-1].result()
    log.close()
    start = time.perf_counter()
    report = verify_database(db, signer.verifier)
    elapsed = time.perf_counter() - start
    assert report.ok, report.problems
    return elapsed, report.checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--verify", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    single = one_by_one(tmp, min(args.appends, 2000))
    group = grouped(tmp, args.appends)
    print(f"appends, one commit each:   {single:8.0f} entries/s")
    print(f"appends, group commit (64): {group:8.0f} entries/s  ({group / single:.1f}x)")
    seconds, checkpoints = verify_time(tmp, args.verify)
    print(f"verify {args.verify} entries ({checkpoints} checkpoints): {seconds:.2f} s")
    print()
    print(f"{'PASS' if group >= 2000 else 'FAIL'}: >= 2,000 appended entries/s on SQLite")
    print(f"{'PASS' if seconds < 10 else 'FAIL'}: verification of {args.verify} entries < 10 s")


if __name__ == "__main__":
    main()
