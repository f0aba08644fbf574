"""A real headless Chromium (Debian's `chromium`, driven by Playwright over CDP) for pages the API renders.

Playwright's own browser downloads are neither reachable nor needed: it launches the system browser via
`executable_path`, with a fresh profile per call.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from playwright.sync_api import ConsoleMessage, sync_playwright
from pydantic import BaseModel

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class PageVisit(BaseModel):
    status: int
    title: str
    images: list[tuple[str, int]]  # (alt text, naturalWidth); 0 means the image did not load
    console_errors: list[str]
    failed_requests: list[str]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise AssertionError("Debian's chromium is not installed: apt-get install chromium (.ci/run does this)")
    return path


def visit(
    url: str, screenshot: Path, width: int = 1366, height: int = 900, headers: dict[str, str] | None = None
) -> PageVisit:
    """Open `url` at a laptop's screen size, wait until it has loaded, save a full-page screenshot.

    `headers` go with every request of the page (the API's `Authorization`).
    """
    errors: list[str] = []
    failed: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": width, "height": height},
        )
        try:
            if headers:
                context.set_extra_http_headers(headers)
            page = context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
            page.on("requestfailed", lambda request: failed.append(request.url))
            response = page.goto(url, wait_until="load", timeout=30_000)
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth])")
            page.screenshot(path=str(screenshot), full_page=True)
            return PageVisit(
                status=response.status if response else 0,
                title=page.title(),
                images=[(alt, width) for alt, width in images],
                console_errors=errors,
                failed_requests=failed,
            )
        finally:
            context.close()
