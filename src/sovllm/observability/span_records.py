"""The gateway's own spans, recorded as plain records and handed to the exporter when they end.

An OpenTelemetry SDK span is a live object: a sampler call, locks, bounded lists for events and
links, span processor hooks at its start and end. A request's GenAI span and its children
(admission, queue wait, prefill, decode, audit write) need none of that: nothing adds events or
links to them, and the children's times are known (the engine's phases after the fact). Making
them through the SDK cost about a third of a traced request's CPU in the gateway
(docs/performance.md, "Tracing overhead"). Here a span is a dict of attributes and two clock
readings until it ends; then one `ReadableSpan` (the SDK's own immutable span, what exporters
take) goes to the batch processor, which encodes and posts it off the request path as before.

The sampling decision is the SDK sampler's: a span follows its parent's sampled flag (FastAPI's
HTTP span, itself sampled by `ParentBased(TraceIdRatioBased(telemetry.sample_ratio))`), and a
span without a parent asks the sampler. An unsampled span still has ids, so `traceparent`
carries the decision on to the replicas.
"""

from __future__ import annotations

import random
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

_SAMPLED, _NOT_SAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)
_OK, _ERROR = Status(StatusCode.UNSET), Status(StatusCode.ERROR)


def _span_id() -> int:
    # The SDK's RandomIdGenerator does the same (a zero id is invalid).
    return random.getrandbits(64) or 1


class SpanRecords:
    """Where finished records go: the span processor (batching, export), under the provider's
    resource and this instrumentation's scope, with the provider's sampler for root spans."""

    def __init__(
        self,
        processor: SpanProcessor,
        resource: Resource,
        scope: InstrumentationScope,
        sampler: Sampler,
    ) -> None:
        self.processor, self.resource = processor, resource
        self.scope, self.sampler = scope, sampler

    def start(self, name: str, attributes: dict[str, Any]) -> RecordedSpan:
        """A span, child of the current one (or a root, sampled by the sampler)."""
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid:
            trace_id, sampled = parent.trace_id, parent.trace_flags.sampled
        else:
            trace_id = random.getrandbits(128) or 1
            decision = self.sampler.should_sample(None, trace_id, name, attributes=attributes)
            sampled = decision.decision == Decision.RECORD_AND_SAMPLE
        flags = _SAMPLED if sampled else _NOT_SAMPLED
        context = SpanContext(trace_id, _span_id(), False, flags)
        return RecordedSpan(self, name, context, parent if parent.is_valid else None, attributes)

    def emit(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, Any] | None = None,
        error: bool = False,
    ) -> None:
        if not context.trace_flags.sampled:
            return
        self.processor.on_end(
            ReadableSpan(
                name,
                context,
                parent,
                self.resource,
                attributes,
                status=_ERROR if error else _OK,
                start_time=start_ns,
                end_time=end_ns,
                instrumentation_scope=self.scope,
            )
        )

    def child(self, parent: SpanContext, name: str, start_ns: int, end_ns: int) -> None:
        """A finished child of `parent` (its times known after the fact)."""
        context = SpanContext(parent.trace_id, _span_id(), False, parent.trace_flags)
        self.emit(name, context, parent, start_ns, end_ns)


class RecordedSpan:
    """A span being recorded: its ids (so it can be a parent, and go on in `traceparent`), its
    attributes and its start; exported once, at `end()`, if sampled."""

    def __init__(
        self,
        records: SpanRecords | None,
        name: str = "",
        context: SpanContext = trace.INVALID_SPAN_CONTEXT,
        parent: SpanContext | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """`records` None: a span that records nothing (telemetry off), with no valid ids."""
        self.records, self.name, self.context, self.parent = records, name, context, parent
        self.attributes = attributes if attributes is not None else {}
        self.start_ns = time.time_ns()
        self.error = False
        self.ended = False
        self.otel: trace.Span = trace.NonRecordingSpan(context)
        """The span as OpenTelemetry's API sees it: a context to make current."""

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_error(self) -> None:
        self.error = True

    def end(self) -> None:
        if self.ended or self.records is None:
            return
        self.ended = True
        self.records.emit(
            self.name,
            self.context,
            self.parent,
            self.start_ns,
            time.time_ns(),
            self.attributes,
            self.error,
        )
