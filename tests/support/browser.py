"""A real browser for the dashboard tests: Debian's ``chromium`` package driven by Playwright.

Never a browser Playwright downloads (``playwright install`` cannot fetch here, and CI installs
the distribution's package): ``executable_path=/usr/bin/chromium``, with the flags that keep
Chromium off the network (no component updates, no sync, no QUIC probes, no first-run pages).
Every page records its console errors and uncaught exceptions; tests assert there are none.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser as PlaywrightBrowser
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

CHROMIUM = os.environ.get("ICEFLOE_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",  # as root in CI; the pages are our own
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # a loaded 2-core machine renders slowly; a wait that ends early costs nothing


@dataclass
class UserContext:
    """One user's browser context (cookies of its own) and its page."""

    page: Page
    shots: Path
    console_errors: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        """Save a full-page screenshot as ``<shots>/<name>.png``."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def take_console_errors(self, pattern: str) -> list[str]:
        """Remove (and return) the console errors matching ``pattern``: the ones a test expects,
        such as Chromium's "Failed to load resource: … 401" for a refused sign-in."""
        taken = [e for e in self.console_errors if re.search(pattern, e)]
        self.console_errors[:] = [e for e in self.console_errors if e not in taken]
        return taken


@dataclass
class Browser:
    browser: PlaywrightBrowser

    @contextmanager
    def context(self, base_url: str, *, width: int, height: int, shots: Path) -> Iterator[UserContext]:
        ctx = self.browser.new_context(base_url=base_url, viewport={"width": width, "height": height})
        ctx.set_default_timeout(TIMEOUT_MS)
        try:
            page = ctx.new_page()
            user = UserContext(page, shots)

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    user.console_errors.append(f"{page.url}: {message.text}")

            def on_error(error: Any) -> None:
                user.console_errors.append(f"{page.url}: uncaught {error}")

            page.on("console", on_console)
            page.on("pageerror", on_error)
            yield user
        finally:
            ctx.close()


@contextmanager
def launch() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError(f"no browser at {CHROMIUM}: apt-get install chromium (as .ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=TIMEOUT_MS)
        try:
            yield Browser(browser)
        finally:
            browser.close()
