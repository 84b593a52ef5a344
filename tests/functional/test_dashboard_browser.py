"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright loads the page from the real proxy, watches the request counter rise as traffic
flows and a cooldown appear after a scripted 429, and saves a screenshot to
``test-artifacts/``. Skipped, with the reason, only when the browser cannot be launched."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.fake_upstream import FakeUpstream, Fault
from tests.functional.test_dashboard import CHAT, CHAT_BODY, STREAM, TOKEN, dashboard_config

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    driver = await async_playwright().start()
    try:
        launched = await driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    except Exception as exc:  # any launch failure is the environment's, not the dashboard's
        await driver.stop()
        pytest.skip(f"chromium at {executable} could not be launched: {exc}")
    try:
        yield launched
    finally:
        await launched.close()
        await driver.stop()


async def post(url: str, body: dict[str, Any]) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body) as resp:
            await resp.read()
            return resp.status


async def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A new page at ``url``; the list collects console errors (a CSP violation is one)."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1600})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(url)
    return page, errors


async def counter_reads(page: Any, value: str) -> None:
    await page.wait_for_function(
        "v => document.getElementById('requests-total').textContent === v",
        arg=value,
        timeout=15_000,
    )


async def test_the_page_shows_traffic_and_a_cooldown_as_they_happen(
    fake: FakeUpstream, start_proxy: Any, browser: Any
) -> None:
    url = await start_proxy(dashboard_config(fake.url))
    page, errors = await open_page(browser, url + "/dashboard")
    await counter_reads(page, "0")
    assert 200 == await post(url + "/openai" + CHAT, CHAT_BODY)
    await counter_reads(page, "1")
    for body in (CHAT_BODY, STREAM, CHAT_BODY):
        assert 200 == await post(url + "/openai" + CHAT, body)
    await counter_reads(page, "4")

    fake.enqueue(Fault(status=429, headers={"retry-after": "30"}))
    assert 429 == await post(url + "/limited" + CHAT, CHAT_BODY)
    row = page.locator('#cooldowns tbody tr[data-scope="limited"]')
    await row.wait_for(timeout=15_000)
    cells = await row.locator("td").all_text_contents()
    assert "limited:gpt-4o" == cells[0]
    assert cells[1].endswith(" s") and 20 < float(cells[1].removesuffix(" s")) <= 30
    await counter_reads(page, "5")
    errors_row = page.locator("#errors tbody tr", has_text="429")
    assert ["429", "1", "1"] == await errors_row.locator("td").all_text_contents()
    assert 5 == await page.locator("#recent tbody tr").count()
    assert "gpt-4o" == await page.locator("#models tbody tr td").first.text_content()

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert [] == errors


async def test_with_a_token_the_page_asks_for_it_once_and_then_stays_open(
    fake: FakeUpstream, start_proxy: Any, browser: Any
) -> None:
    url = await start_proxy(dashboard_config(fake.url, admin_token=TOKEN))
    page, errors = await open_page(browser, url + "/dashboard")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await counter_reads(page, "0")
    assert url + "/dashboard" == page.url  # the token never appears in a URL
    assert 200 == await post(url + "/openai" + CHAT, CHAT_BODY)
    await counter_reads(page, "1")
    await page.reload()
    await counter_reads(page, "1")  # the cookie keeps the session
    await page.screenshot(path=str(ARTIFACTS / "dashboard-after-login.png"))
    assert [] == errors
