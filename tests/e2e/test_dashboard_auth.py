"""Who may see and do what on the dashboard, in a real browser against a
real daemon with authentication on: no page without a session, sign-in
with the API's tokens (bad, revoked or role-less ones refused, and
audited), approve and reject buttons only for approvers, and posts
refused without the session's CSRF token or from another origin.

One daemon (with an environment that needs approval and a
deployment waiting for it) and one browser for the module; each user signs
in in a browser context of their own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor.v1 import audit_pb2, auth_pb2, delivery_pb2
from tests.support import browser as b
from tests.support import delivery as d
from tests.support.daemon import DaemonProcess
from tests.support.repos import make_repo

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@dataclass
class Site:
    daemon: DaemonProcess
    base: str
    browser: Any
    #: A deployment to the release environment, waiting for approval.
    pending: str

    def user(self, token: str | None) -> Any:
        """A page in a context of its own, signed in with ``token``."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        if token is not None:
            b.sign_in(page, self.base, token)
        return page

    def audit(self, action: str) -> list[audit_pb2.AuditEvent]:
        reply = self.daemon.stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(action=action, page_size=100), timeout=10
        )
        return list(reply.events)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    b.require()
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    staging, production, release = d.free_port(), d.free_port(), d.free_port()
    extra = f"""\
  release:
    run: [python3, "{{artifact}}"]
    port: {release}
    health: {{path: /health, interval: 0.05}}
    watch: 0
    requires_approval: true
"""
    repo = make_repo(
        tmp_path_factory.mktemp("shop") / "shop",
        {
            "conveyor.yaml": d.pipeline(
                staging_port=staging, production_port=production, extra=extra
            ),
            "service.py": d.service_source("1.0.0"),
            "deploy/production.env": "GREETING=from the env file\n",
        },
    )
    daemon, base = b.web_daemon(home)
    try:
        digest = d.build(daemon, repo)
        pending = d.deploy(daemon, "release", digest)
        assert pending.status == delivery_pb2.DEPLOYMENT_STATUS_PENDING_APPROVAL
        with b.launch() as browser:
            yield Site(daemon, base, browser, pending.id)
    finally:
        daemon.stop()
        d.stop_processes_of(home)
        shutil.rmtree(home, ignore_errors=True)


def test_no_page_without_signing_in(site: Site) -> None:
    page = site.user(None)
    page.goto(f"{site.base}/")
    assert page.url.startswith(f"{site.base}/login?")
    assert page.query_selector("input[name=token]") is not None
    for path in ("/server", "/environments/release", f"/deployments/{site.pending}"):
        page.goto(site.base + path)
        assert page.url.startswith(f"{site.base}/login?"), path
        assert "release" not in page.inner_text("main")
    stream = page.request.get(
        f"{site.base}/live/runs", headers={"accept": "text/event-stream"}, max_redirects=0
    )
    assert stream.status == 401
    posted = page.request.post(
        f"{site.base}/deployments/{site.pending}/approve",
        form={"csrf": "x"},
        headers={"origin": site.base},
        max_redirects=0,
    )
    assert posted.status == 401
    page.context.close()


def test_bad_tokens_are_refused_and_audited(site: Site) -> None:
    revoked = site.daemon.issue_token("mallory", ("admin",), name="revoked")
    token_id = "t_" + revoked.split("_")[1]
    site.daemon.stub.RevokeToken(auth_pb2.RevokeTokenRequest(token_id=token_id), timeout=10)
    page = site.user(None)
    for token, why in (("not-a-token", "malformed"), (revoked, "was revoked")):
        page.goto(f"{site.base}/login")
        page.fill("input[name=token]", token)
        with page.expect_response(f"{site.base}/login") as answer:
            page.click("button[type=submit]")
        assert answer.value.status == 401
        assert why in page.inner_text(".reason")
    refusals = [e for e in site.audit("WebLogin") if e.outcome == "unauthenticated"]
    assert any("malformed" in e.detail for e in refusals)
    assert any(e.token_id == token_id and "revoked" in e.detail for e in refusals)
    assert all(e.peer.startswith("web 127.0.0.1:") for e in refusals)
    page.context.close()


def test_a_token_without_the_read_role_sees_nothing(site: Site) -> None:
    page = site.user(site.daemon.issue_token("nobody", ()))
    answer = page.goto(f"{site.base}/runs")
    assert answer is not None and answer.status == 403
    assert "may not read" in page.inner_text("main")
    page.context.close()


