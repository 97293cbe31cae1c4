"""The gateway's OpenAPI 3.1 document, generated from the response types in `schemas`, and a
self-contained page that renders it."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgspec

from weathertweets import __version__, schemas
from weathertweets.domain import MAX_PAIS, MAX_TEXTO

_TWEET_IN = {
    "type": "object",
    "description": "Also accepted: `text` for texto, `country` or `país` for pais.",
    "required": ["texto", "pais"],
    "properties": {
        "texto": {"type": "string", "minLength": 1, "maxLength": MAX_TEXTO},
        "pais": {"type": "string", "minLength": 1, "maxLength": MAX_PAIS},
    },
    "example": {"texto": "Calor sofocante", "pais": "Turquía"},
}
_FORM = {
    "type": "object",
    "required": ["texto", "pais"],
    "properties": {"texto": {"type": "string"}, "pais": {"type": "string"}},
}
_TWEET_BODY = {
    "application/json": {"schema": _TWEET_IN},
    "application/x-www-form-urlencoded": {"schema": _FORM},
    "multipart/form-data": {"schema": _FORM},
}
_BATCH_BODY = {
    "application/json": {"schema": {"type": "array", "items": _TWEET_IN, "maxItems": 10_000}},
    "application/x-ndjson": {"schema": _TWEET_IN},
}
_SET_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "description": "Also accepted: `pais` and `texto`.",
            "properties": {"Pais": {"type": "string"}, "Texto": {"type": "string"}},
        }
    }
}
_MEANING = {
    400: "Malformed JSON, form or UTF-8",
    413: "Body or batch too large",
    415: "Neither JSON nor a form",
    422: "Invalid; `field` names the culprit",
    503: "A backend cannot take the request now; see Retry-After",
}
_TEXT = {"type": "string"}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    ok: int = 200
    answer: type | None = None  # a schemas.Schema, or None for the text answers below
    media: str = "application/json"
    body: dict[str, Any] | None = None
    errors: tuple[int, ...] = ()
    parameters: list[dict[str, Any]] = field(default_factory=list)


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}
_TWEET_ERRORS = (400, 413, 415, 422, 503)


def _tweet_posts() -> list[Operation]:
    paths = {
        "/input": "Post one tweet",
        "/input/": "Post one tweet (with a trailing slash)",
        "/": "Post one tweet (the original's path)",
        "/insert": "Post one tweet (the original's alias)",
        "/insert/": "Post one tweet (the original's Locust, host …/insert)",
    }
    return [
        Operation(
            "post", path, summary, 202, schemas.Accepted, body=_TWEET_BODY, errors=_TWEET_ERRORS
        )
        for path, summary in paths.items()
    ]


OPERATIONS: list[Operation] = [
    *_tweet_posts(),
    Operation(
        "post",
        "/api/v1/tweets",
        "Post a batch: a JSON array or NDJSON, all or nothing",
        202,
        schemas.BatchAccepted,
        body=_BATCH_BODY,
        errors=_TWEET_ERRORS,
    ),
    Operation(
        "post",
        "/set",
        "The original's counter API: count one text for a country directly",
        answer=None,
        media="text/plain",
        body=_SET_BODY,
        errors=(400, 422, 503),
    ),
    Operation(
        "get",
        "/api/v1/tweets",
        "Recent archived tweets, newest first",
        answer=schemas.RecentTweets,
        errors=(422, 503),
        parameters=[_query("pais", {"type": "string"}), _query("limit", _LIMIT)],
    ),
    Operation(
        "get",
        "/api/v1/stats",
        "Counted total, archived total, per country, top texts, conditions",
        answer=schemas.Stats,
        errors=(422, 503),
        parameters=[_query("top", _LIMIT)],
    ),
    Operation(
        "get",
        "/api/v1/countries/{pais}",
        "Texts and counts for one country",
        answer=schemas.CountryTexts,
        errors=(503,),
        parameters=[{"name": "pais", "in": "path", "required": True, "schema": _TEXT}],
    ),
    Operation(
        "get",
        "/api/v1/conditions",
        "Weather conditions: totals, and per country its counts and dominant condition",
        answer=schemas.Conditions,
        errors=(503,),
    ),
    Operation(
        "get",
        "/api/v1/dashboard",
        "One snapshot of the live view",
        answer=schemas.Dashboard,
        errors=(503,),
    ),
    Operation(
        "get",
        "/api/v1/live",
        "The live view as server-sent events: each `data:` line is a Dashboard",
        media="text/event-stream",
    ),
    Operation(
        "get",
        "/",
        "Browsers: the live page; other clients: the service index",
        answer=schemas.ServiceIndex,
    ),
    Operation("get", "/dashboard", "The live page", media="text/html"),
    Operation("get", "/healthz", "Alive", answer=schemas.Health),
    Operation("get", "/readyz", "Every backend reachable", answer=schemas.Readiness, errors=(503,)),
    Operation("get", "/metrics", "Prometheus metrics", media="text/plain"),
    Operation("get", "/docs", "This API, as a page", media="text/html"),
    Operation(
        "get", "/openapi.json", "This API, as OpenAPI 3.1", answer=None, media="application/json"
    ),
]

_REF = "#/components/schemas/{name}"


def _content(media: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {media: {"schema": schema}}}


@cache
def openapi_spec() -> dict[str, Any]:
    types = [op.answer for op in OPERATIONS if op.answer is not None] + [schemas.ErrorBody]
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref_of = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        if op.answer is not None:
            ok_schema = ref_of[op.answer]
        elif op.path == "/openapi.json":
            ok_schema = {"type": "object", "description": "an OpenAPI 3.1 document"}
        else:
            ok_schema = _TEXT
        responses: dict[str, Any] = {
            str(op.ok): {"description": op.summary, **_content(op.media, ok_schema)}
        }
        for status in op.errors:
            error = _content("application/json", ref_of[schemas.ErrorBody])
            responses[str(status)] = {"description": _MEANING[status], **error}
        operation: dict[str, Any] = {
            "operationId": _operation_id(op),
            "summary": op.summary,
            "parameters": op.parameters,
            "responses": responses,
        }
        if op.body is not None:
            operation["requestBody"] = {"required": True, "content": op.body}
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Weather Tweets gateway", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }


def _operation_id(op: Operation) -> str:
    words = [w for w in op.path.replace("{", "").replace("}", "").split("/") if w]
    name = "_".join(w.replace(".", "_") for w in words) or "root"
    suffix = "_slash" if op.path.endswith("/") and op.path != "/" else ""
    return f"{op.method}_{name}{suffix}"


@cache
def docs_page() -> str:
    spec = openapi_spec()
    rows = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            rows.append(
                f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(operation['summary'])}</td></tr>"
            )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Weather Tweets API</title><style>body{font-family:sans-serif;margin:2em}"
        "td{padding:4px 12px;border-bottom:1px solid #ddd}pre{background:#f6f6f6;padding:1em}"
        "</style></head><body><h1>Weather Tweets API</h1>"
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>"
        f"<table>{''.join(rows)}</table><h2>OpenAPI</h2>"
        f"<pre>{html.escape(json.dumps(spec, indent=2, ensure_ascii=False))}</pre></body></html>"
    )
