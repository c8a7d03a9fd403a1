"""What one bench request leaves behind: its times, its token counts, its outcome. The client
fills it in (`client.py`); the metrics and the report read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "error", "incomplete"]


@dataclass
class RequestRecord:
    """One request's life. Times are perf_counter seconds; None where it never got there."""

    id: int
    scheduled: float
    output_tokens_target: int
    prompt_tokens_target: int | None = None
    user: int | None = None
    conversation: int = 0
    turn: int = 1
    warmup: bool = False
    sent: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    end: float | None = None
    chunk_times: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    """Prompt tokens the server took from its prefix cache (usage.prompt_tokens_details)."""
    output_tokens: int | None = None
    token_source: Literal["usage", "chunks"] | None = None
    finish_reason: str | None = None
    response_id: str | None = None
    """The server's completion id, to match this row with the server's audit log."""
    http_status: int | None = None
    status: Status = "incomplete"
    error_type: str | None = None
    error: str | None = None
    text: str = ""

    def fail(self, error_type: str, message: str) -> None:
        self.status = "error"
        self.error_type = error_type
        self.error = message[:500]