def test_a_revoked_token_ends_its_session(site: Site) -> None:
    token = site.daemon.issue_token("dave", ("viewer",), name="dave")
    page = site.user(token)
    page.goto(f"{site.base}/server")
    assert "Plugins" in page.inner_text("main")
    site.daemon.stub.RevokeToken(
        auth_pb2.RevokeTokenRequest(token_id="t_" + token.split("_")[1]), timeout=10
    )
    page.goto(f"{site.base}/server")
    assert page.url.startswith(f"{site.base}/login?")
    assert "session ended" in page.inner_text("main")
    page.context.close()


def test_only_approvers_get_the_buttons_and_posts_need_the_csrf_token(site: Site) -> None:
    viewer = site.user(site.daemon.issue_token("bob", ("viewer",)))
    viewer.goto(f"{site.base}/environments/release")
    assert "waits for approval" in viewer.inner_text(".approval")
    assert viewer.query_selector("button.approve") is None
    assert "Only approvers of release" in viewer.inner_text(".approval")
    # bob forges the post with his own session's CSRF token: the rule refuses it
    csrf = viewer.get_attribute("form.who input[name=csrf]", "value")
    forged = viewer.request.post(
        f"{site.base}/deployments/{site.pending}/approve",
        form={"csrf": csrf or "", "comment": "sneaky"},
        headers={"origin": site.base},
        max_redirects=0,
    )
    assert forged.status == 403
    assert "approver:release" in forged.text()

    approver = site.user(site.daemon.issue_token("carol", ("approver:release",)))
    approver.goto(f"{site.base}/environments/release")
    assert approver.query_selector("button.approve") is not None
    b.shoot(approver, "environment-approval")
    for form, origin, why in (
        ({"csrf": "wrong"}, site.base, "CSRF"),
        ({}, site.base, "CSRF"),
        (None, "http://evil.example", "posted from http://evil.example"),
    ):
        token = approver.get_attribute(".approval input[name=csrf]", "value") or ""
        answer = approver.request.post(
            f"{site.base}/deployments/{site.pending}/approve",
            form=form if form is not None else {"csrf": token},
            headers={"origin": origin},
            max_redirects=0,
        )
        assert answer.status == 403, why
        assert why in answer.text()
    assert (
        site.daemon.stub.GetDeployment(
            delivery_pb2.GetDeploymentRequest(deployment_id=site.pending), timeout=10
        ).status
        == delivery_pb2.DEPLOYMENT_STATUS_PENDING_APPROVAL
    )

    approver.fill(".approval input[name=comment]", "change 42 <looks> fine")
    approver.click("button.approve")
    approver.wait_for_url(f"{site.base}/deployments/{site.pending}?done=approved")
    assert "Approved" in approver.inner_text(".notice")
    done = d.finished(site.daemon, site.pending)
    assert done.status == delivery_pb2.DEPLOYMENT_STATUS_HEALTHY
    assert done.decided_by == "carol" and done.decision_comment == "change 42 <looks> fine"
    approver.goto(f"{site.base}/deployments/{site.pending}")
    assert "change 42 <looks> fine" in approver.inner_text("main")
    b.shoot(approver, "deployment")
    approver.goto(f"{site.base}/environments/release")
    b.shoot(approver, "environment")

    approvals = site.audit("Approve")
    assert any(
        e.identity == "carol" and e.outcome == "ok" and e.peer.startswith("web ") for e in approvals
    )
    assert any(e.identity == "bob" and e.outcome == "denied" for e in approvals)
    assert sum(1 for e in approvals if e.identity == "carol" and e.outcome == "denied") == 3
    viewer.context.close()
    approver.context.close()


def test_signing_out_ends_the_session(site: Site) -> None:
    page = site.user(site.daemon.issue_token("erin", ("viewer",)))
    page.goto(f"{site.base}/")
    page.click("form.who button")
    page.wait_for_url(f"{site.base}/login")
    page.goto(f"{site.base}/")
    assert page.url.startswith(f"{site.base}/login?")
    page.context.close()


def test_a_login_link_signs_in_once_as_the_caller(site: Site) -> None:
    cli = [sys.executable, "-m", "conveyor.client.cli", "--address", site.daemon.address]
    made = subprocess.run([*cli, "web-login"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert link.startswith(f"{site.base}/login/") and "works once" in made.stderr
    page = site.user(None)
    page.goto(link)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.base}/")
    me = pwd.getpwuid(os.getuid()).pw_name  # the daemon's own user, on its socket
    assert page.inner_text("form.who span") == me
    again = site.user(None)
    again.goto(link)
    with again.expect_response(link) as answer:
        again.click("button[type=submit]")
    assert answer.value.status == 401 and "not valid" in again.inner_text(".reason")
    logins = site.audit("WebLogin")
    assert any(e.identity == me and "login link" in e.detail for e in logins)
    assert any(e.identity == me for e in site.audit("CreateWebLogin"))

    status = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=60)
    assert f"dashboard:     {site.base}" in status.stdout
    page.context.close()
    again.context.close()
