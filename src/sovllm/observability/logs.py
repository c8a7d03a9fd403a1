"""The process's log output: plain text, or one JSON object a line (`log_format: json`).

A JSON line carries the request's id and the trace's id, so an operator can go from a log line
to the request's audit entries and to its trace. Both come from the context of the code that
logs: the request id a route binds (`bind_request`), the trace id of the current span (none
while tracing is off). What a line says is the log call's message, never more: no record
attributes are copied in, so nothing a caller passed along for formatting leaks into it.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

from opentelemetry import trace

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_request_id: ContextVar[str | None] = ContextVar("sovllm_request_id", default=None)


def bind_request(request_id: str) -> None:
    """Name the request the current task works for, in every log line it writes from now on."""
    _request_id.set(request_id)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, trace and span id."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": _request_id.get(),
            "trace_id": None,
            "span_id": None,
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = trace.format_trace_id(span.trace_id)
            line["span_id"] = trace.format_span_id(span.span_id)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)  # newlines escaped: one event, one line


def configure(level: str, fmt: LogFormat) -> None:
    """The root logger's output; uvicorn's loggers propagate to it (run uvicorn with
    `log_config=uvicorn_config(fmt)`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def uvicorn_config(fmt: LogFormat) -> dict[str, object] | None:
    """uvicorn's own log configuration: its default (text) one, or, for JSON, none at all, so
    its loggers (start-up, errors, the access log) reach the root logger's JSON handler."""
    if fmt == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
