"""The five services and a headless Chromium, for the chat page's tests.

One platform for the module, answering through an OpenAI-protocol fake whose behaviour a test
sets (its text, its pace); the gateway's development sign-in is on, as under ``make run``.
Chromium is Debian's (``scripts/system-packages.sh`` installs it), driven by Playwright; each
test gets a fresh browser context, and screenshots are kept in ``.parley/artifacts/browser``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, ViewportSize, async_playwright

from parley_devstack import Platform
from parley_fakes import Behaviour, Fake, OpenAIFake

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / ".parley" / "artifacts" / "browser"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
# Bounded waits: state a page reaches within seconds, or the test fails with where it stood.
WAIT_MS = 20_000


@dataclass
class Stack:
    """The running platform, its provider fake, and the browser."""

    platform: Platform
    fake: Fake
    browser: Browser

    @property
    def url(self) -> str:
        return self.platform.gateway_url

    def answer(self, text: str | None = None, *, tokens: int = 12, delay_ms: float = 5) -> None:
        """How the provider answers from now on: ``text`` (or ``tokens`` words), a token every
        ``delay_ms``."""
        self.fake.set_behaviour(Behaviour(text=text, tokens=tokens, token_delay_ms=delay_ms))


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium: Playwright's own browser builds cannot be downloaded here."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system-packages.sh (make test does)")
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data = tmp_path_factory.mktemp("platform")
    with OpenAIFake(tokens=12, token_delay_ms=5) as fake:
        platform = Platform(
            data_dir=Path(data),
            env={"OPENAI_BASE_URL": f"{fake.base_url}/v1", "LOCAL_TOKEN_DELAY_MS": "0"},
            per_service_env={"gateway": {"DEV_SIGN_IN": "true"}},
        )
        await platform.start()
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(chromium), args=["--no-sandbox"]
                )
                try:
                    yield Stack(platform, fake, browser)
                finally:
                    await browser.close()
        finally:
            codes = await platform.stop()
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (kept after the run, ignored by git)."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@dataclass
class Tab:
    """A page of a fresh browser context (its own sessionStorage), and the errors its scripts
    raised."""

    page: Page
    errors: list[str]

    async def close(self) -> None:
        await self.page.context.close()


async def open_tab(stack: Stack, viewport: ViewportSize) -> Tab:
    context = await stack.browser.new_context(viewport=viewport)
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return Tab(page, errors)
