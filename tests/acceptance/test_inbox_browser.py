"""The reference bell in a real headless browser (Debian's chromium and chromedriver, driven
by Selenium; nothing downloads a browser): the example page shows the unread count, a
notification triggered from Python appears without a reload, a click marks it read, and
that read cancels the run's escalation, so no email is ever sent (design §14)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from chimeway import (
    Chimeway,
    Notifier,
    Recipient,
    SmtpAdapter,
    Step,
    Triggered,
    WaitUntil,
    Workflow,
)
from chimeway.worker import BackgroundWorker, WorkerOptions
from tests.acceptance.conftest import wait_until
from tests.adapters.conftest import SmtpFactory
from tests.integration.conftest import count
from tests.integration.inbox_support import SECRET, Serve

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
READ = "chimeway.notification.read"

ESCALATION = Workflow(
    key="browser.escalation",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            # Long enough never to fall due during the test: only a read can end it.
            progress=[
                WaitUntil(delay=dt.timedelta(minutes=10), to_step="email", cancel_signals=[READ])
            ],
        ),
        Step("email", channel="email"),
    ],
)


class Mention(Notifier):
    key = "browser.mention"
    version = 1
    category = "mentions"

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return [{"id": "ana", "email": "ana@example.test"}]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"document": params["document"]}

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        text = f"Barbara mentioned you in {params['document']}"
        if channel == "email":
            return {"subject": text, "html_body": f"<p>{text}</p>", "text_body": text}
        return {
            "headline": "New mention",
            "body": text,
            "primary_action": {"label": "Open", "url": f"/docs/{params['document']}"},
        }

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return ESCALATION


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        message = "needs chromium and chromium-driver: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    # The driver's path is given, so Selenium Manager never runs (it would download one).
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_bell_shows_live_items_and_a_click_cancels_the_escalation(
    committed_db: str, start_smtp: SmtpFactory, serve: Serve, browser: WebDriver
) -> None:
    smtp_server = start_smtp()
    smtp = SmtpAdapter(smtp_server.host, smtp_server.port, security="none", sender="a@b.test")
    with (
        Chimeway(committed_db, secret=SECRET, notifiers=[Mention], adapters={"email": smtp}) as cw,
        BackgroundWorker(cw, WorkerOptions(concurrency=4, poll_interval=0.2)),
    ):

        def mention(document: str) -> Triggered:
            result = cw.trigger(
                Mention, {"document": document}, tenant_id="t", idempotency_key=str(uuid.uuid4())
            )
            assert isinstance(result, Triggered)
            return result

        def waiting(result: Triggered) -> bool:
            return cw.workflows.explain("t", result.run_ids[0]).state == "waiting"

        first = mention("Q3 plan")
        wait_until(lambda: waiting(first), timeout=20)
        base = serve(cw)
        browser.get(f"{base}/v1/inbox/example#token={cw.inbox.token('t', 'ana')}")
        # The list is drawn again on every change: look elements up afresh each time.
        wait = WebDriverWait(
            browser, 10, poll_frequency=0.02, ignored_exceptions=[StaleElementReferenceException]
        )

        def badge() -> str:
            found = browser.find_element(By.CSS_SELECTOR, ".cw-badge")
            return found.text if found.is_displayed() else ""

        wait.until(lambda _: badge() == "1")
        browser.execute_script("window.__sameDocument = true;")  # gone if the page reloads

        browser.find_element(By.CSS_SELECTOR, ".cw-bell").click()  # open the list
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".cw-item")) == 1)

        second = mention("Roadmap")
        triggered = time.monotonic()
        selector = f'.cw-item[data-id="{second.notification_ids[0]}"]'
        WebDriverWait(browser, 1.0, poll_frequency=0.01).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, selector)
        )
        appeared = time.monotonic() - triggered
        assert appeared < 1.0
        wait.until(lambda _: badge() == "2")
        assert browser.execute_script("return window.__sameDocument === true;")

        def classes() -> str:
            return browser.find_element(By.CSS_SELECTOR, selector).get_attribute("class") or ""

        assert (
            "Barbara mentioned you in Roadmap"
            in browser.find_element(By.CSS_SELECTOR, selector).text
        )
        assert "cw-unread" in classes()

        browser.find_element(By.CSS_SELECTOR, selector).click()  # marks it read
        wait.until(lambda _: badge() == "1")
        wait.until(lambda _: "cw-unread" not in classes())
        wait_until(lambda: cw.workflows.explain("t", second.run_ids[0]).state == "completed")
        explained = cw.workflows.explain("t", second.run_ids[0])
        assert explained.terminal_reason == "wait_cancelled_by_signal"
        [item] = [i for i in cw.inbox.list("t", "ana").items if i.id == second.notification_ids[0]]
        assert item.read_at is not None
        browser.get("about:blank")  # hang up the stream before the app closes

    assert (
        count(committed_db, "SELECT count(*) FROM chimeway_deliveries WHERE channel = 'email'") == 0
    )
    assert smtp_server.mailbox.received == []
