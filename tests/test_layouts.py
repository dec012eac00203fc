"""The three bundled layouts (issue 12): digest, letter and bulletin, each chosen by front matter or
config, with real headings, dark mode, a hidden preheader and a size under Gmail's clip.

Golden files in tests/golden/ hold each layout's outline (headings, badges, images) and text part
for the seed-shaped digest; `UPDATE_GOLDEN=1 pytest tests/test_layouts.py` rewrites them after an
intended change (then read the diff)."""

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from newsletter import config
from newsletter.compile.pipeline import build_issue

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = sorted(p.stem for p in (REPO / "templates").glob("*.mjml"))
SEED = Path(__file__).parent / "fixtures" / "issues" / "seed-shaped.md"
GOLDEN = Path(__file__).parent / "golden"
GMAIL_CLIP = 102 * 1024


class Outline(HTMLParser):
    """Headings (with the number badge if any), images and links of an email, one line each."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.heading: list[str] | None = None
        self.badge = ""
        self.in_badge = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h1", "h2", "h3", "h4"):
            self.heading, self.badge = [tag], ""
        elif tag == "span" and "item-number" in (attrs.get("class") or ""):
            self.in_badge = True
        elif tag == "img":
            src = attrs.get("src") or ""
            self.lines.append(f"img alt={attrs.get('alt')!r} src={src[:40]!r}")

    def handle_endtag(self, tag):
        if tag == "span" and self.in_badge:
            self.in_badge = False
        elif self.heading and tag == self.heading[0]:
            text = " ".join("".join(self.heading[1:]).split())
            self.lines.append(f"{tag} " + (f"[{self.badge}] " if self.badge else "") + text)
            self.heading = None

    def handle_data(self, data):
        if self.in_badge:
            self.badge += data.strip()
        elif self.heading is not None:
            self.heading.append(data)


def outline(html: str) -> str:
    parser = Outline()
    parser.feed(html)
    return "\n".join(parser.lines) + "\n"


def build(workspace, layout: str, text: str, env=None):
    (workspace / "issues" / "x.md").write_text(text, encoding="utf-8")
    settings = config.load(workspace / "newsletter.toml", env or {})
    compiled = build_issue(settings, "x").compiled
    return "".join(compiled.html.parts), "".join(compiled.text.parts)


def seed(layout: str, extra: str = "") -> str:
    return SEED.read_text(encoding="utf-8").replace("---\n", f"---\ntemplate: {layout}\n{extra}", 1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_golden_outline_and_text_part(workspace, layout):
    html, text = build(workspace, layout, seed(layout))
    got = f"== outline ==\n{outline(html)}== text ==\n{text}"
    golden = GOLDEN / f"seed-{layout}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(got, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert got == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_has_dark_mode_a_hidden_preheader_and_fits_gmail(workspace, layout):
    html, _ = build(workspace, layout, seed(layout))
    assert '<meta name="color-scheme" content="light dark"' in html
    dark = re.search(r"@media \(prefers-color-scheme: dark\) \{(.*?)\n\s*\}\s*</style>", html, re.S)
    assert dark and "color:" in dark.group(1) and "background:" in dark.group(1)
    assert len(html.encode()) < GMAIL_CLIP
    [hidden] = re.findall(r'<div style="(display:none[^"]*)">Shore power, a ferry app', html)
    assert "color" not in hidden and "opacity:0" in hidden and "max-height:0" in hidden  # not by colour
    assert html.count("<h1") == 1


def test_layout_from_config_and_front_matter(workspace):
    body = "---\nsubject: S\n---\n## 1. A\n\nx\n"
    html, _ = build(workspace, "", body, {"NEWSLETTER_NEWSLETTER_TEMPLATE": "letter"})
    assert "Georgia" in html and "item-number" not in html
    html, _ = build(workspace, "", body.replace("subject: S", "subject: S\ntemplate: bulletin"),
                    {"NEWSLETTER_NEWSLETTER_TEMPLATE": "letter"})
    assert "Georgia" not in html and 'class="item-number"' in html


def test_digest_badges_and_letter_plain_numbers(workspace):
    digest, _ = build(workspace, "digest", seed("digest"))
    letter, letter_text = build(workspace, "letter", seed("letter"))
    assert re.findall(r'<span class="item-number"[^>]*>(\d)</span>', digest) == ["1", "2", "3", "4"]
    assert "item-number" not in letter and 'class="card"' not in letter  # no badges, no cards
    assert re.findall(r"<h2[^>]*>(\d)\. ", letter) == ["1", "2", "3", "4"]


def test_letter_signs_off_in_both_parts(workspace):
    html, text = build(workspace, "letter", seed("letter"))
    assert "\u2014 Field Notes Weekly" in html and "\n\u2014 Field Notes Weekly\n" in text  # the From name
    html, text = build(workspace, "letter", seed("letter", "signature: |\n  Ada\n  Editor, Harbour Tech\n"))
    assert "\u2014 Ada</p>" in html and "Editor, Harbour Tech</p>" in html
    assert "\n\u2014 Ada\nEditor, Harbour Tech\n\n--\n" in text
    # "one or more lines" written as a YAML list is the same sign-off, not "must be text"
    listed_html, listed_text = build(workspace, "letter", seed("letter", "signature:\n  - Ada\n  - Editor, Harbour Tech\n"))
    assert (listed_html, listed_text) == (html, text)
    _, digest_text = build(workspace, "digest", seed("digest"))
    assert "\u2014 Field Notes Weekly" not in digest_text  # only layouts that sign off


def test_bulletin_hero_and_thumbnails(workspace):
    text = seed("bulletin").replace(
        "Hi folks,", "![Cranes at dusk](https://example.com/hero.jpg)\n\nHi folks,", 1).replace(
        "The Port of Valencia now", "![A ferry at its berth](https://example.com/ferry.jpg)\n\nThe Port of Valencia now",
        1).replace(
        "A ferry operator has", "[![Phone screen](https://example.com/app.jpg)](https://example.com/app)\n\n"
                                "A ferry operator has", 1)
    html, text_part = build(workspace, "bulletin", text)
    lines = outline(html).splitlines()
    assert lines[:2] == ["h1 Harbour Tech Weekly: what moved on the waterfront this week",
                         "img alt='Cranes at dusk' src='https://example.com/hero.jpg'"]
    assert lines[2:6] == ["img alt='A ferry at its berth' src='https://example.com/ferry.jpg'",
                          "h2 [1] Port Of Valencia Requires Shore Power For Every Ferry Berth",
                          "img alt='Phone screen' src='https://example.com/app.jpg'",
                          "h2 [2] Ferry Operator Says Hackers Targeted Its Booking App"]
    assert html.count("ferry.jpg") == 1 and html.count("hero.jpg") == 1  # moved, not repeated
    assert '<a href="https://example.com/app"' in html
    # on desktop the thumbnail sits beside the item: two columns of one section
    assert re.search(r"mj-column-per-38[^>]*>.*?ferry\.jpg.*?mj-column-per-62", html, re.S)
    assert "[A ferry at its berth]" in text_part  # the text part keeps the alt text
    # the same issue in the digest keeps its images inline in the item
    digest, _ = build(workspace, "digest", text.replace("template: bulletin", "template: digest"))
    assert digest.count("ferry.jpg") == 1 and "mj-column-per-38" not in digest


@pytest.mark.parametrize("language, direction", [("en", "ltr"), ("pt-BR", "ltr"), ("ar", "rtl"), ("he-IL", "rtl"),
                                                 ("pa-Arab", "rtl")])
def test_lang_and_dir_on_html_from_config(workspace, language, direction):
    for layout in LAYOUTS:
        html, _ = build(workspace, layout, seed(layout), {"NEWSLETTER_NEWSLETTER_LANGUAGE": language})
        assert re.search(rf'<html lang="{language}" dir="{direction}"', html), layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_right_to_left_issue_reads_from_the_right_in_every_layout(workspace, layout):
    """MJML writes each text block's alignment inline (left, by default): with dir="rtl" alone the title,
    intro and sections of an Arabic issue sat flush left. The reading side follows the language."""
    html, _ = build(workspace, layout, seed(layout), {"NEWSLETTER_NEWSLETTER_LANGUAGE": "ar"})
    blocks = re.findall(r'<div style="font-family:[^"]*?text-align:(\w+);', html)  # each mj-text's own block
    assert blocks and blocks.count("left") <= 1, blocks  # the one on the far side: "view online", if any
    assert re.search(r'text-align:right;[^"]*"><h1', html)
    ltr, _ = build(workspace, layout, seed(layout))
    assert re.findall(r'<div style="font-family:[^"]*?text-align:(\w+);', ltr).count("right") <= 1


def test_a_language_that_is_not_a_tag_is_refused(workspace):
    with pytest.raises(config.ConfigError, match=r'\[newsletter\] language = \'en"><script\' is not a language tag'):
        config.load(workspace / "newsletter.toml", {"NEWSLETTER_NEWSLETTER_LANGUAGE": 'en"><script'})


def test_compiling_again_does_not_grow_the_layout_loaders_record(workspace):
    """The preview recompiles on every save: asking whether a layout signs off must not re-read it
    through the slot loader, whose list of recipient expressions only grows."""
    from newsletter.compile.render import _layout_env

    build(workspace, "letter", seed("letter"))
    recorded = len(_layout_env(workspace / "templates").loader.expressions)
    assert recorded > 0  # the layout's {{ unsubscribe_url }} at least
    for _ in range(3):
        build(workspace, "letter", seed("letter"))
    assert len(_layout_env(workspace / "templates").loader.expressions) == recorded
