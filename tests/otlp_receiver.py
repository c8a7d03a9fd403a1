"""A real OTLP/HTTP receiver on loopback for the tests: a plain HTTP server that keeps every
request's raw body and decodes traces and metrics with opentelemetry-proto, so what it gets is
exactly what a collector would."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class Receiver:
    """An OTLP/HTTP endpoint: keeps every request's raw body, and decodes traces and metrics."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.spans: list[tuple[str, Span]] = []  # (service.name, span)
        self.metrics: dict[str, Any] = {}
        self.lock = threading.Lock()

    def receive(self, path: str, body: bytes) -> None:
        with self.lock:
            self.raw.append(body)
            if path == "/v1/traces":
                for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                    service = attrs(rs.resource.attributes).get("service.name", "")
                    for ss in rs.scope_spans:
                        self.spans.extend((service, s) for s in ss.spans)
            elif path == "/v1/metrics":
                for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            self.metrics[m.name] = m

    def named(self, prefix: str) -> list[tuple[str, Span]]:
        with self.lock:
            return [(svc, s) for svc, s in self.spans if s.name.startswith(prefix)]


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(items: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in items}


@contextmanager
def receiver() -> Iterator[tuple[str, Receiver]]:
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            got.receive(self.path, body)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()
