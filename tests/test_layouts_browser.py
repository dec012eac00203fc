"""Every bundled layout in headless Chromium (issue 12): at 600 px and 375 px, light and dark, it fits
the viewport and axe-core finds no critical or serious accessibility violation.

Screenshots stay in the test's tmp folder (``<layout>-<width>-<scheme>.png``) for a human to look at.
"""

import base64
import json
import re
import struct
import zlib
from pathlib import Path

import pytest
from browser import WIDEST, chrome, shot

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = sorted(p.stem for p in (REPO / "templates").glob("*.mjml"))
SEED = Path(__file__).parent / "fixtures" / "issues" / "seed-shaped.md"
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"

# axe rules written for web pages that do not apply to an email: a message is shown inside the
# client's own page, which has the main landmark and the regions; a `main` of ours would compete
# with it. MJML wraps the body in one role="article" element, which render.py names after the issue.
NOT_FOR_EMAIL = {"landmark-one-main", "region"}

MEASURE = WIDEST + """
const h1 = document.querySelector('h1');
return {vw, widest, culprit, scrollWidth: document.documentElement.scrollWidth,
        h1Color: getComputedStyle(h1).color, bodyBackground: getComputedStyle(document.body).backgroundColor};
"""

RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => (
  {id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))))
  .catch(e => done({error: String(e)}));
"""


def png(width: int, height: int, rgb: tuple[int, int, int]) -> str:
    """A solid-colour PNG as a data: URI, so the bulletin's images load without a network."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(data).decode()


def seed_with_images(layout: str) -> str:
    text = SEED.read_text(encoding="utf-8").replace("---\n", f"---\ntemplate: {layout}\n", 1)
    text = text.replace("Hi folks,", f"![Cranes at dusk]({png(600, 240, (40, 90, 140))})\n\nHi folks,", 1)
    # A code block whose line is wider than a phone: it wraps, it does not widen the card (it did in all three).
    text = text.replace("Hi folks,", "```\nberth_load = sum(crane.lifts_per_hour * crane.hours for crane in cranes) "
                                     "/ len(berths)\n```\n\nHi folks,", 1)
    return text.replace("The Port of Valencia now",
                        f"![A ferry at its berth]({png(240, 160, (200, 120, 60))})\n\nThe Port of Valencia now", 1)


@pytest.mark.skipif(not AXE.exists(), reason="npm axe-core not installed (run `npm ci`)")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_fits_and_passes_axe_light_and_dark(run, workspace, tmp_path, layout):
    (workspace / "issues" / "seed.md").write_text(seed_with_images(layout), encoding="utf-8")
    assert run("build", "issues/seed.md", "--out", "out").exit_code == 0
    page = (workspace / "out" / "seed.html").as_uri()
    axe = AXE.read_text(encoding="utf-8")
    seen = {}
    for width in (600, 375):
        driver = chrome(tmp_path, width, 1400)
        try:
            driver.set_script_timeout(60)
            for scheme in ("light", "dark"):
                driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                       {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
                driver.get(page)
                assert shot(driver, tmp_path, f"{layout}-{width}-{scheme}").stat().st_size > 5_000
                metrics = driver.execute_script(MEASURE)
                driver.execute_script(axe)
                violations = driver.execute_async_script(RUN_AXE)
                assert "error" not in violations, violations
                seen[width, scheme] = metrics
                where = f"{layout} at {width} px, {scheme}"
                print(f"\n{where}: axe violations {json.dumps(violations)}")
                assert metrics["widest"] <= metrics["vw"] + 0.5, \
                    f"{where}: {metrics['culprit']} sticks out: {metrics['widest']}"
                assert metrics["scrollWidth"] <= metrics["vw"], f"{where}: horizontal scrolling"
                serious = [v for v in violations
                           if v["impact"] in ("critical", "serious") and v["id"] not in NOT_FOR_EMAIL]
                assert serious == [], f"{where}: {serious}"
        finally:
            driver.quit()
    html = (workspace / "out" / "seed.html").read_text(encoding="utf-8")
    [article] = re.findall(r'<div[^>]*role="article"[^>]*>', html)
    assert 'aria-label="Harbour Tech Weekly: what moved on the waterfront this week"' in article
    # dark mode really applies: the title turns light, the page dark
    for width in (600, 375):
        light, dark = seen[width, "light"], seen[width, "dark"]
        assert light["h1Color"] != dark["h1Color"] and light["bodyBackground"] != dark["bodyBackground"]
        assert _luminance(dark["h1Color"]) > 0.7 > _luminance(light["h1Color"])


def _luminance(css_rgb: str) -> float:
    r, g, b = (int(part) for part in re.findall(r"\d+", css_rgb)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
