"""The preview page in headless Chromium: widths, live reload, compile errors, keyboard, sandbox.

A screenshot of each step lands in the test's tmp_path (``pytest --basetemp=DIR`` keeps them).
"""

from __future__ import annotations

import pytest
import requests
from browser import chrome, shot
from test_preview import ISSUE, PreviewProcess, save

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT = 10  # seconds; live reload takes well under one, Chromium start-up on a busy CI box can be slow


@pytest.fixture
def browser(tmp_path):
    driver = chrome(tmp_path, 1280, 900)  # skips when Chromium is not installed
    yield driver
    driver.quit()


@pytest.fixture
def preview(workspace, browser):
    process = PreviewProcess(workspace, ISSUE, "--no-open")
    yield process
    process.stop()


def wait_until(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(condition, message)


def email_shows(driver, text: str) -> bool:
    """Whether ``text`` is in the email frame and rendered visibly (not merely in the source)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    driver.switch_to.frame(driver.find_element(By.ID, "email"))
    try:
        element = driver.find_element(By.XPATH, f"//body//*[contains(text(), {text!r})]")
        return element.is_displayed() and element.size["height"] > 0
    except (NoSuchElementException, StaleElementReferenceException):
        return False
    finally:
        driver.switch_to.default_content()


def test_mobile_width_live_edit_compile_error_and_recovery(preview, browser, workspace, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(preview.url)
    wait_until(browser, lambda d: email_shows(d, "Rotterdam Plugs In Its Cruise Terminal"), "the email to load")
    browser.execute_script("window.notReloaded = true")  # gone if anything reloads the page itself
    frame = browser.find_element(By.ID, "email")
    assert frame.size["width"] == 600
    shot(browser, tmp_path, "01-desktop")

    browser.find_element(By.ID, "width-mobile").click()
    wait_until(browser, lambda d: frame.size["width"] == 375, "the frame to be 375 px wide")
    assert browser.find_element(By.ID, "width-mobile").get_attribute("aria-pressed") == "true"
    assert email_shows(browser, "Rotterdam Plugs In Its Cruise Terminal")
    shot(browser, tmp_path, "02-mobile")

    scroll_y = "return document.getElementById('email').contentWindow.scrollY"
    browser.execute_script("document.getElementById('email').contentWindow.scrollTo(0, 400)")
    assert browser.execute_script(scroll_y) == 400
    issue = workspace / ISSUE
    original = issue.read_text(encoding="utf-8")
    edited = original.replace("Rotterdam Plugs In", "Hamburg Plugs In")
    save(issue, edited)
    wait_until(browser, lambda d: email_shows(d, "Hamburg Plugs In Its Cruise Terminal"), "the edit to appear")
    assert frame.size["width"] == 375, "the chosen width survives a reload"
    wait_until(browser, lambda d: d.execute_script(scroll_y) == 400, "the reader's place in the email to be kept")
    shot(browser, tmp_path, "03-edited")

    save(issue, edited.replace("Welcome back", "Welcome {% if %} back"))
    error = browser.find_element(By.ID, "error")
    wait_until(browser, lambda d: error.is_displayed(), "the error panel")
    assert f"{ISSUE}:11" in error.text and "Expected an expression" in error.text
    shot(browser, tmp_path, "04-compile-error")

    save(issue, edited)
    wait_until(browser, lambda d: not error.is_displayed(), "the error panel to go")
    assert email_shows(browser, "Hamburg Plugs In Its Cruise Terminal") and frame.size["width"] == 375
    assert browser.execute_script("return window.notReloaded") is True
    shot(browser, tmp_path, "05-fixed")


def test_keyboard_alone_reaches_every_control_and_the_view_is_kept(preview, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser.get(preview.url)
    wait_until(browser, lambda d: email_shows(d, "Rotterdam"), "the email to load")
    focused = []
    for _ in range(7):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused.append(browser.switch_to.active_element.get_attribute("id") or "")
    # issue 12 added the "Layout" picker before "Preview as"
    assert focused[1:7] == ["width-desktop", "width-mobile", "dark", "layout", "as", "tab-html"], focused

    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()  # tabs follow the ARIA pattern
    text = browser.find_element(By.ID, "text")
    wait_until(browser, lambda d: text.is_displayed(), "the plain-text tab")
    assert browser.switch_to.active_element.get_attribute("id") == "tab-text"
    assert "Hi Ada Lovelace," in text.text and not browser.find_element(By.ID, "email").is_displayed()
    shot(browser, tmp_path, "01-plain-text")

    browser.find_element(By.ID, "dark").send_keys(Keys.SPACE)
    assert "dark" in browser.find_element(By.TAG_NAME, "body").get_attribute("class")
    Select(browser.find_element(By.ID, "as")).select_by_value("linus@example.net")
    wait_until(browser, lambda d: "Hi there," in text.text, "the fallback greeting")
    assert "linus@example.net" in browser.find_element(By.ID, "headers").text
    shot(browser, tmp_path, "02-dark-linus")

    browser.refresh()  # the chosen view lives in the URL fragment
    text = browser.find_element(By.ID, "text")
    wait_until(browser, lambda d: "Hi there," in text.text, "the view after a page reload")
    assert browser.find_element(By.ID, "tab-text").get_attribute("aria-selected") == "true"
    assert browser.find_element(By.ID, "dark").get_attribute("aria-pressed") == "true"
    assert Select(browser.find_element(By.ID, "as")).first_selected_option.get_attribute("value") == "linus@example.net"
    shot(browser, tmp_path, "03-after-page-reload")


def test_the_email_cannot_script_the_preview_page(workspace, browser, tmp_path):
    template = workspace / "templates" / "digest.mjml"
    attack = ("<mj-raw><script>parent.document.body.dataset.owned = 'yes'; "
              "document.body.dataset.ran = 'yes';</script></mj-raw>")
    template.write_text(template.read_text(encoding="utf-8").replace("</mj-body>", attack + "</mj-body>"),
                        encoding="utf-8")
    process = PreviewProcess(workspace, ISSUE, "--no-open")
    try:
        assert "parent.document.body.dataset.owned" in requests.get(process.url + "email.html", timeout=5).text
        browser.get(process.url)
        wait_until(browser, lambda d: email_shows(d, "Rotterdam"), "the email to load")
        shot(browser, tmp_path, "01-loaded")
        assert browser.execute_script("return document.body.dataset.owned") is None
        from selenium.webdriver.common.by import By

        browser.switch_to.frame(browser.find_element(By.ID, "email"))
        assert browser.execute_script("return document.body.dataset.ran") is None  # it never ran at all
    finally:
        browser.switch_to.default_content()
        process.stop()


def test_the_report_tab_appears_once_the_issue_is_sent_and_shows_the_report(preview, browser, run, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(preview.url)
    wait_until(browser, lambda d: email_shows(d, "Rotterdam Plugs In Its Cruise Terminal"), "the email to load")
    assert not browser.find_element(By.ID, "tab-report").is_displayed()  # nothing sent yet: no tab
    assert run("send", "2026-11-30-weekly", "--yes", env={"NEWSLETTER_SECRET": "test-secret"}).exit_code == 0
    browser.refresh()
    wait_until(browser, lambda d: d.find_element(By.ID, "tab-report").is_displayed(), "the Report tab")
    browser.find_element(By.ID, "tab-report").click()
    assert browser.find_element(By.ID, "panel-report").is_displayed()
    assert not browser.find_element(By.ID, "panel-html").is_displayed()
    browser.switch_to.frame(browser.find_element(By.ID, "report"))
    try:
        wait_until(browser, lambda d: d.find_elements(By.TAG_NAME, "svg"), "the report's charts")
        assert browser.find_element(By.TAG_NAME, "h1").text == "2026-11-30-weekly"
        bars = browser.find_elements(By.CSS_SELECTOR, "svg rect")
        assert bars and all(bar.size["height"] > 0 for bar in bars)  # drawn, styled by the page's own CSS
    finally:
        browser.switch_to.default_content()
    shot(browser, tmp_path, "report-tab")
