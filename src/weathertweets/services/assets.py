"""The dashboard page's files: shipped in the package (static/), and the world map vendored at
build time from npm (static/vendor/, see tools/assets). Read once, served from memory."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from weathertweets.web import Request

STATIC = Path(__file__).resolve().parent.parent / "static"
TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".md": b"text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: bytes


@cache
def load_assets() -> dict[str, Asset]:
    """{name: asset} for static/* and static/vendor/* (vendor names prefixed "vendor-")."""
    found = {}
    for folder, prefix in ((STATIC, ""), (STATIC / "vendor", "vendor-")):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.suffix in TYPES:
                    found[prefix + path.name] = Asset(path.read_bytes(), TYPES[path.suffix])
    return found


def wants_html(request: Request) -> bool:
    """A browser asking for a page: Accept names text/html before any JSON."""
    accept = (request.header(b"accept") or b"").decode("latin-1").lower()
    html, json = accept.find("text/html"), accept.find("application/json")
    return html >= 0 and (json < 0 or html < json)
