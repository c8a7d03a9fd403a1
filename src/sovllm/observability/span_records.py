"""Spans recorded as plain records and handed to the exporter when they end: the gateway's own
(the GenAI span and its children) and, through `RecordsTracerProvider`, FastAPI's HTTP spans
and the worker's engine spans.

An OpenTelemetry SDK span is a live object: a sampler call, locks, attribute cleaning into
bounded containers, span processor hooks at its start and end. None of these spans needs that:
their attributes are the instrumentation's own well-typed values, nothing adds events to them
but an exception, and the children's times are known (the engine's phases after the fact). SDK
spans cost about a third of a traced request's CPU in the gateway, and FastAPI's HTTP span
about as much again (docs/performance.md, "Tracing overhead"). Here a span is a dict of attributes and two clock
readings until it ends; then one `ReadableSpan` (the SDK's own immutable span, what exporters
take) goes to the batch processor, which encodes and posts it off the request path as before.

The sampling decision is the SDK sampler's (`ParentBased(TraceIdRatioBased(ratio))`): a span
with a parent (local, or remote through `traceparent`) follows the parent's sampled flag, and a
span without one asks the sampler. An unsampled span still has ids, so `traceparent` carries
the decision on to the replicas.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util._decorator import _AgnosticContextManager
from opentelemetry.util.types import Attributes

_SAMPLED, _NOT_SAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)
_UNSET, _ERROR = Status(StatusCode.UNSET), Status(StatusCode.ERROR)


def _span_id() -> int:
    # The SDK's RandomIdGenerator does the same (a zero id is invalid).
    return random.getrandbits(64) or 1


class SpanRecords:
    """Where finished records go: the span processor (batching, export), under the provider's
    resource and an instrumentation scope, with the provider's sampler for root spans."""

    def __init__(
        self,
        processor: SpanProcessor,
        resource: Resource,
        scope: InstrumentationScope,
        sampler: Sampler,
    ) -> None:
        self.processor, self.resource = processor, resource
        self.scope, self.sampler = scope, sampler

    def start(
        self,
        name: str,
        attributes: dict[str, Any],
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        start_ns: int | None = None,
        scope: InstrumentationScope | None = None,
    ) -> RecordedSpan:
        """A span, child of the current span of `context` (default: the current context), or
        a root sampled by the sampler."""
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, sampled = parent.trace_id, parent.trace_flags.sampled
        else:
            trace_id = random.getrandbits(128) or 1
            decision = self.sampler.should_sample(None, trace_id, name, attributes=attributes)
            sampled = decision.decision == Decision.RECORD_AND_SAMPLE
        flags = _SAMPLED if sampled else _NOT_SAMPLED
        span_context = SpanContext(trace_id, _span_id(), False, flags)
        return RecordedSpan(
            self,
            name,
            span_context,
            parent if parent.is_valid else None,
            attributes,
            kind,
            start_ns,
            scope or self.scope,
        )

    def child(self, parent: SpanContext, name: str, start_ns: int, end_ns: int) -> None:
        """A finished child of `parent` (its times known after the fact)."""
        if not parent.trace_flags.sampled:
            return
        context = SpanContext(parent.trace_id, _span_id(), False, parent.trace_flags)
        self.processor.on_end(
            ReadableSpan(
                name,
                context,
                parent,
                self.resource,
                start_time=start_ns,
                end_time=end_ns,
                instrumentation_scope=self.scope,
            )
        )


class RecordedSpan(trace.Span):
    """A span being recorded: its ids (so it can be a parent, and go on in `traceparent`), its
    attributes and its start; exported once, at `end()`, if sampled. OpenTelemetry's span API,
    so that it can be the current span and FastAPI's instrumentation can drive it."""

    def __init__(
        self,
        records: SpanRecords | None,
        name: str = "",
        context: SpanContext = trace.INVALID_SPAN_CONTEXT,
        parent: SpanContext | None = None,
        attributes: dict[str, Any] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        start_ns: int | None = None,
        scope: InstrumentationScope | None = None,
    ) -> None:
        """`records` None: a span that records nothing (telemetry off), with no valid ids."""
        self.records, self.name, self.context, self.parent = records, name, context, parent
        self.attributes = attributes if attributes is not None else {}
        self.kind, self.scope = kind, scope
        self.start_ns = start_ns if start_ns is not None else time.time_ns()
        self.status = _UNSET
        self.events: list[Event] = []
        self.links: list[Link] = []
        self.ended = records is None or not context.trace_flags.sampled

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return not self.ended

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.attributes.update(attributes)

    def update_name(self, name: str) -> None:
        self.name = name

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if not self.ended:
            self.events.append(Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if not self.ended and context.is_valid:
            self.links.append(Link(context, attributes))

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """The API's rules: UNSET changes nothing and OK is final."""
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is StatusCode.UNSET or self.status.status_code is StatusCode.OK:
            return
        self.status = status

    def set_error(self) -> None:
        self.set_status(_ERROR)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """The exception's type only: its message and stack can quote the request."""
        event = {"exception.type": type(exception).__qualname__, **(attributes or {})}
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.ended or self.records is None:
            return
        self.ended = True
        records = self.records
        records.processor.on_end(
            ReadableSpan(
                self.name,
                self.context,
                self.parent,
                records.resource,
                self.attributes,
                self.events,
                self.links,
                self.kind,
                status=self.status,
                start_time=self.start_ns,
                end_time=end_time if end_time is not None else time.time_ns(),
                instrumentation_scope=self.scope,
            )
        )


class RecordsTracer(trace.Tracer):
    """OpenTelemetry's tracer API over span records: FastAPI's HTTP spans and the worker's
    engine spans are made here, cheaply, and exported like the SDK's."""

    def __init__(self, records: SpanRecords, scope: InstrumentationScope) -> None:
        self.records, self.scope = records, scope

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> RecordedSpan:
        span = self.records.start(
            name, dict(attributes or {}), context, kind, start_time, self.scope
        )
        for link in links or ():
            span.add_link(link.context, link.attributes)
        return span

    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _AgnosticContextManager[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        return trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        )


class RecordsTracerProvider(trace.TracerProvider):
    """Tracers whose spans are records (one scope per instrumentation, as the SDK's)."""

    def __init__(self, records: SpanRecords) -> None:
        self.records = records

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> RecordsTracer:
        scope = InstrumentationScope(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        return RecordsTracer(self.records, scope)
