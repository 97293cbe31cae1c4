"""Optional OpenTelemetry tracing: HTTP request → gRPC → broker record → archiver and counter.

Off unless `WT_OTLP_ENDPOINT` is set (install the `tracing` extra), or a test installs a
provider with `enable`. When off, every helper is a cheap no-op and the hot path pays nothing.
The context travels as W3C `traceparent`/`tracestate`: in HTTP headers, in the `headers` map of
the gRPC `Tweet`, and in the broker record's headers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from weathertweets.config import SettingError
from weathertweets.ports import Headers

_tracer: Any = None  # an opentelemetry Tracer once enabled


def enabled() -> bool:
    return _tracer is not None


def enable(provider: Any) -> None:
    """Trace through `provider` (an SDK TracerProvider: OTLP in production, in-memory in tests)."""
    global _tracer
    from opentelemetry import trace

    _tracer = trace.get_tracer("weathertweets", tracer_provider=provider)


def disable() -> None:
    global _tracer
    _tracer = None


def configure(endpoint: str, service: str) -> None:
    """Export to an OTLP/HTTP endpoint (e.g. http://collector:4318/v1/traces) when one is set."""
    if not endpoint:
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise SettingError(
            "WT_OTLP_ENDPOINT is set but tracing is not installed:"
            " pip install 'weathertweets[tracing]'"
        ) from error
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"weathertweets-{service}"})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    enable(provider)


def _carrier(headers: Iterable[tuple[str, bytes | str]]) -> dict[str, str]:
    return {
        k.lower(): v.decode("latin-1") if isinstance(v, bytes) else v
        for k, v in headers
        if k.lower() in ("traceparent", "tracestate")
    }


@contextlib.contextmanager
def span(
    name: str,
    service: str,
    *,
    parent: Iterable[tuple[str, bytes | str]] | Mapping[str, str] = (),
    kind: str = "internal",
    **attributes: str | int,
) -> Iterator[Any]:
    """A span of `service`, child of the context found in `parent` headers (if any)."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    pairs = parent.items() if isinstance(parent, Mapping) else parent
    context = propagate.extract(_carrier(pairs))
    kinds = {"server": SpanKind.SERVER, "consumer": SpanKind.CONSUMER}
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=kinds.get(kind, SpanKind.INTERNAL),
        attributes={"weathertweets.service": service, **attributes},
    ) as current:
        yield current


def current_headers() -> dict[str, str]:
    """The current span's context as headers to send on ({} when tracing is off)."""
    if _tracer is None:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def as_record_headers(headers: Mapping[str, str]) -> Headers:
    return tuple((k, v.encode("latin-1")) for k, v in headers.items())
