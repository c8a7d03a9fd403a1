"""Audit log speed: sustained appends with group commit, and verification of a large log.

    .venv/bin/python benchmarks/audit_log.py [--appends 20000] [--verify 100000] [--rounds 3]

Appends come from 64 threads at once (as from many concurrent requests) into one SQLite file;
the baseline is the same number of appends committed one by one (no group commit). Both run
under `audit.durability` process_crash (synchronous=NORMAL) and power_loss (synchronous=FULL),
interleaved, --rounds times; medians and ranges are printed. Then a log of --verify entries is
verified end to end (every leaf rehashed, the tree recomputed, every signed checkpoint checked).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.verify import verify_database
from sovllm.store.db import Database, Durability
from sovllm.store.migrate import upgrade

FIELDS = {
    "principal": {"tenant": "radiology", "key_id": "key_0123456789abcdef", "role": "user"},
    "route": "/v1/chat/completions",
    "tokens": {"prompt": 412, "completion": 128},
}


def fresh(
    tmp: Path, name: str, durability: Durability = "process_crash"
) -> tuple[Database, Signer]:
    db = Database(f"sqlite:///{tmp / name}.db", durability)
    upgrade(db)
    return db, Signer.load_or_create(tmp / f"{name}.key", "bench")


def grouped(tmp: Path, n: int, durability: Durability = "process_crash") -> float:
    db, signer = fresh(tmp, f"grouped-{durability}-{time.monotonic_ns()}", durability)
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


def one_by_one(tmp: Path, n: int, durability: Durability = "process_crash") -> float:
    db, signer = fresh(tmp, f"single-{durability}-{time.monotonic_ns()}", durability)
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


def spread(values: list[float]) -> str:
    return (
        f"{statistics.median(values):8.0f} entries/s  (range {min(values):.0f}-{max(values):.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--verify", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    modes: tuple[Durability, ...] = ("process_crash", "power_loss")
    single: dict[str, list[float]] = {m: [] for m in modes}
    group: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):  # interleaved: a slow moment of the disk hits both modes
        for mode in modes:
            single[mode].append(one_by_one(tmp, min(args.appends, 2000), mode))
            group[mode].append(grouped(tmp, args.appends, mode))
    for mode in modes:
        print(f"{mode}: appends, one commit each:   {spread(single[mode])}")
        print(f"{mode}: appends, group commit (64): {spread(group[mode])}")
    ratio = statistics.median(group["power_loss"]) / statistics.median(group["process_crash"])
    print(f"power_loss / process_crash, group commit: {ratio:.2f}")
    seconds, checkpoints = verify_time(tmp, args.verify)
    print(f"verify {args.verify} entries ({checkpoints} checkpoints): {seconds:.2f} s")
    print()
    for mode in modes:
        rate = statistics.median(group[mode])
        print(f"{'PASS' if rate >= 2000 else 'FAIL'}: >= 2,000 appended entries/s ({mode})")
    print(f"{'PASS' if seconds < 10 else 'FAIL'}: verification of {args.verify} entries < 10 s")


if __name__ == "__main__":
    main()
