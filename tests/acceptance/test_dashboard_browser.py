"""The operator dashboard in a real headless browser (Debian's chromium and chromedriver via
Selenium): signing in, every page rendering, the filters, one tenant's token never showing
another tenant's rows, and a browser without a token refused (401)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support.wait import WebDriverWait

from chimeway import Chimeway, RetryPolicy
from chimeway.testing import RecordingAdapter
from tests.acceptance.test_inbox_browser import browser  # noqa: F401 (the fixture)
from tests.integration.dashboard_support import (
    ACME_TOKEN,
    ADMIN_TOKEN,
    GLOBEX,
    HOSTILE,
    TOKENS,
    RefusesBob,
    seed,
)
from tests.integration.inbox_support import Serve

pytestmark = pytest.mark.slow


@pytest.fixture
def cw(committed_db: str) -> Iterator[Chimeway]:
    adapters = {"email": RefusesBob(), "sms": RecordingAdapter()}
    with Chimeway(committed_db, adapters=adapters, default_retry=RetryPolicy(jitter=0)) as cw:
        yield cw


def rows(driver: WebDriver, table_id: str) -> list[str]:
    return [r.text for r in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def go(driver: WebDriver, by: str, value: str) -> None:
    """Click what leads to another page, and wait until that page replaced this one."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, value).click()
    WebDriverWait(driver, 10).until(lambda _: _replaced(page))


def _replaced(page: WebElement) -> bool:
    """Whether ``page`` (the old document's root) is gone. Selenium's ``staleness_of`` knows
    the stale-element error only; chromedriver may answer a lookup made while the new
    document replaces the old with "Node with given id does not belong to the document"
    instead, which says the same."""
    try:
        page.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def sign_in(driver: WebDriver, base: str, token: str) -> None:
    driver.get(f"{base}/dashboard/login")
    driver.find_element(By.ID, "token").send_keys(token)
    go(driver, By.ID, "sign-in")


def filter_deliveries(driver: WebDriver) -> None:
    """Every acme row and no globex row; filtered to the refused one; then to a recipient."""
    go(driver, By.LINK_TEXT, "Deliveries")
    listed = rows(driver, "deliveries")
    assert len(listed) == 3  # ana's email and sms, bob's email
    assert all("acme-" in r for r in listed) and "globex" not in driver.page_source
    Select(driver.find_element(By.ID, "f-status")).select_by_value("cancelled")
    go(driver, By.ID, "apply")
    [refused] = rows(driver, "deliveries")
    assert "acme-bob" in refused and "permanent_failure" in refused
    assert "status=cancelled" in driver.current_url
    driver.find_element(By.ID, "f-status")  # the filter form is still there
    Select(driver.find_element(By.ID, "f-status")).select_by_value("")
    driver.find_element(By.ID, "f-recipient").send_keys("acme-ana")
    go(driver, By.ID, "apply")
    assert len(rows(driver, "deliveries")) == 2
    assert all("acme-ana" in r for r in rows(driver, "deliveries"))


def test_an_operator_browses_one_tenant(
    cw: Chimeway,
    serve: Serve,
    browser: WebDriver,  # noqa: F811 (the fixture imported above)
) -> None:
    seeded = seed(cw)
    base = serve(cw, operator_tokens=TOKENS)

    # Without a token: the sign-in page, answered with 401 (the browser shows the form).
    browser.get(f"{base}/dashboard/deliveries")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"
    assert "acme" not in browser.page_source
    assert httpx.get(f"{base}/dashboard/deliveries").status_code == 401
    sign_in(browser, base, "not-the-token-0123456789abcdef")
    assert browser.find_element(By.ID, "login-error").is_displayed()

    sign_in(browser, base, ACME_TOKEN)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Tenant acme"
    assert browser.find_element(By.ID, "tenant").text == "tenant: acme"
    states = rows(browser, "run-states")
    assert any(r.startswith("completed") for r in states), states
    assert rows(browser, "queues"), "the queue table has no row"
    assert "globex" not in browser.page_source

    filter_deliveries(browser)

    # A delivery's story, then its run's trace.
    browser.get(f"{base}/dashboard/deliveries/{seeded.acme.delivery_ids[1]}")
    assert "mailbox unknown" in browser.find_element(By.ID, "attempts").text
    assert browser.find_element(By.ID, "why").text
    go(browser, By.CSS_SELECTOR, "#delivery a")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Run ")
    assert rows(browser, "trace")

    # Runs, filtered by state.
    go(browser, By.LINK_TEXT, "Runs")
    assert len(rows(browser, "runs")) == 2
    Select(browser.find_element(By.ID, "f-state")).select_by_value("completed")
    go(browser, By.ID, "apply")
    assert all("completed" in r for r in rows(browser, "runs"))

    # The state diagrams.
    go(browser, By.LINK_TEXT, "Diagrams")
    assert "stateDiagram" in browser.find_element(By.ID, "delivery-diagram").text
    assert "stateDiagram" in browser.find_element(By.ID, "run-diagram").text

    # Another tenant's delivery is not found; asking for the tenant is forbidden.
    browser.get(f"{base}/dashboard/deliveries/{seeded.globex.delivery_ids[0]}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    browser.get(f"{base}/dashboard/deliveries?tenant={GLOBEX}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Forbidden"
    assert "globex-gus" not in browser.page_source

    # Signing out ends it.
    browser.get(f"{base}/dashboard/")
    go(browser, By.ID, "sign-out")
    browser.get(f"{base}/dashboard/deliveries")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"


def test_an_admin_token_picks_a_tenant_and_hostile_ids_stay_text(
    cw: Chimeway,
    serve: Serve,
    browser: WebDriver,  # noqa: F811 (the fixture imported above)
) -> None:
    seed(cw)
    base = serve(cw, operator_tokens=TOKENS)
    sign_in(browser, base, ADMIN_TOKEN)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Choose a tenant"
    browser.find_element(By.ID, "f-tenant").send_keys(GLOBEX)
    go(browser, By.ID, "open")
    assert browser.find_element(By.ID, "tenant").text == "tenant: globex"
    go(browser, By.LINK_TEXT, "Deliveries")
    listed = rows(browser, "deliveries")
    assert listed and all("acme" not in r for r in listed)
    # The hostile recipient id is shown as text; no script ran (no alert is open).
    assert any(HOSTILE in r for r in listed)
    assert browser.execute_script("return document.querySelectorAll('script').length") == 0
    # The filters keep the tenant.
    browser.find_element(By.ID, "f-channel").send_keys("sms")
    go(browser, By.ID, "apply")
    assert "tenant=globex" in browser.current_url
    assert all(" sms " in f" {r} " for r in rows(browser, "deliveries"))
