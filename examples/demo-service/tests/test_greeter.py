import threading
import urllib.error
import urllib.request

import pytest

from greeter import greet
from greeter.server import make_server


def test_greets_by_name() -> None:
    assert greet("Ada") == "Hello, Ada!"


def test_defaults_to_world() -> None:
    assert greet("  ") == "Hello, world!"


def test_the_service_answers_its_greeting_version_and_health() -> None:
    server = make_server(0, "Hello from a test!", "1.2.3")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        for path, expected in [
            ("/", "Hello from a test!"),
            ("/version", "1.2.3"),
            ("/health", "ok"),
        ]:
            with opener.open(base + path, timeout=5) as answer:
                assert answer.read().decode() == expected + "\n"
        with pytest.raises(urllib.error.HTTPError):
            opener.open(base + "/nowhere", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
