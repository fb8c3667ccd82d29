"""The status page at ``/`` in a real headless Chromium (Debian's, driven by Playwright).

One browser for the module, one ``aioproc run --http`` for the module (the
tests only ever look at what they changed themselves). The table lists every
service; a state change made through the API shows without a reload; the
restart button restarts (the pid changes, also by the API); a log tail shows new
lines; a service printing HTML shows it as text; a phone-sized viewport has no
horizontal overflow; with a token, the page asks for it once. Never downloads a
browser: without /usr/bin/chromium the module is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .test_ctl import Run

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")

CONFIG = """
[services.db]
command = "trap 'echo db got HUP' HUP; echo db up; while :; do sleep 30 & wait $!; done"
ready = { line = "^db up$" }

[services.web]
command = "echo web up; exec sleep 600"
depends_on = ["db"]

[services.xss]
command = "echo '<img src=x onerror=window.__xss=1>'; echo '<b>bold</b>'; exec sleep 600"

[services.raw]
command = "echo raw up; exec sleep 600"
output = "inherit"
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _start(directory: Path, config: str, env: dict[str, str] | None = None) -> tuple[Run, str]:
    (directory / "aioproc.toml").write_text(config)
    run = Run(directory, "--no-control", "--http", "127.0.0.1:0", env=env)
    url = run.until(r"serving HTTP at (http://\S+)").group(1)
    return run, url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, str]]:
    run, url = _start(tmp_path_factory.mktemp("page"), CONFIG)
    try:
        run.until(r"\| web started")
        yield run, url
    finally:
        run.close()


@pytest.fixture
def page(browser: Any, server: tuple[Run, str]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server[1])
    try:
        yield page
        assert errors == [], errors  # CSP violations and script errors show up here
    finally:
        context.close()


def row(page: Any, name: str) -> Any:
    return page.locator(f'tr.svc[data-service="{name}"]')


def api(server: tuple[Run, str]) -> httpx.Client:
    return httpx.Client(base_url=server[1], timeout=20)


def test_the_table_shows_every_service(page: Any) -> None:
    for name in ("db", "web", "xss", "raw"):
        sync_api.expect(row(page, name).locator(".state")).to_have_text("running")
    sync_api.expect(page.locator("#conn-text")).to_have_text("live")
    assert page.locator("tr.svc td.name").all_text_contents() == ["db", "web", "xss", "raw"]
    sync_api.expect(row(page, "db").locator(".ready")).to_have_text("yes")
    assert row(page, "db").locator(".uptime").text_content() != "-"


def test_a_state_change_shows_without_reload(page: Any, server: tuple[Run, str]) -> None:
    sync_api.expect(row(page, "web").locator(".state")).to_have_text("running")
    page.evaluate("window.__same_page = true")
    with api(server) as client:
        assert client.post("/api/v1/services/web/stop").json()["state"] == "stopped"
        sync_api.expect(row(page, "web").locator(".state")).to_have_text("stopped")
        sync_api.expect(row(page, "web").locator(".pid")).to_have_text("-")
        client.post("/api/v1/services/web/start")
        sync_api.expect(row(page, "web").locator(".state")).to_have_text("running")
    assert page.evaluate("window.__same_page") is True  # no reload happened


def test_the_restart_button_restarts(page: Any, server: tuple[Run, str]) -> None:
    pid_cell = row(page, "web").locator(".pid")
    sync_api.expect(row(page, "web").locator(".state")).to_have_text("running")
    before = pid_cell.text_content()
    assert before is not None
    assert before.isdigit()
    row(page, "web").locator("button.restart").click()
    sync_api.expect(pid_cell).not_to_have_text(before)
    sync_api.expect(row(page, "web").locator(".state")).to_have_text("running")
    after = pid_cell.text_content()
    with api(server) as client:
        assert str(client.get("/api/v1/services/web").json()["pid"]) == after


def test_a_stopped_service_gets_a_start_button(page: Any, server: tuple[Run, str]) -> None:
    button = row(page, "xss").locator("button.restart")
    sync_api.expect(button).to_have_text("Restart")
    with api(server) as client:
        assert client.post("/api/v1/services/xss/stop").json()["state"] == "stopped"
    sync_api.expect(row(page, "xss").locator(".state")).to_have_text("stopped")
    sync_api.expect(button).to_have_text("Start")
    button.click()
    sync_api.expect(row(page, "xss").locator(".state")).to_have_text("running")
    sync_api.expect(button).to_have_text("Restart")


def test_the_log_tail_shows_new_lines(page: Any, server: tuple[Run, str]) -> None:
    row(page, "db").locator("button.logs").click()
    log = page.locator('tr.logrow[data-service="db"] pre.log')
    sync_api.expect(log).to_contain_text("db up")
    with api(server) as client:
        client.post("/api/v1/services/db/signal", json={"signal": "HUP"})
    sync_api.expect(log).to_contain_text("db got HUP")


def test_the_log_tail_of_a_service_whose_output_is_not_kept_says_so(
    page: Any, server: tuple[Run, str]
) -> None:
    with api(server) as client:
        assert client.get("/api/v1/services/raw").json()["logs_kept"] is False
        assert client.get("/api/v1/services/db").json()["logs_kept"] is True
    sync_api.expect(row(page, "raw").locator(".state")).to_have_text("running")
    row(page, "raw").locator("button.logs").click()
    log = page.locator('tr.logrow[data-service="raw"] pre.log')
    sync_api.expect(log).to_contain_text('output = "inherit"')
    sync_api.expect(log).to_contain_text("not kept")


def test_service_output_is_text_never_html(page: Any) -> None:
    row(page, "xss").locator("button.logs").click()
    log = page.locator('tr.logrow[data-service="xss"] pre.log')
    sync_api.expect(log).to_contain_text("<img src=x onerror=window.__xss=1>")
    sync_api.expect(log).to_contain_text("<b>bold</b>")
    assert page.locator("pre.log img, pre.log b").count() == 0
    assert page.evaluate("window.__xss") is None


def test_a_phone_viewport_has_no_horizontal_overflow(browser: Any, server: tuple[Run, str]) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    try:
        page = context.new_page()
        page.goto(server[1])
        sync_api.expect(row(page, "xss").locator(".state")).to_have_text("running")
        row(page, "xss").locator("button.logs").click()
        sync_api.expect(page.locator('tr.logrow[data-service="xss"] pre.log')).to_contain_text(
            "bold"
        )
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        box = row(page, "web").locator("button.restart").bounding_box()
        assert box is not None
        assert box["x"] + box["width"] <= 390
    finally:
        context.close()


def test_with_a_token_the_page_asks_for_it_once(browser: Any, tmp_path: Path) -> None:
    run, url = _start(
        tmp_path, '[services.one]\ncommand = "exec sleep 600"\n', {"AIOPROC_HTTP_TOKEN": "tok-123"}
    )
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        sync_api.expect(page.locator("#token-form")).to_be_visible()
        page.fill("#token", "wrong")
        page.click("#token-form button")
        sync_api.expect(page.locator("#token-form")).to_be_visible()  # asked again
        page.fill("#token", "tok-123")
        page.click("#token-form button")
        sync_api.expect(row(page, "one").locator(".state")).to_have_text("running")
        page.reload()  # kept in the tab: not asked again
        sync_api.expect(row(page, "one").locator(".state")).to_have_text("running")
        assert page.locator("#token-form").is_hidden()
        assert page.evaluate("sessionStorage.getItem('aioproc-token')") == "tok-123"
    finally:
        context.close()
        run.close()
