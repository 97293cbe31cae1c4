"""The gateway's OpenAPI 3.1 description, and a self-contained page that renders it."""

from __future__ import annotations

import html
import json
from functools import cache
from typing import Any

from weathertweets import __version__
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
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {
        400: "Malformed JSON or not UTF-8",
        413: "Body or batch too large",
        415: "Neither JSON nor a form",
        422: "Invalid tweet; `field` names the culprit",
        503: "The broker cannot take tweets now; see Retry-After",
    }
    return {str(s): {"description": meaning[s], **_json(_ERROR)} for s in statuses}


_FORM = {
    "type": "object",
    "required": ["texto", "pais"],
    "properties": {"texto": {"type": "string"}, "pais": {"type": "string"}},
}


def _post_tweet(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _TWEET_IN},
                    "application/x-www-form-urlencoded": {"schema": _FORM},
                    "multipart/form-data": {"schema": _FORM},
                },
            },
            "responses": {
                "202": {
                    "description": "Durable on the broker",
                    **_json({"type": "object", "properties": {"id": {"type": "string"}}}),
                },
                **_errors(400, 413, 415, 422, 503),
            },
        }
    }


def _get(summary: str, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters or [],
            "responses": {"200": {"description": "OK", **_json({"type": "object"})}},
        }
    }


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


@cache
def openapi_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Weather Tweets gateway", "version": __version__},
        "paths": {
            "/input": _post_tweet("Post one tweet"),
            "/input/": _post_tweet("Post one tweet (with a trailing slash)"),
            "/": _post_tweet("Post one tweet (the seed's path)"),
            "/insert": _post_tweet("Post one tweet (the seed's alias)"),
            "/insert/": _post_tweet("Post one tweet (the seed's Locust with host …/insert)"),
            "/set": {
                "post": {
                    "summary": "The seed's counter API: count one text for a country directly",
                    "requestBody": {
                        "required": True,
                        **_json(
                            {
                                "type": "object",
                                "properties": {
                                    "Pais": {"type": "string"},
                                    "Texto": {"type": "string"},
                                },
                            }
                        ),
                    },
                    "responses": {
                        "200": {"description": "`Data set` (text/plain)"},
                        **_errors(400, 422, 503),
                    },
                }
            },
            "/api/v1/tweets": {
                "post": {
                    "summary": "Post a batch: a JSON array or NDJSON, all or nothing",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"type": "array", "items": _TWEET_IN}},
                            "application/x-ndjson": {"schema": _TWEET_IN},
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Every tweet is durable on the broker",
                            **_json(
                                {"type": "object", "properties": {"accepted": {"type": "integer"}}}
                            ),
                        },
                        **_errors(400, 413, 415, 422, 503),
                    },
                },
                **_get(
                    "Recent archived tweets, newest first",
                    [
                        _query("pais", {"type": "string"}),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    ],
                ),
            },
            "/api/v1/stats": _get(
                "Counted total, archived total, per country, top texts",
                [_query("top", {"type": "integer", "minimum": 1, "maximum": 1000})],
            ),
            "/api/v1/countries/{pais}": _get(
                "Texts and counts for one country",
                [{"name": "pais", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
            "/api/v1/conditions": _get(
                "Weather conditions: totals, and per country its counts and dominant condition"
            ),
            "/healthz": _get("Alive"),
            "/readyz": _get("Every backend reachable (503 otherwise)"),
            "/metrics": _get("Prometheus metrics"),
        },
    }


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
