"""The web dashboard in a real browser (Debian's Chromium, driven by
Playwright) against a real daemon: runs appear and their stage graph
changes colour live, a stage's log streams as it is written, a 50 MB log
keeps the page small, a failed stage shows why, bad URLs are 404 pages.

One daemon and one browser for the module; screenshots of the pages go to
``tests.support.browser.SCREENSHOTS``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.v1 import runs_pb2
from tests.support import browser as b
from tests.support.daemon import DaemonProcess, stage
from tests.support.repos import make_repo

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MB = 1 << 20


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[DaemonProcess, str]]:
    b.require()
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    # the demo service's test stage runs the pytest installed beside Conveyor
    daemon, base = b.web_daemon(home, "--stage-inherit-venv")
    try:
        yield daemon, base
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def page(site: tuple[DaemonProcess, str]) -> Iterator[Any]:
    """A signed-in page (an admin's token, through the login form)."""
    daemon, base = site
    with b.launch() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        b.sign_in(page, base, daemon.issue_token("alice", ("admin",)))
        yield page
        context.close()


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    """A folder where the test drops the files its stages wait for."""
    folder = tmp_path / "gates"
    folder.mkdir()
    return folder


def _repo(tmp_path: Path, text: str) -> Path:
    return make_repo(tmp_path / "repo", {"conveyor.yaml": text}).path


def _status(page: Any, index: int) -> str:
    return str(page.get_attribute(f'g.node[data-stage="{index}"]', "data-status"))


def test_a_new_run_appears_and_its_graph_changes_colour_live(
    site: tuple[DaemonProcess, str], page: Any, tmp_path: Path, gates: Path
) -> None:
    daemon, base = site
    repo = _repo(
        tmp_path,
        f"""\
name: web-live
stages:
  checkout-tools:
    run: echo ready
  lint:
    needs: [checkout-tools]
    run: echo lint ok
  unit-tests:
    needs: [checkout-tools]
    run: while [ ! -f {gates}/tests ]; do sleep 0.05; done
  package:
    needs: [lint, unit-tests]
    run: echo packaged
""",
    )
    page.goto(f"{base}/")
    page.evaluate("window.__sameDocument = true")
    run = daemon.submit(repo)
    row = page.wait_for_selector(f'tr[data-run="{run.id}"]', timeout=15_000)
    assert row is not None and "web-live" in row.inner_text()
    assert page.evaluate("window.__sameDocument") is True  # no reload: the table is live
    b.shoot(page, "runs")

    page.click(f'tr[data-run="{run.id}"] a')
    page.wait_for_selector('g.node[data-stage="2"][data-status="running"]', timeout=15_000)
    page.evaluate("window.__sameDocument = true")
    edges = page.eval_on_selector_all("svg.dag .edges path", "paths => paths.length")
    assert edges == 4  # lint, unit-tests <- checkout-tools; package <- lint, unit-tests
    assert _status(page, 3) == "pending"
    b.shoot(page, "run-running")

    (gates / "tests").touch()
    page.wait_for_selector('g.node[data-stage="3"][data-status="succeeded"]', timeout=15_000)
    page.wait_for_selector('#run-head .badge[data-status="succeeded"]', timeout=15_000)
    assert [_status(page, i) for i in range(4)] == ["succeeded"] * 4
    assert page.evaluate("window.__sameDocument") is True  # coloured live, without reload
    timings = page.inner_text("#gantt")
    assert "queued" in timings and "package" in timings
    assert page.inner_text("#run-head").count(run.commit) == 1
    b.shoot(page, "run")


def test_a_stage_log_streams_new_lines_with_colours(
    site: tuple[DaemonProcess, str], page: Any, tmp_path: Path, gates: Path
) -> None:
    daemon, base = site
    repo = _repo(
        tmp_path,
        f"""\
name: web-log
stages:
  build:
    run:
      - printf '\\033[31mred <b>not bold</b>\\033[0m first line\\n'
      - while [ ! -f {gates}/more ]; do sleep 0.05; done
      - printf '\\033[1;32msecond line\\033[0m &amp; more\\n'
""",
    )
    run = daemon.submit(repo)
    daemon.wait_for_stage(run.id, "build")
    page.goto(f"{base}/runs/{run.id}/stages/build")
    page.wait_for_selector("#log >> text=first line", timeout=15_000)
    red = page.eval_on_selector_all("#log span.a-f1", "spans => spans.map(s => s.textContent)")
    assert any("red <b>not bold</b>" in text for text in red)  # text, never markup
    assert page.query_selector("#log b") is None
    page.evaluate("window.__sameDocument = true")

    (gates / "more").touch()
    page.wait_for_selector("#log >> text=second line", timeout=15_000)
    assert page.query_selector("#log span.a-f2.a-bo") is not None  # bold green
    assert "&amp; more" in page.inner_text("#log")
    page.wait_for_selector('#stage-head .badge[data-status="succeeded"]', timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True
    b.shoot(page, "log")


def test_a_failed_run_shows_the_failed_stage_and_its_reason(
    site: tuple[DaemonProcess, str], page: Any, tmp_path: Path
) -> None:
    daemon, base = site
    repo = _repo(
        tmp_path,
        """\
name: web-fail
stages:
  compile:
    run: echo compiled
  test:
    needs: [compile]
    run:
      - echo "3 tests, 1 failure"
      - exit 3
  publish:
    needs: [test]
    run: echo never
""",
    )
    run = daemon.wait(daemon.submit(repo).id)
    assert run.status == runs_pb2.RUN_STATUS_FAILED
    failed = stage(run, "test")
    page.goto(f"{base}/runs/{run.id}")
    assert _status(page, 1) == "failed"
    assert _status(page, 2) in ("skipped", "cancelled")
    row = page.inner_text('tr[data-stage="1"]')
    assert failed.reason and failed.reason in row
    assert "3" in page.inner_text('tr[data-stage="1"] td:nth-child(5)')  # exit code
    assert page.get_attribute("#run-head .badge", "data-status") == "failed"
    b.shoot(page, "run-failed")

    page.click('g.node[data-stage="1"]')
    page.wait_for_selector("#log >> text=3 tests, 1 failure")
    assert failed.reason in page.inner_text("#stage-head")


@pytest.mark.parametrize(
    "path",
    [
        "/runs/0123456789abcdef0123",  # no such run
        "/runs/not-a-run-id",
        "/runs/{run}/stages/nope",  # no such stage
        "/runs/{run}/stages/..%2F..%2Fconveyor.db",  # path traversal in a stage name
        "/runs/{run}/stages/..%2F..%2F..%2Fetc%2Fpasswd/raw",
        "/runs/{run}/stages/%2e%2e/raw",
        "/artifacts/sha256:0123",
        "/environments/nowhere",
        "/deployments/0123456789abcdef",
        "/static/..%2Fapp.py",
        "/no/such/page",
    ],
)
def test_bad_urls_answer_a_404_page(
    site: tuple[DaemonProcess, str], page: Any, tmp_path: Path, path: str
) -> None:
    daemon, base = site
    run = _a_finished_run(daemon, tmp_path)
    answer = page.goto(base + path.replace("{run}", run))
    assert answer is not None and answer.status == 404, path
    text = page.inner_text("main")
    assert "404" in text and "Traceback" not in page.content()
    assert "root:" not in text and "SQLite" not in text


_finished: dict[str, str] = {}


def _a_finished_run(daemon: DaemonProcess, tmp_path: Path) -> str:
    if "run" not in _finished:
        repo = _repo(tmp_path, "name: web-404\nstages:\n  only:\n    run: echo hi\n")
        _finished["run"] = daemon.wait(daemon.submit(repo).id).id
    return _finished["run"]


def test_a_50_mb_log_page_stays_small_and_responsive(
    site: tuple[DaemonProcess, str], page: Any, tmp_path: Path, gates: Path
) -> None:
    """The page follows a stage that writes 50 MB of coloured lines: it
    keeps only the end of the log, its JavaScript heap stays bounded, and
    it answers at once while and after the log pours in."""
    daemon, base = site
    flood = (
        "awk 'BEGIN { for (i = 0; ; i++) printf \"\\033[32m%08d\\033[0m the quick brown fox"
        f" jumps over the lazy dog \\033[1mok\\033[0m\\n\", i }}' | head -c {50 * MB}\n"
    )
    repo = make_repo(
        tmp_path / "repo",
        {
            "flood.sh": flood,
            "conveyor.yaml": f"""\
name: web-big
stages:
  flood:
    run:
      - while [ ! -f {gates}/go ]; do sleep 0.05; done
      - sh flood.sh
""",
        },
    ).path
    run = daemon.submit(repo)
    daemon.wait_for_stage(run.id, "flood")
    page.goto(f"{base}/runs/{run.id}/stages/flood?offset=0")
    before = b.js_heap(page)
    (gates / "go").touch()
    deadline = time.monotonic() + 90
    peak = before
    while "has finished" not in page.inner_text("#log-state"):
        assert time.monotonic() < deadline, "the log never finished"
        started = time.perf_counter()
        page.evaluate("document.getElementById('log').childElementCount")
        answered = time.perf_counter() - started
        assert answered < 5.0, f"the page took {answered:.1f} s to answer"
        peak = max(peak, b.js_heap(page))
    finished = daemon.wait(run.id)
    assert stage(finished, "flood").log_size > 50 * MB
    after = b.js_heap(page)
    kept = page.evaluate("document.getElementById('log').textContent.length")
    assert kept < 4 * MB, f"the page holds {kept} characters of log"
    assert peak < 80 * MB, f"the page's heap reached {peak / MB:.0f} MB"
    assert after < 48 * MB, f"the page's heap is {after / MB:.0f} MB after the log"
    # it kept up by skipping what it could not show, or by dropping the oldest
    dropped = page.query_selector("#log .skipped") or page.query_selector("#log-earlier[href]")
    assert dropped is not None

    # opened afterwards: the last 512 KiB only, the rest a link away
    page.goto(f"{base}/runs/{run.id}/stages/flood")
    kept = page.evaluate("document.getElementById('log').textContent.length")
    assert kept <= 512 << 10
    assert b.js_heap(page) < 32 * MB
    page.goto(f"{base}/runs/{run.id}/stages/flood?offset=0")
    assert page.evaluate("document.getElementById('log').textContent.length") <= 512 << 10
    assert page.query_selector("a:has-text('later output')") is not None
    with urllib.request.urlopen(f"{base}/runs/{run.id}/stages/flood/raw", timeout=10) as raw:
        assert raw.url.startswith(f"{base}/login?")  # no session: sign in first
        assert b"quick brown fox" not in raw.read()


def test_a_followed_log_keeps_only_its_last_megabytes(
    site: tuple[DaemonProcess, str], page: Any, tmp_path: Path, gates: Path
) -> None:
    """A log written at a pace the page keeps up with: the page drops its
    oldest lines past 2 MiB and links to them instead."""
    daemon, base = site
    repo = make_repo(
        tmp_path / "repo",
        {
            "drip.sh": "for n in $(seq 1 80); do head -c 81920 /dev/zero | tr '\\0' x; echo;"
            " sleep 0.02; done\n",
            "conveyor.yaml": f"""\
name: web-drip
stages:
  drip:
    run:
      - while [ ! -f {gates}/go ]; do sleep 0.05; done
      - sh drip.sh
""",
        },
    ).path
    run = daemon.submit(repo)
    daemon.wait_for_stage(run.id, "drip")
    page.goto(f"{base}/runs/{run.id}/stages/drip")
    (gates / "go").touch()
    page.wait_for_selector("#log-state >> text=has finished", timeout=60_000)
    kept = page.evaluate("document.getElementById('log').textContent.length")
    assert 1 * MB < kept <= 2 * MB + 128 * 1024
    earlier = page.get_attribute("#log-earlier", "href")
    assert earlier is not None and "offset=" in earlier
    assert page.query_selector("#log .skipped") is None  # it kept up: nothing skipped


def test_the_cli_links_each_run_to_its_page(
    site: tuple[DaemonProcess, str], page: Any, tmp_path: Path
) -> None:
    daemon, base = site
    repo = _repo(tmp_path, "name: web-cli\nstages:\n  only:\n    run: echo hi\n")
    cli = [sys.executable, "-m", "conveyor.client.cli", "--address", daemon.address]
    submitted = subprocess.run(
        [*cli, "submit", "--repo", str(repo), "--ref", "main"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.split()[1]
    assert f"  {base}/runs/{run_id}\n" in submitted.stdout
    daemon.wait(run_id)
    trace = subprocess.run([*cli, "trace", run_id], capture_output=True, text=True, timeout=60)
    assert trace.stdout.rstrip().endswith(f"page: {base}/runs/{run_id}")
    page.goto(f"{base}/runs/{run_id}")
    assert page.get_attribute("#run-head .badge", "data-status") == "succeeded"


DEMO_SERVICE = Path(__file__).resolve().parents[2] / "examples" / "demo-service"
#: What tools leave beside the sources (``ruff check .`` at the top makes
#: ``.ruff_cache`` here, beside the demo's own ruff.toml).
CACHES = {"__pycache__", ".ruff_cache", ".pytest_cache", ".mypy_cache"}


def test_the_demo_pipeline_shows_its_reports_and_artifact(
    site: tuple[DaemonProcess, str], page: Any, tmp_path: Path
) -> None:
    """The example service's pipeline (lint, test and scan with parsed
    reports, a file artifact with signed provenance), page by page; the
    screenshots of docs/dashboard.md come from here."""
    daemon, base = site
    files = {
        str(path.relative_to(DEMO_SERVICE)): path.read_text()
        for path in sorted(DEMO_SERVICE.rglob("*"))
        if path.is_file() and not CACHES.intersection(path.parts)
    }
    repo = make_repo(tmp_path / "demo-service", files).path
    run = daemon.submit(repo)
    page.goto(f"{base}/runs/{run.id}")
    page.wait_for_selector('#run-head .badge[data-status="succeeded"]', timeout=60_000)
    reports = page.inner_text("#reports")
    assert "gate passed" in reports and "passed 3" in reports.replace("\n", " ")
    b.shoot(page, "demo-run")

    page.goto(f"{base}/runs/{run.id}/stages/test")
    assert "3 passed" in page.inner_text("#log")
    b.shoot(page, "demo-log", full_page=False)

    page.goto(f"{base}/")
    b.shoot(page, "runs")

    page.goto(f"{base}/artifacts")
    page.click("td a:has-text('greeter.pyz')")
    facts = page.inner_text("dl.facts")
    assert "verified" in facts and "demo-service #" in facts
    assert page.get_attribute("dd .badge", "data-status") == "succeeded"
    b.shoot(page, "artifact")

    page.goto(f"{base}/server")
    assert "local_executor" in page.inner_text("main")
    b.shoot(page, "server")
