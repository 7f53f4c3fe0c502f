"""The dashboard's static files: read once from the package, served from
memory by name (no path is ever joined from a request), with a version in
their URL so browsers may keep them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from conveyor.daemon.web import ansi

_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str


class StaticFiles:
    """The files of ``conveyor/daemon/web/static`` and the ANSI stylesheet."""

    def __init__(self) -> None:
        self.assets: dict[str, Asset] = {}
        folder = resources.files("conveyor.daemon.web") / "static"
        for entry in folder.iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if entry.is_file() and suffix in _TYPES:
                self._add(entry.name, entry.read_bytes(), _TYPES[suffix])
        self._add("ansi.css", ansi.stylesheet().encode(), _TYPES[".css"])

    def _add(self, name: str, body: bytes, content_type: str) -> None:
        version = hashlib.sha256(body).hexdigest()[:12]
        self.assets[name] = Asset(body, content_type, version)

    def url(self, name: str) -> str:
        asset = self.assets[name]
        return f"/static/{name}?v={asset.version}"

    def get(self, name: str) -> Asset | None:
        return self.assets.get(name)
