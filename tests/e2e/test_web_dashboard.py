"""The web dashboard in a real browser: Debian's chromium driven by Playwright, against the API, a
worker and the scheduler as real processes, the sandbox cluster and its Prometheus.

Signs in with a wrong token (refused), as a viewer (no buttons; a label that is HTML shows as
text), then as an operator: watches the rollout advance without reloading, aborts it with a
reason and sees it end `aborted`. The two main pages are photographed on the way: into
`AUTOCANARY_SCREENSHOTS` when set (`docs/` for the README), else a temporary folder.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from sandbox.cluster import Endpoints
from sandbox.processes import BackgroundLoad, Processes
from sandbox.prometheus import free_port
from tests.knative import create, custom_objects, hello_service, new_revision, service_ready, wait_for

pytestmark = pytest.mark.slow

VIEWER, DEPLOYER, OPERATOR = "dash-view-secret", "dash-deploy-secret", "dash-operate-secret"
XSS = "<img src=x onerror=alert(1)>"
CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic is refused on a closed network; these keep it quiet.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Running:
    api: str
    endpoints: Endpoints


@pytest.fixture(scope="module")
def running(sandbox: Endpoints, redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    base = tmp_path_factory.mktemp("web-dashboard")
    port = free_port()
    env = {
        "AUTOCANARY_REDIS_URL": redis_server,
        "AUTOCANARY_REDIS_PREFIX": f"web-{uuid.uuid4().hex[:6]}",
        "AUTOCANARY_KUBECONFIG": sandbox.kubeconfig,
        "AUTOCANARY_PROMETHEUS_URL": sandbox.prometheus or "",
        "AUTOCANARY_TOKENS": f"wall:viewer:{VIEWER},pipeline:deployer:{DEPLOYER},oncall:operator:{OPERATOR}",
        "AUTOCANARY_METRICS_LAG_SECONDS": "1",
        "AUTOCANARY_METRICS_MIN_WINDOW_SECONDS": "2",
    }
    processes = Processes(env, base)
    try:
        processes.start("api", ["api", "--port", str(port)])
        processes.start("worker", ["worker"])
        processes.start("scheduler", ["scheduler"])
        api = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{api}/healthz"), timeout=30, what="the API")
        yield Running(api, sandbox)
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("AUTOCANARY_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _answers(url: str) -> bool | None:
    try:
        return httpx.get(url, timeout=2).status_code == 200 or None
    except httpx.HTTPError:
        return None


def _rollout(running: Running, namespace: str) -> str:
    """A Knative service with a good canary under load, and a rollout of it registered over HTTP."""
    objects = custom_objects(running.endpoints)
    create(objects, namespace, hello_service("web", "World"))
    service_ready(objects, namespace, "web", "web-00001")
    new_revision(objects, namespace, "web", "Knative", pin="web-00001")
    service_ready(objects, namespace, "web", "web-00002")
    body: dict[str, Any] = {
        "namespace": namespace,
        "service": "web",
        "policy": "default",
        "policy_overrides": {
            "steps": [5, 10, 25, 50],
            "step_min_duration": "6s",
            "interval": "1s",
            "min_requests_per_step": 5,
            "on_insufficient_traffic": "hold",
            "alpha_errors": 0.001,
            "alpha_latency": 0.001,
        },
        "labels": {"note": XSS, "commit": "abc123"},
    }
    answer = httpx.post(
        f"{running.api}/v1/rollouts", json=body, headers={"Authorization": f"Bearer {DEPLOYER}"}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _sign_in(page: Page, token: str) -> None:
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def _watched(page: Page) -> list[str]:
    """Fails the test on any dialog (an injected `alert` would open one) or page error."""
    problems: list[str] = []

    def dialog_opened(dialog: Dialog) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", dialog_opened)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    return problems


def test_on_call_signs_in_watches_a_rollout_advance_and_aborts_it(
    running: Running, browser: Browser, namespace: str, screenshots: Path
) -> None:
    load = BackgroundLoad(running.endpoints.gateway, [f"web.{namespace}.example.com"], rate=20)
    try:
        rollout_id = _rollout(running, namespace)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        problems = _watched(page)

        # A wrong token is refused in words, and nothing is stored in the browser.
        page.goto(f"{running.api}/ui")
        _sign_in(page, "not-a-token")
        expect(page.get_by_role("alert")).to_have_text("That token is not known to this installation.")
        assert page.evaluate("localStorage.length + sessionStorage.length") == 0

        # A viewer sees the rollout, its label as text, and no button that acts.
        _sign_in(page, VIEWER)
        expect(page.locator("#who")).to_have_text("wall (viewer)")
        page.get_by_role("link", name=f"{namespace}/web").click()
        expect(page).to_have_url(f"{running.api}/ui/rollouts/{rollout_id}")
        expect(page.locator("dd", has_text="note=")).to_contain_text(f"note={XSS}")
        assert page.locator("main img").count() == 0
        expect(page.get_by_role("button", name="Abort")).to_have_count(0)
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

        # The operator watches it advance live, without reloading.
        _sign_in(page, OPERATOR)
        step = page.locator("dt").filter(has_text=re.compile(r"^Step$")).locator("xpath=following-sibling::dd[1]")
        expect(step).to_contain_text(re.compile(r"^[12]/4"), timeout=60_000)
        expect(step).to_contain_text(re.compile(r"^[34]/4"), timeout=60_000)
        expect(page.locator(".log li").first).to_be_visible()
        page.screenshot(path=str(screenshots / "dashboard-rollout.png"), full_page=True)

        # Abort by keyboard alone, with a reason, confirmed; the answer in words, then the end, live.
        page.get_by_role("button", name="Abort").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_label("Reason (recorded with your name)")).to_be_focused()
        page.keyboard.type("pager: p99 up on checkout")
        page.keyboard.press("Tab")  # Cancel
        page.keyboard.press("Tab")  # Abort, the confirming button
        expect(page.locator("#confirm-ok")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator(".result")).to_contain_text("Abort accepted (202) from oncall")
        expect(page.get_by_role("heading", level=1)).to_contain_text("aborted", timeout=30_000)
        expect(page.get_by_role("list", name="Actions by hand")).to_contain_text("by oncall: pager: p99 up on checkout")
        expect(page.get_by_role("button", name="Abort")).to_have_count(0)

        page.get_by_role("link", name="Rollouts").click()
        expect(page.get_by_role("link", name=f"{namespace}/web")).to_be_visible()
        expect(page.locator("tbody tr", has_text=f"{namespace}/web").locator(".phase")).to_have_text("aborted")
        page.screenshot(path=str(screenshots / "dashboard-rollouts.png"))

        # Readable on a phone's width: nothing wider than the screen but the table's own scroller.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{running.api}/ui/rollouts/{rollout_id}")
        expect(page.get_by_role("heading", level=1)).to_contain_text("aborted")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert problems == []
        context.close()
    finally:
        load.stop()
    assert load.sent > 0


def test_pages_without_a_session_show_the_sign_in_page(running: Running, browser: Browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    problems = _watched(page)
    page.goto(f"{running.api}/ui/rollouts/nothing-here")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    _sign_in(page, VIEWER)
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.get_by_role("link", name="Policies").click()
    expect(page.get_by_role("heading", name="default")).to_be_visible()
    expect(page.locator("section", has_text="default").locator("dd").first).to_be_visible()
    cookie = next(c for c in context.cookies() if c["name"] == "autocanary_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert VIEWER not in cookie["value"]
    assert problems == []
    context.close()
