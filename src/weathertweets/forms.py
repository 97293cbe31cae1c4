"""HTML form bodies (`application/x-www-form-urlencoded`, `multipart/form-data`) as field maps.

The original's HTTP API took a tweet as JSON or as a form; so do we. A form gives flat text
fields only: file parts are ignored, a field sent twice with two values is refused, and the
number of fields is capped, so a hostile form costs no more than its (already bounded) body.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from weathertweets.domain import InvalidTweet
from weathertweets.web import HTTPError

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
FORM_TYPES = frozenset({URLENCODED, MULTIPART})
MAX_FIELDS = 32


def _malformed(message: str) -> HTTPError:
    return HTTPError(400, "malformed_form", message)


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _malformed(f"{what} is not valid UTF-8: {error}") from error


def _collect(pairs: list[tuple[str, str]]) -> dict[str, str]:
    if len(pairs) > MAX_FIELDS:
        raise _malformed(f"the form has {len(pairs)} fields; at most {MAX_FIELDS}")
    fields: dict[str, str] = {}
    for name, value in pairs:
        if fields.setdefault(name, value) != value:
            raise InvalidTweet(f"'{name}' is sent twice with different values", name)
    return fields


def parse_urlencoded(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            _text(body, "the form"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except ValueError as error:  # too many fields, or %-escapes that are not UTF-8
        raise _malformed(f"the form cannot be read: {error}") from error
    return _collect(pairs)


class _Parts:
    """Callbacks for python-multipart's streaming parser: keeps each text part's name and data."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._data: list[bytes] = []

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_part_data": self._on_data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._disposition, self._data = b"", []
        self._header_name = self._header_value = b""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_data(self, data: bytes, start: int, end: int) -> None:
        self._data.append(data[start:end])

    def _end(self) -> None:
        if len(self.pairs) >= MAX_FIELDS:
            raise _malformed(f"the form has more than {MAX_FIELDS} fields")
        kind, options = parse_options_header(self._disposition)
        if kind != b"form-data" or b"name" not in options or b"filename" in options:
            return  # not a named text field: files and strays carry no tweet
        name = _text(options[b"name"], "a field name")
        self.pairs.append((name, _text(b"".join(self._data), f"field '{name}'")))


def parse_multipart(content_type: bytes, body: bytes) -> dict[str, str]:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise _malformed("multipart/form-data needs a boundary in its content-type")
    parts = _Parts()
    try:
        parser = MultipartParser(boundary, parts.callbacks())  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as error:
        raise _malformed(f"the multipart body cannot be read: {error}") from error
    return _collect(parts.pairs)


def parse_form(media_type: str, content_type: bytes, body: bytes) -> dict[str, str]:
    """The fields of a form body; `media_type` is one of FORM_TYPES."""
    if media_type == URLENCODED:
        return parse_urlencoded(body)
    return parse_multipart(content_type, body)
