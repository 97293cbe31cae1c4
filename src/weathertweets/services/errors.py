"""How the application's exceptions become HTTP answers (the router's error registry)."""

from __future__ import annotations

from collections.abc import Mapping

from weathertweets.domain import InvalidTweet
from weathertweets.ports import BackendUnavailable
from weathertweets.web import ErrorHandler, HTTPError, Response, unavailable


def _invalid(error: InvalidTweet) -> Response:
    return HTTPError(422, "invalid", error.message, error.field).response()


def _unavailable(error: BackendUnavailable) -> Response:
    return unavailable(str(error)).response()


APP_ERRORS: Mapping[type[Exception], ErrorHandler] = {
    InvalidTweet: _invalid,
    BackendUnavailable: _unavailable,
}

REJECTION_REASONS = {
    400: "malformed",
    401: "unauthenticated",
    403: "forbidden",
    413: "too_large",
    415: "media_type",
    422: "invalid",
    429: "rate",
    431: "headers_too_large",
    503: "unavailable",
}
