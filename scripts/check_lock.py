#!/usr/bin/env python3
"""Check, offline, that requirements.lock still matches pyproject.toml (docs/reliability.md,
"Supply chain"); scripts/test.sh runs it before pytest, so CI fails on a stale lock.

The lock is what `make lock` compiles with uv from pyproject.toml's dependencies and its `dev`
extra. It is stale when pyproject.toml:
- requires a package the lock does not pin (a dependency added, or one an extra of a
  dependency brings: read from that package's installed metadata, so offline too);
- requires a version the lock's pin does not satisfy (a range tightened, a pin moved);
- no longer requires a package the lock pins as one of its direct requirements (uv's
  `# via sovllm (pyproject.toml)` annotation), so `make serve` would still install it.
Every pin must also carry at least one `--hash`, or pip's hash-checking mode refuses the file.

Each problem is one line naming the package; the exit code is 1 then, 2 for an unreadable file.
No network: a recompile would need PyPI and would move with PyPI, this check does not.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
EXTRA = "dev"
# The platform the lock is compiled for (`make lock`: --python-version 3.11, x86_64 Linux):
# a requirement whose marker excludes it need not be pinned.
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*;.*?)?\s*\\?$")
_HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}")
_DIRECT = "sovllm (pyproject.toml)"


class LockFileError(Exception):
    """A file cannot be read or parsed; the message names it."""


@dataclass
class Pin:
    version: str
    hashes: int = 0
    via: set[str] = field(default_factory=set)


def read_requirements(pyproject: Path) -> list[tuple[Requirement, str]]:
    """pyproject.toml's dependencies and its `dev` extra, self-references (`sovllm[presidio]`)
    expanded, each with where it came from."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        extras: dict[str, list[str]] = project.get("optional-dependencies", {})
        name = canonicalize_name(project["name"])
        found: list[tuple[Requirement, str]] = []
        todo = [("dependencies", s) for s in project.get("dependencies", [])]
        todo += [(f"[{EXTRA}]", s) for s in extras.get(EXTRA, [])]
        seen_extras = {EXTRA}
        while todo:
            where, spec = todo.pop(0)
            req = Requirement(spec)
            if canonicalize_name(req.name) != name:
                found.append((req, where))
                continue
            for extra in sorted(req.extras - seen_extras):
                seen_extras.add(extra)
                todo += [(f"[{extra}]", s) for s in extras.get(extra, [])]
    except OSError as exc:
        raise LockFileError(f"cannot read {pyproject}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, KeyError, InvalidRequirement) as exc:
        raise LockFileError(f"{pyproject}: cannot read its dependencies: {exc}") from None
    return found


def read_lock(lock: Path) -> dict[str, Pin]:
    """The lock's pins by canonical name, each with its hash count and `# via` parents."""
    try:
        lines = lock.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LockFileError(f"cannot read {lock}: {exc.strerror or exc}") from None
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for n, line in enumerate(lines, 1):
        if not line.strip() or (line.startswith("#") and current is None):
            continue
        if m := _PIN.match(line):
            current = pins.setdefault(canonicalize_name(m.group(1)), Pin(m.group(2)))
        elif current is not None and _HASH.match(line):
            current.hashes += 1
        elif current is not None and line.lstrip().startswith("#"):
            parent = line.lstrip("# ").removeprefix("via").strip()
            if parent:
                current.via.add(parent)
        elif not line.startswith("#"):
            raise LockFileError(f"{lock}:{n}: not a pinned requirement (name==version): {line}")
    if not pins:
        raise LockFileError(f"{lock} pins nothing")
    return pins


def extra_requirements(req: Requirement) -> list[Requirement]:
    """What `req`'s extras add (`psycopg[binary]`: psycopg-binary), from the metadata of the
    installed package, offline; none when it is not installed."""
    if not req.extras:
        return []
    try:
        declared = importlib.metadata.requires(req.name) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    added = []
    for spec in declared:
        dep = Requirement(spec)
        if dep.marker is None or dep.marker.evaluate({**TARGET, "extra": ""}):
            continue  # not extra-only: the package's own dependency, the resolver's business
        if any(dep.marker.evaluate({**TARGET, "extra": e}) for e in req.extras):
            added.append(dep)
    return added


def problems(pyproject: Path, lock: Path) -> tuple[list[str], int, int]:
    """Each mismatch as one line, the number of requirements and of pins."""
    reqs = read_requirements(pyproject)
    pins = read_lock(lock)
    found: list[str] = []
    wanted: set[str] = set()

    def check(req: Requirement, where: str) -> None:
        pin = pins.get(canonicalize_name(req.name))
        wants = f"pyproject.toml {where} requires {req.name}{req.specifier}"
        if pin is None:
            found.append(f"{wants}: {lock.name} has no pin for it")
        elif not req.specifier.contains(pin.version, prereleases=True):
            found.append(f"{wants}: {lock.name} pins {req.name}=={pin.version}")

    for req, where in reqs:
        if req.marker is not None and not req.marker.evaluate({**TARGET, "extra": ""}):
            continue
        wanted.add(canonicalize_name(req.name))
        check(req, where)
        extras = ",".join(sorted(req.extras))
        for dep in extra_requirements(req):
            check(dep, f"{where} (through {req.name}[{extras}])")
    for name, pin in sorted(pins.items()):
        if _DIRECT in pin.via and name not in wanted:
            found.append(
                f"{lock.name} pins {name}=={pin.version} as a requirement of pyproject.toml, "
                "which no longer lists it"
            )
        if pin.hashes == 0:
            found.append(f"{lock.name} pins {name}=={pin.version} without a --hash")
    return found, len(wanted), len(pins)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    args = parser.parse_args(argv)
    try:
        found, n_reqs, n_pins = problems(args.pyproject, args.lock)
    except LockFileError as exc:
        print(f"check_lock: {exc}", file=sys.stderr)
        return 2
    if found:
        for line in found:
            print(f"check_lock: {line}", file=sys.stderr)
        print(
            f"check_lock: {args.lock.name} no longer matches {args.pyproject.name}: "
            "run `make lock` and commit the result",
            file=sys.stderr,
        )
        return 1
    print(f"{args.lock.name} matches {args.pyproject.name}: {n_reqs} requirements, {n_pins} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
