"""The dashboard in a real headless browser: Debian's chromium driven by selenium through
/usr/bin/chromedriver (scripts/peers/chromium.sh installs both; nothing downloads a browser).

Jobs are pushed, failed and dead-lettered on the embedded broker; the page shows the counts;
the dead-letter browser shows the reasons; replay, behind its confirm step, moves them back.
A screenshot is kept in test-artifacts/ (its path printed); with AMQP1Q_DOCS_SCREENSHOT=1 it
also refreshes docs/img/dashboard.png.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from amqp1q import Job, JobQueue
from amqp1q.cli._dashboard import serve
from amqp1q.testing import Broker

from ..conftest import unavailable

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,640",
)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        unavailable("chromium or chromedriver is missing (run scripts/peers/chromium.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="amqp1q-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"the page never showed {what}"
        await asyncio.sleep(0.3)


def source(driver: Any) -> str:
    """The page's HTML, or "" while a navigation is under way."""
    from selenium.common.exceptions import WebDriverException

    try:
        return str(driver.page_source)
    except WebDriverException:
        return ""


def cell(driver: Any, queue: str, kind: str) -> str:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        row = driver.find_element(By.CSS_SELECTOR, f"tr[data-queue='{queue}']")
        return str(row.find_element(By.CSS_SELECTOR, f"td.{kind}").text)
    except WebDriverException:
        return ""


async def test_dashboard_shows_counts_and_replays_dead_letters(browser: Any) -> None:
    from selenium.webdriver.common.by import By

    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="emails", prefetch=10) as emails:
            await emails.push_many([Job("send", {"to": f"u{n}@example.com"}) for n in range(6)])
            async with emails.consume() as consumer:
                for n in range(3):
                    job = await consumer.receive(timeout=5)
                    assert job is not None
                    if n < 2:
                        await job.reject("smtp refused", f"550 mailbox u{n} unavailable")
                    else:
                        await job.ack()
            started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            server = asyncio.create_task(
                serve(
                    broker.url,
                    ["emails", "reports"],
                    port=0,
                    token="s3cret",
                    interval=1,
                    started=started,
                )
            )
            try:
                page = await asyncio.wait_for(started, 10)
                base = page.split("?")[0]
                await asyncio.to_thread(browser.get, base)
                assert "token is required" in browser.page_source
                await asyncio.to_thread(browser.get, page)
                await until(lambda: cell(browser, "emails", "dead-lettered") == "2", "2 dead")
                assert cell(browser, "emails", "ready") == "3"
                assert cell(browser, "reports", "ready") == "0"
                # a few live refreshes, so the sparklines have points
                await emails.push(Job("send", {"to": "late@example.com"}))
                await until(lambda: cell(browser, "emails", "ready") == "4", "the new job")
                await asyncio.sleep(2.5)
                ARTIFACTS.mkdir(exist_ok=True)
                shot = ARTIFACTS / "dashboard.png"
                await asyncio.to_thread(browser.save_screenshot, str(shot))
                print(f"dashboard screenshot: {shot}")
                if os.environ.get("AMQP1Q_DOCS_SCREENSHOT") == "1":
                    shutil.copy(shot, ROOT / "docs" / "img" / "dashboard.png")

                link = browser.find_element(By.CSS_SELECTOR, "tr[data-queue='emails'] td a")
                await asyncio.to_thread(link.click)
                # a click that navigates returns before the next page has loaded: wait for it
                await until(lambda: "550 mailbox u0 unavailable" in source(browser), "reasons")
                reasons = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "td.reason")]
                assert reasons == ["smtp refused", "smtp refused"]
                assert "550 mailbox u0 unavailable" in browser.page_source
                await asyncio.to_thread(browser.find_element(By.ID, "replay").click)
                await until(
                    lambda: "Replay the dead letters of emails?" in source(browser),
                    "the confirm step",
                )
                await asyncio.to_thread(browser.find_element(By.ID, "confirm").click)
                await until(lambda: "replayed 2 job(s)" in source(browser), "the replay's result")
                assert browser.find_elements(By.CSS_SELECTOR, "tr.letter") == []
                await asyncio.to_thread(browser.get, page)
                await until(lambda: cell(browser, "emails", "ready") == "6", "6 ready")
                assert cell(browser, "emails", "dead-lettered") == "0"
            finally:
                server.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await server
        depth = await _depth(broker.url)
        assert (depth.ready, depth.dead_lettered) == (6, 0)


async def _depth(url: str) -> Any:
    async with JobQueue.from_url(url, queue="emails") as queue:
        return await queue.depth()
