"""Browser tests: Debian's Chromium driven by Playwright, against a real `sovllm serve`.

Playwright never downloads a browser here: it launches /usr/bin/chromium (Debian's `chromium`
package, which scripts/test.sh installs when it is missing).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, run_server

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Answers in these tests are capped at this many tokens (the page asks for up to 512), so the
# suite stays quick on two shared cores. A test that needs a long answer routes its own request.
TEST_MAX_TOKENS = 48
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}

try:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Dialog,
        Page,
        Route,
        expect,
        sync_playwright,
    )
except ImportError:  # pragma: no cover - the dev extra installs it
    pytest.fail("playwright is missing: pip install -e '.[dev]'", pytrace=False)


# The machine is small and shared: waits are conditions, with room for a slow model.
expect.set_options(timeout=30_000)


# Package scope, not session: while Playwright's sync API is open it marks its own asyncio loop
# as running, and the async tests that come after the browser tests need it closed.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium package",
            pytrace=False,
        )
    with sync_playwright() as pw:
        # A non-persistent launch: Playwright gives Chromium a new, empty user-data-dir.
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the browser tests; each test makes its own tenants and keys.

    One decoding thread: beside Chromium on two shared cores, two threads spin at llama.cpp's
    barriers and answers come ten times slower.
    """
    engine = {"SOVLLM_ENGINE__SLOTS": "4", "SOVLLM_ENGINE__THREADS": "1"}
    with run_server(tmp_path_factory.mktemp("web"), engine) as srv:
        yield srv


class Watch:
    """What a page did that it should not: script errors and dialogs (alert, confirm...)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []

    def attach(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

        def on_dialog(dialog: Dialog) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=DESKTOP, accept_downloads=True, locale="en-US")
    ctx.set_default_timeout(30_000)
    ctx.route("**/v1/chat/completions", cap_tokens)
    yield ctx
    ctx.close()


def cap_tokens(route: Route) -> None:
    body = json.loads(route.request.post_data or "{}")
    body["max_tokens"] = min(int(body.get("max_tokens") or TEST_MAX_TOKENS), TEST_MAX_TOKENS)
    route.continue_(post_data=json.dumps(body))


@pytest.fixture
def page(context: BrowserContext, watch: Watch) -> Iterator[Page]:
    p = context.new_page()
    watch.attach(p)
    yield p
    assert not watch.errors, f"script errors on the page: {watch.errors}"
    assert not watch.dialogs, f"dialogs opened: {watch.dialogs}"


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: docs/images with SOVLLM_SCREENSHOTS=1, else a temporary folder."""
    if os.environ.get("SOVLLM_SCREENSHOTS"):
        return Path(__file__).resolve().parents[2] / "docs" / "images"
    return tmp_path
