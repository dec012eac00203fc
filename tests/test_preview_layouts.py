"""The preview's "Layout" choice (issue 12): the same issue with another layout of the templates
folder, compiled once per change, chosen by name only."""

import pytest
import requests
from test_preview import ISSUE, PreviewProcess, save, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def preview(workspace):
    process = PreviewProcess(workspace, ISSUE, "--no-open")
    yield process
    process.stop()


def get(preview, path, **params):
    return requests.get(preview.url + path, params=params, timeout=10)


def test_the_page_offers_every_layout_and_shows_the_chosen_one(preview, workspace):
    page = get(preview, "").text
    assert '<select id="layout">' in page
    state = get(preview, "api/state").json()
    assert state["layouts"] == ["bulletin", "digest", "letter"] and state["issue"]["layout"].endswith("digest.mjml")
    letter = get(preview, "api/state", layout="letter").json()
    assert letter["error"] is None and letter["issue"]["layout"].endswith("letter.mjml")
    assert "\u2014 Field Notes Weekly" in letter["text"]  # the letter's sign-off
    html = get(preview, "email.html", layout="letter").text
    assert "Georgia" in html and "item-number" not in html
    assert "item-number" in get(preview, "email.html").text  # the issue's own layout is unchanged
    # a change recompiles the chosen layout too
    issue = workspace / ISSUE
    save(issue, issue.read_text(encoding="utf-8").replace("Rotterdam Plugs In", "Antwerp Plugs In"))
    wait_for(lambda: "Antwerp Plugs In" in get(preview, "email.html", layout="letter").text, "the recompile")


@pytest.mark.parametrize("name", ["nope", "../templates/digest", "/etc/passwd", "digest.mjml"])
def test_only_a_layout_name_from_the_folder_is_accepted(preview, name):
    state = get(preview, "api/state", layout=name).json()
    assert state["error"]["message"] == f"no layout {name!r} in the templates folder"
    assert state["error"]["hint"] == "layouts: bulletin, digest, letter"
    assert get(preview, "email.html", layout=name).status_code == 503


@pytest.mark.browser
def test_choosing_a_layout_and_dark_in_the_page(preview, tmp_path):
    from browser import chrome, shot
    from selenium.webdriver.support.ui import Select

    driver = chrome(tmp_path, 1280, 900)
    try:
        driver.get(preview.url)
        wait_for(lambda: driver.execute_script("return document.getElementById('layout').options.length") == 3,
                 "the layout list")
        assert Select(driver.find_element("id", "layout")).first_selected_option.text == "digest"
        Select(driver.find_element("id", "layout")).select_by_visible_text("letter")
        frame_font = ("const d = document.getElementById('email').contentDocument;"
                      "return d && d.querySelector('h1') ? getComputedStyle(d.querySelector('h1')).fontFamily : ''")
        wait_for(lambda: "Georgia" in driver.execute_script(frame_font), "the letter layout in the frame")
        assert "layout=letter" in driver.current_url  # kept in the fragment across reloads
        title_colour = ("const d = document.getElementById('email').contentDocument;"
                        "return getComputedStyle(d.querySelector('h1')).color")
        light = driver.execute_script(title_colour)
        driver.find_element("id", "dark").click()
        wait_for(lambda: driver.execute_script(title_colour) != light, "the email's own dark mode")
        shot(driver, tmp_path, "letter-dark")
        driver.refresh()
        wait_for(lambda: "Georgia" in driver.execute_script(frame_font), "the layout kept after a reload")
    finally:
        driver.quit()
