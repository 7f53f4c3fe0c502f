"""A real browser for the dashboard's tests: Debian's Chromium, driven by
Playwright for Python (``playwright install`` downloads nothing here: the
browser is launched by its path).

:func:`unavailable` says why browser tests cannot run; :func:`require`
skips them with that reason, or fails them when
``CONVEYOR_REQUIRE_BROWSER=1`` (as CI sets it: there, a browser test must
never skip silently). Each test module launches one browser
(:func:`launch`) and gives each user a fresh context (its own cookies).
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.ports import free_port

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_ENV = "CONVEYOR_REQUIRE_BROWSER"
#: How Chromium runs here: headless, as root (no sandbox), offline (nothing
#: that would reach for the network: QUIC, component updates, sync).
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
#: Where the tests write their screenshots (the best are copied to docs/).
SCREENSHOTS = Path(os.environ.get("CONVEYOR_SCREENSHOTS", "/tmp/conveyor-screenshots"))


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc})"
    return None


def require() -> None:
    """Skip the calling test (module) without a browser, or fail when
    ``CONVEYOR_REQUIRE_BROWSER=1``."""
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium (a ``playwright.sync_api.Browser``) in a fresh
    profile; closed on exit."""
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="cv-chromium-"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            env={**os.environ, "HOME": str(profile), "XDG_CONFIG_HOME": str(profile)},
        )
        try:
            yield browser
        finally:
            browser.close()
            shutil.rmtree(profile, ignore_errors=True)


def web_daemon(home: Path, *args: str) -> tuple[DaemonProcess, str]:
    """A started daemon serving the dashboard on a free loopback port, and
    the dashboard's base URL."""
    port = free_port()
    daemon = DaemonProcess(
        home, args=["--kill-grace", "1", "--web-listen", f"127.0.0.1:{port}", *args]
    ).start()
    return daemon, f"http://127.0.0.1:{port}"


def session_cookie(base: str, token: str) -> str:
    """Sign in with ``token`` over plain HTTP (no browser); the session
    cookie (``conveyor_session=...``) to send with later requests."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/login",
            urllib.parse.urlencode({"token": token, "next": "/"}),
            {"content-type": "application/x-www-form-urlencoded", "origin": base},
        )
        answer = connection.getresponse()
        answer.read()
        cookie = answer.getheader("set-cookie") or ""
    finally:
        connection.close()
    if answer.status != 303 or not cookie:
        raise RuntimeError(f"signing in failed: HTTP {answer.status}")
    return cookie.split(";", 1)[0]


def sign_in(page: Any, base: str, token: str) -> None:
    """Sign in through the login form, as a person would."""
    page.goto(f"{base}/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def js_heap(page: Any) -> int:
    """Bytes of JavaScript heap the page uses now (Chrome DevTools
    Protocol, ``Performance.getMetrics``), after a garbage collection."""
    session = page.context.new_cdp_session(page)
    try:
        session.send("HeapProfiler.collectGarbage")
        session.send("Performance.enable")
        metrics = session.send("Performance.getMetrics")["metrics"]
    finally:
        session.detach()
    return int(next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize"))


def shoot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Write a screenshot of the page to :data:`SCREENSHOTS`/``name``.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``check`` until it holds (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)
