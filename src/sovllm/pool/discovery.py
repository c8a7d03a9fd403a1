"""Replica discovery by DNS: the A records of a Kubernetes headless Service, one per ready pod.

Every `interval_s` the name is resolved; an address that appears joins once a health probe
passes (until then it is asked again at the next round), an address that vanishes leaves (the
pool drains it: requests under way finish, no new one goes there). A failed resolution
(timeout, SERVFAIL, a truncated answer) changes nothing: the replicas known stay; only an
answer that the name has no address (NXDOMAIN, or no A record: no pod is ready) empties the
group.

Names are resolved by the system resolver (`getaddrinfo`, so the pod's search domains apply),
or, with `nameserver`, by a small UDP client that asks that server directly (A records only,
one 512-byte answer: about 30 addresses).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("sovllm.pool.discovery")

_A = 1
_IN = 1
_NXDOMAIN = 3
_NO_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


class ResolveError(Exception):
    """The name could not be resolved this time (not: it has no address)."""


@dataclass(frozen=True)
class DnsTarget:
    name: str
    port: int
    interval_s: float = 5.0
    # host, port of a DNS server to ask directly; None: the system resolver.
    nameserver: tuple[str, int] | None = None
    timeout_s: float = 2.0


@dataclass(frozen=True)
class Change:
    """Members as host:port: those that joined after their probe passed, those that left."""

    joined: frozenset[str] = field(default_factory=frozenset)
    left: frozenset[str] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(self.joined or self.left)


def _query(name: str, ident: int) -> bytes:
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split(".")
    )
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", _A, _IN)
    )


def _skip_name(data: bytes, at: int) -> int:
    while True:
        length = data[at]
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return at + 2
        if length == 0:
            return at + 1
        at += 1 + length


def parse_answer(data: bytes, ident: int) -> frozenset[str]:
    """The A records of a DNS response; raises ResolveError for a failed or truncated one."""
    try:
        got, flags, qdcount, ancount = struct.unpack("!HHHH", data[:8])
        if got != ident:
            raise ResolveError("an answer to another query")
        if flags & 0x0200:
            raise ResolveError("a truncated answer (more addresses than one UDP answer holds)")
        rcode = flags & 0x000F
        if rcode == _NXDOMAIN:
            return frozenset()
        if rcode != 0:
            raise ResolveError(f"the server answered with error code {rcode}")
        at = 12
        for _ in range(qdcount):
            at = _skip_name(data, at) + 4
        found = set()
        for _ in range(ancount):
            at = _skip_name(data, at)
            rtype, rclass, _ttl, length = struct.unpack("!HHIH", data[at : at + 10])
            at += 10
            if rtype == _A and rclass == _IN and length == 4:
                found.add(str(ipaddress.IPv4Address(bytes(data[at : at + 4]))))
            at += length
        return frozenset(found)
    except (IndexError, struct.error) as exc:
        raise ResolveError(f"a malformed answer ({exc})") from None


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def ask(name: str, server: tuple[str, int], timeout_s: float) -> frozenset[str]:
    """The A records of `name`, asked of `server` over UDP."""
    ident = int.from_bytes(os.urandom(2), "big")
    loop = asyncio.get_running_loop()
    transport, reply = await loop.create_datagram_endpoint(_Reply, remote_addr=server)
    try:
        transport.sendto(_query(name, ident))
        data = await asyncio.wait_for(reply.answer, timeout_s)
    except (TimeoutError, OSError) as exc:
        raise ResolveError(f"no answer from {server[0]}:{server[1]} ({exc!r})") from None
    finally:
        transport.close()
    return parse_answer(data, ident)


async def system_resolve(name: str, port: int) -> frozenset[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in _NO_NAME:
            return frozenset()
        raise ResolveError(f"{name}: {exc.strerror}") from None
    return frozenset(str(info[4][0]) for info in infos)


Probe = Callable[[str], Awaitable[bool]]
Apply = Callable[[Change], Awaitable[None]]


class DnsDiscovery:
    """The members of one replica group as DNS sees them, and what changed since last time."""

    def __init__(self, target: DnsTarget, probe: Probe) -> None:
        self.target = target
        self._probe = probe
        self.members: frozenset[str] = frozenset()

    async def resolve(self) -> frozenset[str]:
        t = self.target
        if t.nameserver is not None:
            hosts = await ask(t.name, t.nameserver, t.timeout_s)
        else:
            hosts = await asyncio.wait_for(system_resolve(t.name, t.port), t.timeout_s)
        return frozenset(f"{host}:{t.port}" for host in hosts)

    async def _passes(self, member: str) -> bool:
        try:
            return await self._probe(member)
        except Exception:  # a probe that raises is a probe that failed; the next round asks again
            log.warning("discovery: the probe of %s failed", member, exc_info=True)
            return False

    async def poll(self) -> Change:
        """One round: resolve, probe the newcomers, and take the change into `members`."""
        try:
            seen = await self.resolve()
        except (ResolveError, TimeoutError) as exc:
            name, kept = self.target.name, len(self.members)
            log.warning("discovery: %s not resolved, keeping %d replicas: %s", name, kept, exc)
            return Change()
        new = sorted(seen - self.members)
        passed = await asyncio.gather(*(self._passes(m) for m in new))
        change = Change(
            joined=frozenset(m for m, ok in zip(new, passed, strict=True) if ok),
            left=self.members - seen,
        )
        self.members = (self.members - change.left) | change.joined
        return change

    async def run(self, apply: Apply) -> None:
        """Poll every interval_s and hand each change to `apply`, until cancelled. A change
        `apply` fails on is not taken: the next round finds it again."""
        while True:
            before = self.members
            try:
                change = await self.poll()
            except Exception:  # a resolver bug must not stop the group following its name
                log.exception("discovery: resolving %s failed", self.target.name)
                change = Change()
            if change:
                try:
                    await apply(change)
                except Exception:
                    log.exception("discovery: applying %s failed; retrying next round", change)
                    self.members = before
            await asyncio.sleep(self.target.interval_s)
