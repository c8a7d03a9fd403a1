"""Which replica a request goes to. Pure functions over the replicas' load, easy to test.

Every policy returns the healthy replicas in order of preference: the router tries the first,
and on a failure before the first token, the next.
"""

from __future__ import annotations

import hashlib
import itertools
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


class Policy:
    """Orders the healthy replicas for one request, by the configured policy."""

    def __init__(self, settings: RoutingSettings) -> None:
        self.settings = settings
        self._turn = itertools.count()

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

    def _affinity(self, replicas: Sequence[R], key: str) -> list[R]:
        """Rendezvous hashing with bounded load (as consistent hashing with bounded loads).

        A replica already above `load_bound` times the mean load (+1) is passed over, so a hot
        key spills to the next replica in its order instead of piling up on one.
        """
        ranked = sorted(replicas, key=lambda r: _score(key, r.name), reverse=True)
        total = sum(r.outstanding for r in replicas)
        bound = self.settings.load_bound * (total + 1) / len(replicas) + 1
        within = [r for r in ranked if r.outstanding < bound]
        return within + [r for r in ranked if r not in within]
