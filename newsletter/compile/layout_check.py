"""``newsletter lint --template FILE``: a layout of your own checked with a sample issue that uses
everything a layout receives (docs/authoring.md#writing-your-own-layout)."""

from __future__ import annotations

import re

from .issue import parse_issue
from .lint import Finding
from .render import CompiledIssue

SAMPLE_PREHEADER = "Sample preheader: three stories and a wrap-up"
SAMPLE_TITLES = ("First sample story", "Second sample story")
SAMPLE_ISSUE = f"""---
subject: "Layout check for {{{{ subscriber.name | default('you') }}}}"
preheader: "{SAMPLE_PREHEADER}"
date: 2026-12-03
cta:
  text: Read the sample report
  url: https://example.com/report
---
![A sample hero image](https://example.com/hero.jpg)

Hi {{{{ subscriber.name | default("there") }}}}, this sample issue checks a layout.

## 1. {SAMPLE_TITLES[0]}

![A sample thumbnail](https://example.com/thumb.jpg)

A paragraph with [a link](https://example.com/one).

## 2. {SAMPLE_TITLES[1]}

Another paragraph.

### A sub-heading

- a list item

## Wrapping up

Thanks for reading.
"""


def sample_issue(path: str = "layout-check-sample.md"):
    return parse_issue(SAMPLE_ISSUE, path)


def layout_findings(compiled: CompiledIssue, html: str) -> list[Finding]:
    """What a layout must print beyond lint's checks: the preheader (hidden without a text colour),
    the title and the sections. ``html``: the personalised HTML of the sample issue."""
    where = str(compiled.layout)
    findings = []
    hidden = re.search(r'<(\w+)[^>]*style="([^"]*)"[^>]*>\s*' + re.escape(SAMPLE_PREHEADER), html)
    if SAMPLE_PREHEADER not in html:
        findings.append(Finding("error", "the layout does not print the preheader: add a hidden "
                                         "<mj-raw><div style=\"display:none;...\">{{ issue.preheader }}</div></mj-raw>",
                                where))
    elif hidden is None or "display:none" not in hidden.group(2).replace(" ", ""):
        findings.append(Finding("warning", "the preheader is not hidden (display:none): readers see it twice", where))
    elif re.search(r"(^|;)\s*color\s*:", hidden.group(2)):
        findings.append(Finding("warning", "the preheader is hidden with a text colour (as <mj-preview> does); spam "
                                           "filters score that (SpamAssassin HTML_FONT_LOW_CONTRAST): hide it "
                                           "without one, see docs/authoring.md#spam-filters", where))
    if not re.search(r"<h1[^>]*>", html):
        findings.append(Finding("warning", "no <h1>: write the title as <h1>{{ issue.title }}</h1>, which screen "
                                           "readers and Gmail's outline use", where))
    for title in SAMPLE_TITLES:
        if title not in html:
            findings.append(Finding("error", f"the sections are missing (no {title!r}): loop over them with "
                                             "{% for section in sections %} or print {{ content }}", where))
            break
    return findings
