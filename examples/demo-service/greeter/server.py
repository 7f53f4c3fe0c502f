"""The greeter as a tiny HTTP service (standard library only).

``python3 -m greeter serve`` (or ``python3 greeter.pyz serve``) listens on
127.0.0.1:$PORT and answers:

- ``GET /``: the configured greeting, ``$GREETING``;
- ``GET /version``: the version it was deployed as, ``$CONVEYOR_VERSION``;
- ``GET /health``: ``ok``.
"""

from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_server(port: int, greeting: str, version: str) -> ThreadingHTTPServer:
    """A server on 127.0.0.1:``port`` (0: any free port), not serving yet."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            pages = {"/": greeting, "/version": version, "/health": "ok"}
            body = pages.get(self.path.split("?", 1)[0])
            if body is None:
                self.answer(404, "not found")
            else:
                self.answer(200, body)

        def answer(self, status: int, text: str) -> None:
            data = f"{text}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def serve() -> None:
    """Serve until stopped, configured by the environment."""
    server = make_server(
        int(os.environ.get("PORT", "8080")),
        os.environ.get("GREETING", "Hello!"),
        os.environ.get("CONVEYOR_VERSION", "unknown"),
    )
    host, port = server.server_address[:2]
    print(f"greeter listening on {host}:{port}", flush=True)
    server.serve_forever()
