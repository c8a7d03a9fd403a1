"""Who is calling, as the HTTP request says: the key presented and the source address."""

from __future__ import annotations

from fastapi import Request


def bearer(request: Request) -> str | None:
    """The API key: `Authorization: Bearer …`, or OpenAI-style `x-api-key`."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key")


def source_of(request: Request) -> str:
    """The client's address: the connection's peer, or what a trusted proxy says it is
    (`security.trusted_proxies`; uvicorn rewrites the peer only for those)."""
    return request.client.host if request.client is not None else "unknown"
