"""DNS discovery against a real DNS server on loopback (dnslib) whose answers change during the
test, with replicas that are real TCP listeners on loopback addresses (127.0.0.x): a newcomer
joins once its probe connects, a vanished one leaves, a failed lookup changes nothing."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from sovllm.pool.discovery import (
    Change,
    DnsDiscovery,
    DnsTarget,
    ResolveError,
    parse_answer,
    system_resolve,
)
from tests.conftest import free_port

NAME = "vllm-llama-3-3-70b.sovllm.svc.cluster.local"


@dataclass
class Answers(BaseResolver):  # type: ignore[misc]
    """What the server says, changed by the test while discovery polls."""

    addresses: list[str] = field(default_factory=list)
    rcode: int = RCODE.NOERROR
    asked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        with self.lock:
            self.asked += 1
            if self.rcode != RCODE.NOERROR:
                reply.header.rcode = self.rcode
                return reply
            if str(request.q.qname).rstrip(".") != NAME:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for address in self.addresses:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=0))
        return reply

    def set(self, *addresses: str, rcode: int = RCODE.NOERROR) -> None:
        with self.lock:
            self.addresses, self.rcode = list(addresses), rcode


@pytest.fixture
def dns() -> Iterator[tuple[Answers, tuple[str, int]]]:
    answers = Answers()
    port = free_port()
    server = DNSServer(
        answers, address="127.0.0.1", port=port, logger=DNSLogger(logf=lambda _: None)
    )
    server.start_thread()
    try:
        yield answers, ("127.0.0.1", port)
    finally:
        server.stop()


async def connects(member: str) -> bool:
    """The probe: a TCP connection to the replica's port (the pool's probe asks /health)."""
    host, port = member.rsplit(":", 1)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


class Replicas:
    """TCP listeners on 127.0.0.x, all on one port, started and stopped by the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.servers: dict[str, asyncio.Server] = {}

    async def up(self, host: str) -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        self.servers[host] = await asyncio.start_server(answer, host, self.port)

    async def down(self, host: str) -> None:
        server = self.servers.pop(host)
        server.close()
        await server.wait_closed()

    def member(self, host: str) -> str:
        return f"{host}:{self.port}"


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    r = Replicas()
    yield r
    for host in list(r.servers):
        await r.down(host)


def target(server: tuple[str, int], port: int, interval_s: float = 5.0) -> DnsTarget:
    return DnsTarget(NAME, port, interval_s=interval_s, nameserver=server, timeout_s=0.5)


async def test_newcomers_join_after_their_probe_and_vanished_ones_leave(
    dns: tuple[Answers, tuple[str, int]], replicas: Replicas
) -> None:
    answers, server = dns
    found = DnsDiscovery(target(server, replicas.port), connects)
    await replicas.up("127.0.0.2")
    answers.set("127.0.0.2", "127.0.0.3")  # .3 is in DNS but not listening yet
    change = await found.poll()
    assert change == Change(joined=frozenset({replicas.member("127.0.0.2")}))
    assert found.members == {replicas.member("127.0.0.2")}

    await replicas.up("127.0.0.3")  # its probe passes now: it joins at the next round
    assert await found.poll() == Change(joined=frozenset({replicas.member("127.0.0.3")}))
    assert await found.poll() == Change()  # nothing changed

    answers.set("127.0.0.3")  # .2's pod is no longer ready
    assert await found.poll() == Change(left=frozenset({replicas.member("127.0.0.2")}))
    assert found.members == {replicas.member("127.0.0.3")}


async def test_a_failed_lookup_keeps_the_replicas(
    dns: tuple[Answers, tuple[str, int]], replicas: Replicas
) -> None:
    answers, server = dns
    await replicas.up("127.0.0.2")
    found = DnsDiscovery(target(server, replicas.port), connects)
    answers.set("127.0.0.2")
    assert (await found.poll()).joined
    answers.set(rcode=RCODE.SERVFAIL)
    assert await found.poll() == Change()
    silent = DnsDiscovery(target(("127.0.0.1", free_port()), replicas.port), connects)
    silent.members = found.members
    assert await silent.poll() == Change()  # no server there: a timeout, not an empty group
    assert silent.members == found.members == {replicas.member("127.0.0.2")}
    # NXDOMAIN (the headless Service has no ready pod) does empty the group.
    answers.set(rcode=RCODE.NXDOMAIN)
    assert await found.poll() == Change(left=frozenset({replicas.member("127.0.0.2")}))


async def test_run_follows_the_answers_as_they_change(
    dns: tuple[Answers, tuple[str, int]], replicas: Replicas
) -> None:
    answers, server = dns
    for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        await replicas.up(host)
    changes: asyncio.Queue[Change] = asyncio.Queue()
    failed_once = False

    async def apply(change: Change) -> None:
        nonlocal failed_once
        if change.left and not failed_once:  # the pool failing once: the change comes again
            failed_once = True
            raise RuntimeError("pool busy")
        await changes.put(change)

    answers.set("127.0.0.2", "127.0.0.3")
    found = DnsDiscovery(target(server, replicas.port, interval_s=0.02), connects)
    task = asyncio.create_task(found.run(apply))
    try:
        first = await asyncio.wait_for(changes.get(), 10)
        assert first.joined == {replicas.member("127.0.0.2"), replicas.member("127.0.0.3")}
        answers.set("127.0.0.3", "127.0.0.4")  # a scale event: one pod replaced
        second = await asyncio.wait_for(changes.get(), 10)
        assert second == Change(
            joined=frozenset({replicas.member("127.0.0.4")}),
            left=frozenset({replicas.member("127.0.0.2")}),
        )
        assert failed_once and found.members == {
            replicas.member("127.0.0.3"),
            replicas.member("127.0.0.4"),
        }
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_a_truncated_or_foreign_answer_is_a_failure() -> None:
    reply = DNSRecord.question(NAME).reply()
    reply.add_answer(RR(NAME, QTYPE.A, rdata=A("10.0.0.1")))
    ident = reply.header.id
    assert parse_answer(reply.pack(), ident) == {"10.0.0.1"}
    with pytest.raises(ResolveError, match="another query"):
        parse_answer(reply.pack(), (ident + 1) % 65536)
    reply.header.tc = 1
    with pytest.raises(ResolveError, match="truncated"):
        parse_answer(reply.pack(), ident)
    with pytest.raises(ResolveError, match="malformed"):
        parse_answer(reply.pack()[:5], ident)


async def test_the_system_resolver_path() -> None:
    assert await system_resolve("localhost", 8000) >= {"127.0.0.1"}
    found = DnsDiscovery(DnsTarget("localhost", 8000), lambda member: _true())
    assert "127.0.0.1:8000" in (await found.poll()).joined


async def _true() -> bool:
    return True


def test_loopback_aliases_are_usable() -> None:
    """The test's replicas live on 127.0.0.2-4: Linux routes all of 127/8 to loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.3", 0))
