"""`server.*`: what one HTTP request may be, its size and how long it may take to arrive.

Outside the layers, like config.py (which includes it): the API layer enforces the body's size
(api/limits.py), uvicorn's protocol the rest (serve/http_limits.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServerSettings(BaseModel):
    """What one HTTP request may be: its size and how long it may take to arrive."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest request body, in bytes; larger ones get 413 before they are read.",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Largest request line and headers together, in bytes; larger get 431.",
    )
    header_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Time a connection has, from its first byte (or from opening), to send a "
        "request's line and headers; then it is answered 408 and closed (slow clients).",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Time a request's body has to arrive in full once its headers are in; "
        "then it is answered 408 (if nothing was answered yet) and closed.",
    )
