"""Driving the web console in headless Chromium (Debian's, via Playwright), with the network cut off.

Every request a page makes is routed through `Recorder`: requests to loopback go on, anything else is
aborted and recorded, so a test asserts that nothing left the machine. Console errors, uncaught exceptions and
failed requests are recorded too. The API key is placed in the tab's sessionStorage before any script runs,
as the sign-in form would leave it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright

from tests.utils.browser import CHROMIUM_FLAGS, chromium_path

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
KEY_ITEM = "trainyard.api-key"


@dataclass
class Recorder:
    """What one page did: requests that tried to leave loopback, console errors, failed requests, /v1 headers."""

    left_loopback: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    api_requests: list[tuple[str, str | None]] = field(default_factory=list)  # (url, Authorization)

    def route(self, route: Route) -> None:
        url = route.request.url
        host = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:")) or host in LOOPBACK:
            if urlsplit(url).path.startswith("/v1/"):
                self.api_requests.append((url, route.request.headers.get("authorization")))
            route.continue_()
        else:
            self.left_loopback.append(url)
            route.abort("internetdisconnected")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def assert_clean(self) -> None:
        assert self.left_loopback == [], f"requests left loopback: {self.left_loopback}"
        assert self.console_errors == [], self.console_errors
        assert self.failed == [], self.failed


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def console_page(
    browser: Browser, key: str | None = None, width: int = 1366, height: int = 900, bypass_csp: bool = False
) -> Iterator[tuple[Page, Recorder]]:
    """A fresh tab (its own sessionStorage) at `width`, signed in with `key` when one is given.

    `bypass_csp`: let the test inject a script of its own (axe-core) past the console's Content-Security-Policy.
    """
    context = browser.new_context(viewport={"width": width, "height": height}, bypass_csp=bypass_csp)
    recorder = Recorder()
    context.route("**/*", recorder.route)
    if key is not None:
        context.add_init_script(f"sessionStorage.setItem({KEY_ITEM!r}, {key!r})")
    page = context.new_page()
    page.on("console", recorder.on_console)
    page.on("pageerror", lambda error: recorder.console_errors.append(f"uncaught: {error}"))
    # An aborted download of a page being left (a stream cut by navigation) is not a failure of the page.
    page.on(
        "requestfailed",
        lambda request: None if "ERR_ABORTED" in (request.failure or "") else recorder.failed.append(request.url),
    )
    try:
        yield page, recorder
    finally:
        context.close()
