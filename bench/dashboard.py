"""The web dashboard: how fast a big run's page comes, how soon a browser
sees a stage finish, and what open pages cost the daemon.

One daemon with ``--web-listen``, authentication on (a viewer's token,
signed in through the login form), Debian's Chromium driven by Playwright:

- **run page of a 50-stage run** (5 columns of 10 stages, each needing two
  of the column before; finished): time to first byte and to the whole body
  over HTTP (``http.client``, a fresh connection each), against the same
  run read with the API's GetRun (an open gRPC channel: the service layer's
  read without the page); in the browser the navigation's response start
  and its ``load`` event (stylesheets and script included), against the
  load of the small server page (the floor of any page);
- **event latency**: a run of 10 stages in a chain, each waiting for a file
  the benchmark creates; the browser shows the run page and records (a
  ``MutationObserver``) when each stage's node turns ``succeeded``; the
  latency is that moment minus the stage's ``finished_at`` as the daemon
  recorded it (same machine, same clock); the baseline is the API's own
  live stream (WatchRun) of the same run, received in the benchmark;
- **CPU of idle pages**: a run whose stage waits; the daemon's CPU time
  over the same window with no page open, then with 20 pages of that run
  open (one browser context each: a browser opens at most 6 connections
  to one host per profile), each holding its event stream; and the
  daemon's RSS growth for those 20 pages.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.common import (
    MB,
    BenchResult,
    CpuMeter,
    Figure,
    describe,
    get_run,
    idle_rss,
    ms,
    pipeline_repo,
    scratch_dir,
    seconds,
    submit,
    wait_finished,
    wait_stage_status,
)
from conveyor.v1 import runs_pb2
from tests.support import browser as b
from tests.support.daemon import FINISHED, DaemonProcess
from tests.support.ports import free_port

NAME = "dashboard"
COLUMNS, ROWS = 5, 10
CHAIN = 10
PAGES = 20
TARGET_TTFB_MS = 100.0
TARGET_LOAD_MS = 1000.0
TARGET_LATENCY_MS = 250.0
#: CPU the 20 idle pages may add, in percent of one core.
TARGET_IDLE_CPU_PERCENT = 1.0

#: Records, per stage node, when the page first showed it succeeded.
OBSERVER = """
() => {
  window.__seen = {};
  const look = () => {
    for (const node of document.querySelectorAll('g.node[data-status="succeeded"]')) {
      const index = node.getAttribute('data-stage');
      if (!(index in window.__seen)) window.__seen[index] = Date.now();
    }
  };
  new MutationObserver(look).observe(document.getElementById('dag'),
    {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
  look();
}
"""

#: The navigation's response start and load event end, in ms.
NAVIGATION = (
    "() => { const n = performance.getEntriesByType('navigation')[0];"
    " return [n.responseStart - n.requestStart, n.loadEventEnd - n.startTime]; }"
)


def _big_pipeline() -> dict[str, dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}
    for column in range(COLUMNS):
        for row in range(ROWS):
            stage: dict[str, Any] = {"run": "true"}
            if column:
                stage["needs"] = [f"c{column - 1}-s{row}", f"c{column - 1}-s{(row + 1) % ROWS}"]
            stages[f"c{column}-s{row}"] = stage
    return stages


def _timed_get(base: str, path: str, cookie: str) -> tuple[float, float, int]:
    """Seconds to the first byte and to the end of the body, and its size,
    of one GET on a fresh connection."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        started = time.perf_counter()
        connection.request("GET", path, headers={"cookie": cookie})
        answer = connection.getresponse()  # returns once the status line is in
        first = time.perf_counter()
        body = answer.read()
        done = time.perf_counter()
    finally:
        connection.close()
    if answer.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {answer.status}")
    return first - started, done - started, len(body)


def _page(browser: Any, base: str, token: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    b.sign_in(page, base, token)
    return page


def run(quick: bool) -> BenchResult:
    requests = 10 if quick else 40
    loads = 5 if quick else 15
    window = 5.0 if quick else 20.0
    with scratch_dir() as root, b.launch() as browser:
        port = free_port()
        daemon = DaemonProcess(
            root / "home", args=["--web-listen", f"127.0.0.1:{port}", "--kill-grace", "1"]
        ).start()
        base = f"http://127.0.0.1:{port}"
        try:
            token = daemon.issue_token("bench", ("viewer",))
            cookie = b.session_cookie(base, token)
            page_figures, page_samples = _run_page(
                daemon, root, base, token, cookie, browser, requests, loads
            )
            latency, watch_latency = _latency(daemon, root, base, token, browser)
            cpu = _idle_cpu(daemon, root, base, token, browser, window)
        finally:
            daemon.stop()
    lat = describe(latency, 1000)
    watch = describe(watch_latency, 1000)
    figures = [
        *page_figures,
        Figure(
            "stage finished -> browser shows it, p50",
            lat["p50"],
            "ms",
            target=TARGET_LATENCY_MS,
            baseline=watch["p50"],
            baseline_name="WatchRun (gRPC)",
            note=f"{CHAIN} stages; node colour observed by a MutationObserver",
        ),
        Figure(
            "stage finished -> browser shows it, max",
            lat["max"],
            "ms",
            baseline=watch["max"],
            baseline_name="WatchRun (gRPC)",
        ),
        Figure(
            f"daemon CPU with {PAGES} run pages open, idle",
            cpu["with_pages_percent"],
            "% of a core",
            baseline=cpu["without_pages_percent"],
            baseline_name="no page open",
            headline=True,
        ),
        Figure(
            f"CPU added by {PAGES} idle pages",
            cpu["with_pages_percent"] - cpu["without_pages_percent"],
            "% of a core",
            target=TARGET_IDLE_CPU_PERCENT,
        ),
        Figure(f"daemon RSS growth for {PAGES} open pages", cpu["rss_growth_mb"], "MB"),
    ]
    return BenchResult(
        NAME,
        figures,
        parameters={
            "stages": COLUMNS * ROWS,
            "http_requests": requests,
            "browser_loads": loads,
            "chain": CHAIN,
            "pages": PAGES,
            "idle_window_s": window,
            "authentication": "on (viewer token, session cookie)",
        },
        samples={
            **page_samples,
            "latency_ms": ms(latency),
            "watch_latency_ms": ms(watch_latency),
            "cpu": cpu,
        },
        summary={"latency_ms": lat, "watch_latency_ms": watch},
    )


def _run_page(
    daemon: DaemonProcess,
    root: Path,
    base: str,
    token: str,
    cookie: str,
    browser: Any,
    requests: int,
    loads: int,
) -> tuple[list[Figure], dict[str, Any]]:
    repo = pipeline_repo(root / "big", "dash50", _big_pipeline())
    run_id = submit(daemon, repo).id
    wait_finished(daemon, run_id, timeout=300)
    path = f"/runs/{run_id}"
    for _ in range(3):
        _timed_get(base, path, cookie)  # warm up
    first, whole, size = [], [], 0
    for _ in range(requests):
        t_first, t_whole, size = _timed_get(base, path, cookie)
        first.append(t_first)
        whole.append(t_whole)
    api = []
    for _ in range(requests):
        started = time.perf_counter()
        get_run(daemon, run_id)
        api.append(time.perf_counter() - started)
    page = _page(browser, base, token)
    nav_first, nav_load, floor = [], [], []
    for _ in range(loads):
        page.goto(base + path, wait_until="load")
        timing = page.evaluate(NAVIGATION)
        nav_first.append(timing[0] / 1000)
        nav_load.append(timing[1] / 1000)
    nodes = page.eval_on_selector_all("g.node", "nodes => nodes.length")
    for _ in range(loads):
        page.goto(base + "/server", wait_until="load")
        floor.append(page.evaluate(NAVIGATION)[1] / 1000)
    page.context.close()
    if nodes != COLUMNS * ROWS:
        raise RuntimeError(f"the run page shows {nodes} stage nodes")
    http_first, http_whole = describe(first, 1000), describe(whole, 1000)
    load = describe(nav_load, 1000)
    get = describe(api, 1000)["p50"]
    figures = [
        Figure(
            "50-stage run page: time to first byte, p50",
            http_first["p50"],
            "ms",
            target=TARGET_TTFB_MS,
            baseline=get,
            baseline_name="GetRun (gRPC)",
            note=f"HTTP, fresh connection; page {size / 1024:.0f} KiB",
        ),
        Figure(
            "50-stage run page: whole body, p50",
            http_whole["p50"],
            "ms",
            baseline=get,
            baseline_name="GetRun (gRPC)",
        ),
        Figure(
            "50-stage run page: full load in Chromium, p50",
            load["p50"],
            "ms",
            target=TARGET_LOAD_MS,
            baseline=describe(floor, 1000)["p50"],
            baseline_name="server page",
            note="navigation start to the load event",
        ),
        Figure(
            "50-stage run page: first byte in Chromium, p50",
            describe(nav_first, 1000)["p50"],
            "ms",
        ),
    ]
    samples = {
        "page_bytes": size,
        "http_first_byte_ms": ms(first),
        "http_body_ms": ms(whole),
        "browser_first_byte_ms": ms(nav_first),
        "browser_load_ms": ms(nav_load),
        "get_run_ms": ms(api),
        "server_page_load_ms": ms(floor),
    }
    return figures, samples


def _watch(daemon: DaemonProcess, run_id: str, seen: dict[str, float]) -> None:
    """Follow the run with WatchRun until it finishes, noting (wall clock)
    when each stage's ``succeeded`` event arrives."""
    call = daemon.stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id), timeout=120)
    try:
        for event in call:
            if event.stage and event.stage_status == runs_pb2.STAGE_STATUS_SUCCEEDED:
                seen.setdefault(event.stage, time.time())
            if event.kind == runs_pb2.RUN_EVENT_KIND_RUN_STATUS and event.run_status in FINISHED:
                return
    finally:
        call.cancel()  # type: ignore[no-untyped-call]


def _latency(
    daemon: DaemonProcess, root: Path, base: str, token: str, browser: Any
) -> tuple[list[float], list[float]]:
    """Seconds from each stage's finish to the browser showing it, and to
    WatchRun delivering it."""
    gates = root / "gates"
    gates.mkdir()
    stages: dict[str, dict[str, Any]] = {}
    for index in range(CHAIN):
        stage: dict[str, Any] = {
            "run": f"while [ ! -f {gates}/{index} ]; do sleep 0.01; done",
        }
        if index:
            stage["needs"] = [f"step-{index - 1}"]
        stages[f"step-{index}"] = stage
    repo = pipeline_repo(root / "chain", "latency", stages)
    run_id = submit(daemon, repo).id
    wait_stage_status(daemon, run_id, "step-0", runs_pb2.STAGE_STATUS_RUNNING)
    watched: dict[str, float] = {}
    watcher = threading.Thread(target=_watch, args=(daemon, run_id, watched), daemon=True)
    watcher.start()
    page = _page(browser, base, token)
    page.goto(f"{base}/runs/{run_id}")
    page.evaluate(OBSERVER)
    for index in range(CHAIN):
        (gates / str(index)).touch()
        page.wait_for_function(f"() => '{index}' in window.__seen", timeout=30_000)
    seen: dict[str, float] = page.evaluate("() => window.__seen")
    page.context.close()
    wait_finished(daemon, run_id)
    watcher.join(timeout=30)
    run = get_run(daemon, run_id)
    browser_latency = [
        seen[str(i)] / 1000 - seconds(stage.finished_at) for i, stage in enumerate(run.stages)
    ]
    api_latency = [watched[stage.name] - seconds(stage.finished_at) for stage in run.stages]
    return browser_latency, api_latency


def _idle_cpu(
    daemon: DaemonProcess, root: Path, base: str, token: str, browser: Any, window: float
) -> dict[str, float]:
    assert daemon.proc is not None
    gate = root / "idle-gate"
    repo = pipeline_repo(
        root / "idle", "idle", {"wait": {"run": f"while [ ! -f {gate} ]; do sleep 0.2; done"}}
    )
    run_id = submit(daemon, repo).id
    wait_stage_status(daemon, run_id, "wait", runs_pb2.STAGE_STATUS_RUNNING)
    time.sleep(1.0)  # let the start of the run settle before measuring
    before_rss = idle_rss(daemon.proc.pid)
    with CpuMeter(daemon.proc.pid) as quiet:
        time.sleep(window)
    pages = []
    for _ in range(PAGES):
        page = _page(browser, base, token)
        page.goto(f"{base}/runs/{run_id}")
        pages.append(page)
    # every page's event stream is open once the server counts them all
    deadline = time.monotonic() + 60
    while _live_pages(base, token, browser) < PAGES:
        if time.monotonic() > deadline:
            raise RuntimeError("the pages' event streams did not all open")
        time.sleep(0.2)
    time.sleep(1.0)
    with CpuMeter(daemon.proc.pid) as busy:
        time.sleep(window)
    after_rss = idle_rss(daemon.proc.pid)
    for page in pages:
        page.context.close()
    gate.touch()
    wait_finished(daemon, run_id)
    return {
        "window_s": window,
        "without_pages_cpu_s": quiet.daemon,
        "with_pages_cpu_s": busy.daemon,
        "without_pages_percent": 100 * quiet.daemon / quiet.wall,
        "with_pages_percent": 100 * busy.daemon / busy.wall,
        "rss_growth_mb": (after_rss - before_rss) / MB,
    }


def _live_pages(base: str, token: str, browser: Any) -> int:
    """How many event streams the dashboard has open (its server page says)."""
    page = _page(browser, base, token)
    try:
        page.goto(f"{base}/server")
        return int(page.inner_text("dt:has-text('Open live pages') + dd"))
    finally:
        page.context.close()
