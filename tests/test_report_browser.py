"""The `newsletter report ISSUE --html` page in headless Chromium at 1280 px and 375 px (issue 15): every chart is
drawn and visible, its bars in proportion, and nothing scrolls sideways on a phone.

The figures come from a real send through the fake Postmark (tests/fakeproviders.py), so the page carries all
its charts and its links table. Screenshots stay in the test's tmp folder (``report-<width>.png``).
"""

from __future__ import annotations

import pytest
from browser import WIDEST, chrome, shot
from fakeproviders import FakeProviders
from helpers import write_readers

pytestmark = pytest.mark.browser

ISSUE = "2026-11-30-weekly"
KEY = "report-browser-key-Lm07"
LONG_LINK = "https://example.com/" + "a-very-long-path-segment-" * 6  # a table cell that must wrap on a phone

MEASURE = WIDEST + """
const charts = [...document.querySelectorAll('svg')].map(svg => {
  const box = svg.getBoundingClientRect();
  return {left: box.left, right: box.right, width: box.width, height: box.height,
          bars: [...svg.querySelectorAll('rect')].map(r => ({value: Number(r.dataset.value),
                                                            height: r.getBoundingClientRect().height}))};
});
return {vw, widest, culprit, scrollWidth: document.documentElement.scrollWidth, charts};
"""


@pytest.fixture
def page(run, workspace, tmp_path):
    readers = write_readers(workspace, 6)
    with FakeProviders(api_key=KEY) as fake:
        env = {"NEWSLETTER_PROVIDER_NAME": "postmark", "NEWSLETTER_PROVIDER_API_BASE": fake.url,
               "NEWSLETTER_API_KEY": KEY, "NEWSLETTER_PROVIDER_RATE_LIMIT": "1000", "NEWSLETTER_SECRET": "s3cret"}
        sent = run("send", ISSUE, "--yes", env=env)
        assert sent.exit_code == 0, sent.output + sent.stderr
        for n, reader in enumerate(readers[:4]):
            fake.engage("postmark", reader, "open")
            fake.engage("postmark", reader, "click", url=LONG_LINK if n % 2 else "https://example.com/story")
        path = tmp_path / "report.html"
        result = run("report", ISSUE, "--html", str(path), env=env)
        assert result.exit_code == 0, result.output + result.stderr
    return path


def test_the_report_page_shows_its_charts_and_fits_a_phone(page, tmp_path):
    measured = {}
    for width in (1280, 375):
        driver = chrome(tmp_path, width, 900)
        try:
            driver.get(page.as_uri())
            assert shot(driver, tmp_path, f"report-{width}").stat().st_size > 5_000
            measured[width] = driver.execute_script(MEASURE)
        finally:
            driver.quit()
    for width, m in measured.items():
        assert m["scrollWidth"] <= m["vw"], f"horizontal scrolling at {width} px ({m['scrollWidth']} px wide)"
        assert m["widest"] <= m["vw"] + 0.5, f"{m['culprit']} sticks out at {width} px: {m['widest']}"
        # the send timeline, unique opens by day, unique clicks by day and the trend across issues
        assert len(m["charts"]) == 4
        for chart in m["charts"]:
            assert chart["width"] > 0 and chart["height"] > 0
            assert chart["left"] >= 0 and chart["right"] <= m["vw"] + 0.5, f"a chart sticks out at {width} px"
            tallest = max(chart["bars"], key=lambda bar: bar["value"])
            assert tallest["height"] > 0, "the tallest bar is drawn"
            for bar in chart["bars"]:
                assert bar["height"] == pytest.approx(tallest["height"] * bar["value"] / tallest["value"], abs=0.6)
    # On the phone the charts shrink with the page; on a desktop they keep their drawn width.
    assert measured[1280]["charts"][0]["width"] == pytest.approx(720, abs=1)
    assert measured[375]["charts"][0]["width"] < 375
