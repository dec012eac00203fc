"""The compiled example in headless Chromium at 600 px and 375 px: it fits and it stacks."""

import pytest
from browser import WIDEST, chrome, shot

pytestmark = pytest.mark.browser

# Widest element's right edge, and whether text paragraphs sit inside the viewport.
MEASURE = WIDEST + """
const columns = [...document.querySelectorAll('.mj-column-per-100')].map(c => c.getBoundingClientRect().width);
const title = document.querySelector('.masthead-title h1');
const button = [...document.querySelectorAll('a')].find(a => a.textContent.includes('port electrification study'));
return {vw, widest, culprit, scrollWidth: document.documentElement.scrollWidth, columns,
        titleSize: parseFloat(getComputedStyle(title).fontSize),
        button: button ? button.getBoundingClientRect().width : 0};
"""


@pytest.mark.parametrize("inliner", ["css-inline", "premailer"])
def test_layout_at_600_and_375(run, workspace, tmp_path, inliner):
    assert run("build", "issues/2026-11-30-weekly.md", "--out", "out", "--inliner", inliner).exit_code == 0
    page = (workspace / "out" / "2026-11-30-weekly.html").as_uri()
    metrics = {}
    for width in (600, 375):
        driver = chrome(tmp_path, width, 1400)
        try:
            driver.get(page)
            assert shot(driver, tmp_path, f"{inliner}-{width}").stat().st_size > 10_000
            metrics[width] = driver.execute_script(MEASURE)
        finally:
            driver.quit()
    desktop, mobile = metrics[600], metrics[375]
    for m in (desktop, mobile):
        assert m["widest"] <= m["vw"] + 0.5, f"{m['culprit']} sticks out at {m['vw']} px: {m['widest']}"
        assert m["scrollWidth"] <= m["vw"], "horizontal scrolling"
    # The 600 px body fills the desktop viewport; on a phone every column stacks to the full width.
    assert max(desktop["columns"]) == pytest.approx(600, abs=1)
    assert max(mobile["columns"]) <= 375 and min(mobile["columns"]) >= 300
    # The mobile media query (with its !important) applied: the title shrinks from 28 px to 24 px.
    assert desktop["titleSize"] == 28 and mobile["titleSize"] == 24
    assert 0 < mobile["button"] <= 375
