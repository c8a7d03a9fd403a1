"""Spans encoded as an OTLP `ExportTraceServiceRequest` straight into protobuf's wire format,
and the OTLP/HTTP span exporter that sends them.

OpenTelemetry's exporter builds a protobuf object for every span, attribute and value, then
serializes the tree: about 14 microseconds a span here, and a traced request makes seven,
encoded on the batch processor's thread but under the GIL the event loop needs. Writing the
bytes directly takes about half of that (7 microseconds, docs/performance.md). The output is
the same message: the unit tests parse both encodings with `opentelemetry-proto` and compare
them, span for span.

Wire format: https://protobuf.dev/programming-guides/encoding/ ; the field numbers are those
of opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext
from opentelemetry.util.types import Attributes

_log = logging.getLogger(__name__)
_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
_fixed32 = struct.Struct("<I").pack
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _bytes(field: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes or an embedded message)."""
    tag, size = field << 3 | 2, len(payload)
    if tag < 0x80 and size < 0x80:  # most: one byte each
        return bytes((tag, size)) + payload
    return _varint(tag) + _varint(size) + payload


def _text(field: int, text: str) -> bytes:
    return _bytes(field, text.encode("utf-8", "replace"))


def _value(value: Any) -> bytes:
    """An AnyValue; its oneof member is written even when it holds the default."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _text(1, value)
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _bytes(7, value)
    if isinstance(value, Sequence):
        return _bytes(5, b"".join(_bytes(1, _value(v)) for v in value))
    if isinstance(value, Mapping):
        return _bytes(6, b"".join(_bytes(1, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"invalid type {type(value).__name__} of an attribute value")


_KEYS: dict[str, bytes] = {}
"""Each attribute key's encoded field: the keys are few and repeat in every span."""


def _key_value(key: str, value: Any) -> bytes:
    prefix = _KEYS.get(key)
    if prefix is None:
        prefix = _text(1, key)
        if len(_KEYS) < 4096:
            _KEYS[key] = prefix
    return prefix + _bytes(2, _value(value))


def _attributes(field: int, attributes: Attributes) -> bytes:
    if not attributes:
        return b""
    out = []
    for key, value in attributes.items():
        try:
            out.append(_bytes(field, _key_value(key, value)))
        except (TypeError, ValueError) as error:  # as the SDK's encoder: skip it, say so
            _log.error("Failed to encode the attribute %s: %s", key, error)
    return b"".join(out)


def _flags(parent: SpanContext | None) -> bytes:
    remote = parent is not None and parent.is_remote
    return b"\x85\x01" + _fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if remote else 0))


def _trace_state(field: int, context: SpanContext) -> bytes:
    state = context.trace_state
    return _text(field, state.to_header()) if state else b""


def _span(span: ReadableSpan) -> bytes:
    context, parent = span.get_span_context(), span.parent
    assert context is not None  # a finished span always has one
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        _trace_state(3, context),
    ]
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_text(5, span.name))
    parts.append(b"\x30" + _varint(span.kind.value + 1))  # SpanKind: the API's, shifted by one
    if span.start_time:
        parts.append(b"\x39" + _fixed64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _fixed64(span.end_time))
    parts.append(_attributes(9, span.attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        body = b"\x09" + _fixed64(event.timestamp) if event.timestamp else b""
        body += _text(2, event.name) if event.name else b""
        body += _attributes(3, event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_bytes(11, body))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
        body += _attributes(4, link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        body += b"\x35" + _fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0))
        parts.append(_bytes(13, body))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    status, code = span.status, span.status.status_code.value
    message = _text(2, status.description) if status.description else b""
    parts.append(_bytes(15, message + (b"\x18" + _varint(code) if code else b"")))
    parts.append(_flags(parent))
    return b"".join(parts)


_RESOURCES: dict[int, tuple[Resource, bytes]] = {}
"""Each resource's encoded attributes (a process has one or two), by identity: a Resource's
hash serializes its attributes to JSON, slower than encoding a span. The entry holds the
resource, so that its id cannot be reused by another."""


def _resource(resource: Resource) -> bytes:
    cached = _RESOURCES.get(id(resource))
    if cached is not None and cached[0] is resource:
        return cached[1]
    encoded = _bytes(1, _attributes(1, resource.attributes))
    if len(_RESOURCES) < 64:
        _RESOURCES[id(resource)] = (resource, encoded)
    return encoded


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return _bytes(1, b"")
    body = _text(1, scope.name) if scope.name else b""
    body += _text(2, scope.version) if scope.version else b""
    body += _attributes(3, scope.attributes)
    return _bytes(1, body)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest: spans grouped by resource, then by instrumentation scope,
    in the order first seen (as the SDK's encoder groups them)."""
    # By identity first (a Resource's hash is slow, see _RESOURCES); equal resources that are
    # distinct objects are merged after, as the SDK's encoder (which groups by equality) does.
    by_id: dict[int, tuple[Resource, list[ReadableSpan]]] = {}
    for span in spans:
        by_id.setdefault(id(span.resource), (span.resource, []))[1].append(span)
    groups: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    for resource, members in by_id.values():
        by_scope = groups.setdefault(resource, {})
        for span in members:
            by_scope.setdefault(span.instrumentation_scope or None, []).append(_span(span))
    out = []
    for resource, by_scope in groups.items():
        body = [_resource(resource)]
        for scope, encoded in by_scope.items():
            scope_spans = [_scope(scope)]
            scope_spans.extend(_bytes(2, s) for s in encoded)
            if scope is not None and scope.schema_url:
                scope_spans.append(_text(3, scope.schema_url))
            body.append(_bytes(2, b"".join(scope_spans)))
        if resource.schema_url:
            body.append(_text(3, resource.schema_url))
        out.append(_bytes(1, b"".join(body)))
    return b"".join(out)


class SpanExporter(OTLPSpanExporter):
    """OpenTelemetry's OTLP/HTTP span exporter (its transport: retries, compression, TLS,
    headers), with the batch encoded here. Its `export` is the SDK's, less the object tree;
    the HTTP client it calls is the SDK's own, pinned with it in the lock file, and the
    integration test's receiver decodes what it sends."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            body = encode_spans(spans)
        except Exception as error:  # a bad span must not stop the exporter
            _log.error("Failed to encode a span batch: %s", error)
            return SpanExportResult.FAILURE
        if 0 < self._max_request_size < len(body):  # the SDK's own limit, as it applies it
            _log.warning(
                "Dropping a span batch of %d bytes: over max_request_size %d",
                len(body),
                self._max_request_size,
            )
            return SpanExportResult.FAILURE
        result = self._client.export(body)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
