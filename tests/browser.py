"""Browser tests' shared parts: Debian's Chromium driven by Playwright for Python.

Playwright drives ``/usr/bin/chromium`` (Debian's ``chromium`` package) through
``executable_path``; it never downloads a browser. Where Chromium or Playwright is missing the
test is skipped on a laptop and fails in CI (``tests.fixtures.missing``).

Playwright's synchronous API runs its own event loop in the test's thread, so Django's guard
against ORM calls from async code would refuse the test's database work between two browser
calls; ``DJANGO_ALLOW_ASYNC_UNSAFE`` (Django's documented switch for exactly this: a notebook
or a test driving an event loop) lifts it for the test process only. Code inside that loop
gets Django connections of its own (they are per context), closed when the browser is. The
browser's pages are served by a separate uvicorn process
(``aiw.tests.conftest.live_server_process``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client

from tests.fixtures import missing

CHROMIUM = "/usr/bin/chromium"
#: Chromium's own background traffic is refused by this machine's closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
DESKTOP = {"width": 1400, "height": 1000}
TABLET = {"width": 820, "height": 1180}   # an iPad Air in portrait
PHONE = {"width": 390, "height": 1400}
#: How long a live update may take to reach a page (it is usually well under a second).
LIVE_MS = 30_000


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (``playwright.sync_api.Browser``), closed on exit."""
    if not Path(CHROMIUM).exists():
        missing("Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
                # Django's connections are per context, and the code run inside Playwright's
                # loop has its own: close them here, or the test database cannot be dropped.
                connections.close_all()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def signed_in(browser, base: str, user, viewport: dict | None = None):
    """A new page (``playwright.sync_api.Page``) in its own context, signed in as ``user``
    with a session made by Django's test client (no password typed)."""
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport=viewport or DESKTOP, base_url=base)
    context.set_default_timeout(LIVE_MS)
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "url": base,
                          "value": client.cookies[settings.SESSION_COOKIE_NAME].value}])
    return context.new_page()


def mark_document(page) -> None:
    """Tag the loaded document, so ``same_document`` tells whether it was reloaded since."""
    page.evaluate("window.__sameDocument = true")


def same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def wait_live(page) -> None:
    """Until the page's live status says it follows the feed."""
    page.locator("#live-status").filter(has_text="Live").wait_for()


def screenshot_dir(tmp_path: Path) -> Path:
    """``$OPSTWIN_SCREENSHOT_DIR``, else the test's temporary directory."""
    folder = Path(os.environ.get("OPSTWIN_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def full_page_shot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)


def server_port() -> int | None:
    """``$OPSTWIN_BROWSER_TEST_PORT`` (a fixed port, e.g. to watch a test), else a free one."""
    return int(os.environ.get("OPSTWIN_BROWSER_TEST_PORT", "0")) or None


@pytest.fixture
def browser():
    with chromium() as started:
        yield started
