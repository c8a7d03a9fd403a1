"""Which replica a request goes to. Pure functions over the replicas' load, easy to test.

Every policy returns the healthy replicas in order of preference: the router tries the first,
and on a failure before the first token, the next.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, TypeVar

from sovllm.engines.base import GenerationRequest
from sovllm.pool.settings import RoutingSettings


class Loaded(Protocol):
    name: str

    @property
    def outstanding(self) -> int:
        """Requests this gateway has in flight on the replica."""
        ...


R = TypeVar("R", bound=Loaded)


def affinity_key(
    request: GenerationRequest, user: str | None, session: str | None, mode: str
) -> str | None:
    """What keeps a conversation on one replica: its session, its user, or its first turn.

    The first turn (system prompt and first user message) is the same in every later turn of
    a conversation, so its hash follows the conversation without any client cooperation.
    """
    if mode in ("auto", "session") and session:
        return "s:" + session
    if mode in ("auto", "user") and user:
        return "u:" + user
    if mode in ("auto", "prefix"):
        if request.messages is not None:
            head = []  # leading system messages, then the first user message
            for m in request.messages:
                head.append(f"{m.role}\x01{m.content}")
                if m.role not in ("system", "developer"):
                    break
            return "p:" + "\x00".join(head)
        if isinstance(request.prompt, str):
            return "p:" + request.prompt[:256]
        if request.prompt is not None:
            return "p:" + ",".join(map(str, list(request.prompt)[:64]))
    return None


def _score(key: str, name: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


HOMES_KEPT = 100_000
"""Conversations whose replica the policy remembers (least recently routed forgotten first)."""


class Policy:
    """Orders the healthy replicas for one request, by the configured policy."""

    def __init__(self, settings: RoutingSettings) -> None:
        self.settings = settings
        self._turn = itertools.count()
        self._homes: OrderedDict[str, str] = OrderedDict()

    def order(self, replicas: Sequence[R], key: str | None) -> list[R]:
        if not replicas:
            return []
        policy = self.settings.policy
        if policy == "round_robin":
            start = next(self._turn) % len(replicas)
            return [*replicas[start:], *replicas[:start]]
        if policy == "prefix_affinity" and key is not None:
            return self._affinity(replicas, key)
        # least_outstanding; ties go round robin so an idle pool still spreads requests.
        start = next(self._turn) % len(replicas)
        rotated = [*replicas[start:], *replicas[:start]]
        return sorted(rotated, key=lambda r: r.outstanding)

    def remember(self, key: str | None, replica: str) -> None:
        """The replica a conversation's request went to: its KV cache is there now."""
        if key is None or self.settings.policy != "prefix_affinity":
            return
        self._homes[key] = replica
        self._homes.move_to_end(key)
        if len(self._homes) > HOMES_KEPT:
            self._homes.popitem(last=False)

    def _affinity(self, replicas: Sequence[R], key: str) -> list[R]:
        """A conversation goes back to the replica that holds its cache, within a load bound.

        A new conversation goes to the least loaded replica, ties broken by rendezvous hashing
        on its key (so gateways that see the same load agree, and a replica's departure moves
        only its own keys). A later turn goes to the conversation's home, unless the home has
        more than `load_bound` times the mean load (+1) in flight: then a hot key spills to the
        least loaded replica instead of piling up on one. Measured (docs/performance.md):
        hashing alone left 16 conversations split 10/6 over two replicas, queueing on one.
        """
        ranked = sorted(replicas, key=lambda r: (r.outstanding, -_score(key, r.name)))
        home = next((r for r in replicas if r.name == self._homes.get(key)), None)
        if home is None:
            return ranked
        total = sum(r.outstanding for r in replicas)
        bound = self.settings.load_bound * (total + 1) / len(replicas) + 1
        if home.outstanding >= bound:
            return ranked
        return [home, *(r for r in ranked if r is not home)]
