"""Screenshots of the status page for the docs: docs/img/dashboard.png and dashboard-phone.png.

Runs ``aioproc run --http`` on a small demo configuration in a temporary
directory, opens the page in Debian's headless Chromium (through playwright;
never a downloaded browser), waits until the services have settled, opens a log
tail and saves a desktop and a phone-sized screenshot::

    .venv/bin/python tools/screenshot.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

CONFIG = """
[services.migrate]
command = "echo 'applying 3 migrations'; sleep 0.3; echo 'schema at version 42'"
restart = "no"

[services.db]
command = "echo 'db: accepting connections on :5432'; exec sleep 3600"
ready = { line = "accepting connections" }

[services.api]
command = '''
echo 'api: listening on http://127.0.0.1:8000'
i=0; while :; do i=$((i+1)); echo "GET /items/$i 200 $((i % 7 + 3)) ms"; sleep 0.7; done
'''
depends_on = ["db"]

[services.worker]
command = "echo 'worker: waiting for jobs'; exec sleep 3600"
depends_on = ["db"]

[services.mailer]
command = "echo 'mailer: SMTP relay unreachable'; exit 1"
backoff = { initial = 0.1, max = 0.2 }
start_limit = { burst = 3, interval = 60 }
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"))
    args = parser.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="aioproc-shot-") as tmp:
        (Path(tmp) / "aioproc.toml").write_text(CONFIG)
        proc = subprocess.Popen(
            [sys.executable, "-m", "aioproc", "run", "--no-control", "--http", "127.0.0.1:0"],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        try:
            url = _url(proc)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                _shoot(browser, url, out / "dashboard.png", {"width": 1200, "height": 700}, 1)
                _shoot(browser, url, out / "dashboard-phone.png", {"width": 390, "height": 844}, 2)
                browser.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    print(f"saved {out / 'dashboard.png'} and {out / 'dashboard-phone.png'}")


def _url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            line = proc.stdout.readline()
            if m := re.search(r"serving HTTP at (http://\S+)", line):
                return m.group(1)
    raise SystemExit("aioproc run did not start serving HTTP")


def _shoot(browser: object, url: str, path: Path, viewport: dict[str, int], scale: int) -> None:
    context = browser.new_context(  # type: ignore[attr-defined]
        viewport=viewport, device_scale_factor=scale, color_scheme="light"
    )
    page = context.new_page()
    page.goto(url)
    row = page.locator('tr.svc[data-service="mailer"] .state')
    expect(row).to_have_text("fatal", timeout=20_000)
    expect(page.locator('tr.svc[data-service="api"] .state')).to_have_text("running")
    time.sleep(3)  # uptimes past zero, a few log lines from api
    page.locator('tr.svc[data-service="api"] button.logs').click()
    page.wait_for_timeout(300)
    page.screenshot(path=str(path), full_page=viewport["width"] < 500)
    context.close()


if __name__ == "__main__":
    main()
