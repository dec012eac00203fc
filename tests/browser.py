"""Headless Chromium for tests: Debian's /usr/bin/chromium driven by Selenium, no browser download.

    driver = chrome(tmp_path, 1280, 900)   # viewport exactly 1280 x 900 CSS pixels
    try:
        driver.get(url)
        shot(driver, tmp_path, "01-loaded")
    finally:
        driver.quit()

Skips the test (with the reason) when Chromium or chromedriver is not installed;
CI installs the Debian packages ``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

# Root in a container needs --no-sandbox; the rest keeps Chromium from phoning home or
# updating itself mid-test, and /dev/shm in containers is too small for it.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--force-color-profile=srgb", "--lang=en-US")

# A script fragment for measuring a page: it sets ``vw`` (the viewport's width), ``widest`` (the right
# edge furthest right of any visible element) and ``culprit`` (that element), for a script to return.
WIDEST = """
const vw = document.documentElement.clientWidth;
let widest = 0, culprit = '';
for (const el of document.body.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  if (r.right > widest) { widest = r.right; culprit = el.tagName + '.' + el.className; }
}
"""


def chrome(tmp_path: Path, width: int = 1280, height: int = 900):
    """A Selenium webdriver on a fresh profile in ``tmp_path``, its viewport ``width`` x ``height``.

    The caller quits it. The window size alone does not fix the viewport in headless
    Chromium (it subtracts window decorations and has a minimum width), so the device
    metrics are set over DevTools as well: screenshots are exactly ``width`` x ``height``.
    """
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("needs Debian chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        driver.set_page_load_timeout(20)
    except Exception:
        driver.quit()
        raise
    return driver


def shot(driver, tmp_path: Path, name: str) -> Path:
    """Save a PNG screenshot of the viewport as ``tmp_path/<name>.png`` and return its path."""
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
