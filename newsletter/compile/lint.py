"""Deliverability checks on a compiled issue, with the issue file's line where known.

Each finding names its check (``Finding.check``): ``send``, ``dispatch`` and ``test`` refuse on
errors unless the user passes ``--ignore-lint CHECK`` for each (docs/sending.md, "Checks before
a send"); there, unknown front matter keys are errors too (:func:`for_sending`).
"""

from __future__ import annotations

import difflib
import email.utils
import re
from dataclasses import dataclass, replace
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable

from markupsafe import escape

from ..config import Settings
from ..models import Subscriber
from ..unsubscribe import PROVIDER_MANAGED
from .images import DISPLAY_WIDTH, MAX_BYTES, MAX_WIDTH
from .issue import KNOWN_KEYS, files_with_id
from .markdown import Heading, headings_written_as_lists, read_headings, title_headings
from .render import CompiledIssue
from .slots import Slot

GMAIL_CLIP = 102 * 1024  # Gmail clips HTML above ~102 KB (measured by others, not documented)
SIZE_WARNING = 90 * 1024
PREHEADER_MAX = 140


# The checks by name, as ``--ignore-lint`` takes them. ``from`` is not among those it may
# ignore: without a From address there is no email to send.
CHECKS = ("front-matter", "preheader", "merge-field", "mailchimp-tag", "template-expression", "unsubscribe",
          "postal-address", "image", "link", "heading", "size", "from", "issue-id")
NOT_IGNORABLE = frozenset({"from"})
# Keys other tools (or habit) use for ours, which difflib would not guess.
KEY_SYNONYMS = {"call_to_action": "cta", "button": "cta", "tags": "segment", "tag": "segment",
                "audience": "segment", "preview": "preheader", "preview_text": "preheader",
                "layout": "template", "schedule": "send_at", "send_time": "send_at", "slug": "id"}
# Mailchimp's merge tags, which the newsletter would send as they are: *|FNAME|*.
MAILCHIMP_TAG = re.compile(r"\*\|([A-Za-z0-9_:]+)\|\*")
MAILCHIMP_FIELDS = {"FNAME": "subscriber.name", "LNAME": "subscriber.name", "NAME": "subscriber.name",
                    "EMAIL": "subscriber.email", "UNSUB": "unsubscribe_url", "LIST:ADDRESS": "newsletter.postal_address",
                    "LIST:NAME": "newsletter.name", "ARCHIVE": "view_online_url"}


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    message: str
    path: str
    line: int | None = None
    check: str = ""  # one of CHECKS

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.level}: {self.message}" + (f" [{self.check}]" if self.check else "")


def for_sending(findings: list[Finding]) -> list[Finding]:
    """The findings as a send judges them: an unknown front matter key is an error (``call_to_action:``
    for ``cta:`` would silently drop the button from every copy)."""
    return [replace(f, level="error") if f.check == "front-matter" else f for f in findings]


def lint(compiled: CompiledIssue, *, html_size: int, columns: set[str], subscribers: Iterable[Subscriber],
         postal_address: str, list_path: str) -> list[Finding]:
    issue = compiled.issue
    source = Path(issue.path).read_text(encoding="utf-8-sig") if Path(issue.path).exists() else issue.body
    findings: list[Finding] = []
    add = findings.append

    for key in issue.front_matter:
        if key not in KNOWN_KEYS:
            close = [KEY_SYNONYMS[key]] if key in KEY_SYNONYMS else difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            add(Finding("warning", f"unknown front matter key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                        issue.path, issue.front_matter_lines.get(key), "front-matter"))

    if not issue.preheader:
        add(Finding("warning", "no preheader: inboxes will show the first words of the email instead "
                               "(add 'preheader: ...' to the front matter)", issue.path,
                    issue.front_matter_lines.get("preheader", 1), "preheader"))
    elif len(issue.preheader) > PREHEADER_MAX:
        add(Finding("warning", f"preheader is {len(issue.preheader)} characters; inboxes show about {PREHEADER_MAX}",
                    issue.path, issue.front_matter_lines.get("preheader"), "preheader"))

    findings.extend(merge_field_findings(compiled, columns, subscribers, list_path))
    findings.extend(mailchimp_tag_findings(issue.path, source))
    findings.extend(numbering_findings(issue.path, read_headings(issue.body, issue.body_line)))
    findings.extend(pasted_heading_findings(issue.path, headings_written_as_lists(issue.body, issue.body_line)))
    for line, text in title_headings(issue.body, issue.body_line):
        add(Finding("warning", f"'# {text}' is a second title: the layout prints the subject as the email's one "
                               f"<h1>; write sections as '## {text}'", issue.path, line, "heading"))
    findings.extend(foreign_merge_tag_findings(issue.path, source))

    html = compiled.html.with_placeholders(lambda i: f"zqslot{i}qz")
    findings.extend(url_merge_field_findings(compiled, html))
    for leftover in re.finditer(r"\{\{.*?\}\}|\{%.*?%\}", html):
        add(Finding("error", f"unresolved template expression {leftover.group(0)!r} in the compiled HTML",
                    issue.path, _line_in(source, leftover.group(0)), "template-expression"))

    unsubscribe_ids = {i for i, slot in enumerate(compiled.slots) if slot.source.startswith("unsubscribe_url")}
    if not any(f'href="zqslot{i}qz"' in html for i in unsubscribe_ids):
        add(Finding("error", "no unsubscribe link: the layout or body needs <a href=\"{{ unsubscribe_url }}\">",
                    str(compiled.layout), check="unsubscribe"))
    if not postal_address.strip():  # spaces print a blank footer line: no address either
        add(Finding("error", "no postal address: set [newsletter] postal_address in newsletter.toml "
                             "(required by CAN-SPAM and printed in the footer)", "newsletter.toml", check="postal-address"))
    elif not any(form in html for form in (postal_address, str(escape(postal_address)))):
        add(Finding("error", "the layout does not print [newsletter] postal_address; add "
                             "{{ newsletter.postal_address }} to its footer", str(compiled.layout), check="postal-address"))

    for href in dict.fromkeys(_HREF.findall(html)):  # each link once, in order
        url = unescape(href)
        if url.startswith("#") and len(url) > 1 and f'id="{url[1:]}"' not in html and f"name=\"{url[1:]}\"" not in html:
            line = _line_in(source, url)
            add(Finding("warning", f"link {url!r} jumps to nothing: no element of the email has that id (headings "
                                   f"get none, and many mail apps ignore such jumps anyway)",
                        issue.path if line else str(compiled.layout), line, "link"))
            continue
        if not url.strip():
            add(Finding("warning", "a link has no URL ([text]() or href=\"\"): it goes nowhere",
                        issue.path if "]()" in source else str(compiled.layout), _line_in(source, "]()"), "link"))
            continue
        scheme = _SCHEME.match(url)
        if scheme and scheme.group().lower() in _UNSAFE_SCHEMES:
            line = _line_in(source, url)
            add(Finding("error", f"link {url[:60]!r} runs a {scheme.group().lower()} URL: mail apps strip or block "
                                 f"it, and spam filters score it (link to an https:// page instead)",
                        issue.path if line else str(compiled.layout), line, "link"))
            continue
        if url.startswith(("#", "zqslot")) or scheme:
            continue  # an anchor, a merge field that is the whole URL, or absolute (https:, mailto:, tel:...)
        line = _line_in(source, url)
        add(Finding("error", f"link {url!r} is not an absolute URL; it will be broken in every inbox (write it "
                             f"with its scheme: https://...)", issue.path if line else str(compiled.layout), line,
                    "link"))

    for image in _images(html):
        src, alt = image.get("src") or "", image.get("alt")
        line = _line_in(source, src) if src else None
        where = issue.path if line else str(compiled.layout)
        if alt is None or not alt.strip():
            add(Finding("warning", f"image {src!r} has no alt text (many clients block images)", where, line, "image"))
        if src.startswith("http://"):
            add(Finding("warning", f"image {src!r} uses http://; use https:// or clients may block it", where, line, "image"))
        elif not src.startswith(("https://", "cid:", "data:")):
            add(Finding("error", f"image {src!r} is not an absolute https:// URL; it will be broken in every inbox",
                        where, line, "image"))

    for image in compiled.images:
        if image.size > MAX_BYTES:
            add(Finding("warning", f"image {image.src!r} is {image.size / 1024 / 1024:.1f} MB: slow on mobile data "
                                   f"(keep images under {MAX_BYTES // 1024 // 1024} MB; compress it or save it as JPEG)",
                        issue.path, image.line, "image"))
        if image.width > MAX_WIDTH:
            add(Finding("warning", f"image {image.src!r} is {image.width} px wide: more than the {MAX_WIDTH} px "
                                   f"a {DISPLAY_WIDTH} px email needs even on a retina screen (resize it)",
                        issue.path, image.line, "image"))

    kb = html_size / 1024
    if html_size >= GMAIL_CLIP:
        add(Finding("error", f"HTML is {kb:.1f} KB; Gmail clips messages above ~102 KB", issue.path, check="size"))
    elif html_size >= SIZE_WARNING:
        add(Finding("warning", f"HTML is {kb:.1f} KB, close to Gmail's ~102 KB clip", issue.path, check="size"))
    return findings


def settings_findings(settings: Settings, unsubscribe_refusal: str = "") -> list[Finding]:
    """What the configuration gets wrong for sending: From, unsubscribe link and header.
    ``unsubscribe_refusal``: why the provider cannot manage unsubscribes (``ProviderFacts``)."""
    findings = []
    origin = settings.origins
    if "@" not in email.utils.parseaddr(settings.newsletter.from_)[1]:
        findings.append(Finding("error", "no From address: set [newsletter] from = \"Name <you@example.com>\" "
                                         "in newsletter.toml", origin["newsletter.from"], check="from"))
    url, mailto = settings.unsubscribe.url, settings.unsubscribe.mailto
    if url == PROVIDER_MANAGED:  # the provider's own link and headers: nothing of ours to check
        if unsubscribe_refusal:
            findings.append(Finding("error", f'[unsubscribe] url = "provider": {unsubscribe_refusal}; nobody would get a '
                                             "working unsubscribe link", origin["unsubscribe.url"], check="unsubscribe"))
        elif mailto:
            findings.append(Finding("warning", '[unsubscribe] mailto is not used in emails with url = "provider": '
                                               "the provider's List-Unsubscribe header replaces ours (the web "
                                               "archive still offers it)", origin["unsubscribe.mailto"], check="unsubscribe"))
        return findings
    if not url and not mailto:
        findings.append(Finding("error", "no unsubscribe link: set [unsubscribe] url (an https:// page with "
                                         "{token}) and/or mailto; without them there is no List-Unsubscribe "
                                         "header and the footer link is empty", origin["unsubscribe.url"], check="unsubscribe"))
    if url and "{token}" not in url and "{email}" not in url:
        findings.append(Finding("warning", "[unsubscribe] url has no {token}: every reader gets the same link, "
                                           "so the page cannot tell who clicked", origin["unsubscribe.url"], check="unsubscribe"))
    if url and not url.startswith("https://"):
        findings.append(Finding("warning", "[unsubscribe] url is not https://: Gmail and Yahoo need an HTTPS "
                                           "one-click unsubscribe (RFC 8058) from bulk senders",
                                origin["unsubscribe.url"], check="unsubscribe"))
    return findings


def shared_id_findings(issue, issues_dir: Path) -> list[Finding]:
    """Another issue file with this one's id: the ledger knows an issue by its id, so a send of either would
    resume the other's plan (nobody, or readers added since, would get this content), and the archive
    would publish both as one page. A copy of last week's file keeps its ``id:`` line."""
    line = issue.front_matter_lines.get("id")
    return [Finding("error", f"issue id {issue.id!r} is also the id of {other}: the ledger knows an issue by its "
                             f"id, so a send of either file would resume the other's plan; give each issue an id of "
                             f"its own (front matter 'id:', else the file name)", issue.path, line, "issue-id")
            for other in files_with_id(issue.id, issues_dir, besides=issue.path)]


def pasted_heading_findings(path: str, lists: list[tuple[int, str]]) -> list[Finding]:
    """Numbered headings pasted as plain lines: in Markdown they are lists, so the issue has no sections."""
    def short(text: str) -> str:
        return text if len(text) <= 50 else text[:50].rsplit(" ", 1)[0] + " …"
    return [Finding("warning", f"'{short(text)}' reads like a numbered heading, but Markdown makes it a one-item "
                               "list; start the line with '## ' to make it a section", path, line)
            for line, text in lists]


def numbering_findings(path: str, headings: list[Heading]) -> list[Finding]:
    """Warnings on hand-written section numbers that look inconsistent: gaps, repeats, a mix
    of numbered and unnumbered items, or of writing styles (docs/authoring.md#numbered-sections)."""
    numbered = [h for h in headings if h.written is not None]
    if not numbered:
        return []
    findings = []
    expected, seen = 1, {}
    for heading in numbered:
        number = heading.written
        if number in seen:
            findings.append(Finding("warning", f"section number {number} is used twice (also at line "
                                               f"{seen[number]}): {heading.text!r}", path, heading.line))
        elif number != expected:
            missing = f"{expected}" if number == expected + 1 else f"{expected}-{number - 1}"
            if number > expected:
                findings.append(Finding("warning", f"section numbers skip {missing}: {heading.text!r}",
                                        path, heading.line))
            else:
                findings.append(Finding("warning", f"section number {number} comes after {expected - 1}: "
                                                   f"{heading.text!r}", path, heading.line))
        seen.setdefault(number, heading.line)
        expected = max(expected, number + 1)
    first, last = numbered[0].line, numbered[-1].line
    for heading in headings:
        if heading.written is None and not heading.unnumbered and first < heading.line < last:
            findings.append(Finding("warning", f"section {heading.text!r} has no number but sits between "
                                               "numbered ones; number it, or end it with {-} to say it has none",
                                    path, heading.line))
    styles = {h.style for h in numbered}
    if len(styles) > 1:
        first_of_style = sorted({h.style: h for h in reversed(numbered)}.values(), key=lambda h: h.line)
        examples = ", ".join(f"{h.style!r} (line {h.line})" for h in first_of_style)
        findings.append(Finding("warning", f"section numbers are written in {len(styles)} ways: {examples}; "
                                           "pick one", path, numbered[0].line))
    return findings


# Other tools' merge tags that reach readers literally here (Jinja would refuse `{{ first_name }}` and
# listmonk's `{{ .Subscriber.Name }}` at compile time, with a hint: compile/render.py).
_FOREIGN_TAGS = (
    ("Mailgun", re.compile(r"%recipient[._](\w+)%")),
    ("Sendy", re.compile(r"\{\$(\w+)\}")),
    ("Campaign Monitor", re.compile(r"\[(firstname|lastname|fullname|email)(?:,\s*fallback=(?P<fallback>[^\]]*))?\]",
                                    re.I)),
)
_CODE_SPAN = re.compile(r"(`+).*?\1")  # a tag quoted in code is writing about it, not using it
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_FIELD_NAMES = {"firstname": "first_name", "fname": "first_name", "lastname": "last_name", "lname": "last_name",
                "fullname": "name"}


def foreign_merge_tag_findings(path: str, source: str) -> list[Finding]:
    """Errors for merge tags written for another tool, each with the equivalent to write instead."""
    findings = []
    in_fence = False
    for number, line in enumerate(source.splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
        if in_fence or line.startswith("    "):
            continue
        for tool, pattern in _FOREIGN_TAGS:
            for match in pattern.finditer(_CODE_SPAN.sub("", line)):
                field = _FIELD_NAMES.get(match.group(1).lower(), match.group(1).lower())
                fallback = (match.groupdict().get("fallback") or "...").replace('"', "'")
                findings.append(Finding(
                    "error", f"{match.group(0)} is a {tool} merge tag and would reach readers as written; "
                             f"write {{{{ subscriber.{field} | default(\"{fallback}\") }}}}", path, number))
    return findings


def merge_field_findings(compiled: CompiledIssue, columns: set[str], subscribers: Iterable[Subscriber],
                         list_path: str) -> list[Finding]:
    """Fields no column provides (error unless defaulted) and blank values without a default.

    ``subscribers`` is read once, streaming, and only when some field has no fallback.
    """
    findings = []
    available = columns | {"email"}
    unguarded: dict[str, list[Slot]] = {}
    for slot in compiled.slots:
        for name in slot.fields:
            if name in available:
                if name != "email" and not slot.defaulted:
                    unguarded.setdefault(name, []).append(slot)
                continue
            close = difflib.get_close_matches(name, sorted(available), n=1)
            hint = f" (did you mean subscriber.{close[0]}?)" if close else ""
            level = "warning" if slot.defaulted else "error"
            findings.append(Finding(
                level, f"merge field subscriber.{name}: no column {name!r} in {list_path}{hint}; "
                       f"columns: {', '.join(sorted(available))}", slot.path, slot.line, "merge-field"))
    if unguarded:
        blank = dict.fromkeys(unguarded, 0)
        for subscriber in subscribers:
            values = subscriber.merge_values()
            for name in unguarded:
                if not values.get(name):
                    blank[name] += 1
        for name, slots in unguarded.items():
            if blank[name]:
                findings.extend(Finding(
                    "warning", f"merge field subscriber.{name} is blank for {blank[name]} subscriber(s) and has "
                               f"no fallback; write {{{{ subscriber.{name} | default(\"...\") }}}}",
                    slot.path, slot.line, "merge-field") for slot in slots)
    return findings


_HREF = re.compile(r'href="([^"]*)"')
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_UNSAFE_SCHEMES = frozenset({"javascript:", "vbscript:", "data:", "file:"})  # script or local: never in an email
_SLOT_TOKEN = re.compile(r"zqslot(\d+)qz")


def url_merge_field_findings(compiled: CompiledIssue, html: str) -> list[Finding]:
    """A merge field inside a link's URL, after its start, is sent as it is: a name with a space, an address
    with a +, a value with & or # breaks the link or changes what it asks for. Jinja's urlencode filter
    encodes it; a field that is the whole URL (a reader's own site) is left alone."""
    flagged: dict[int, None] = {}
    for href in _HREF.finditer(html):
        for token in _SLOT_TOKEN.finditer(href.group(1)):
            slot = compiled.slots[int(token.group(1))]
            if token.start() > 0 and "urlencode" not in slot.source and "unsubscribe_url" not in slot.source:
                flagged[int(token.group(1))] = None
    return [Finding("warning", f"merge field {{{{ {compiled.slots[n].source} }}}} sits inside a link's URL and is "
                               f"sent as it is: a value with a space, +, & or # breaks the link; write "
                               f"{{{{ {compiled.slots[n].source} | urlencode }}}}",
                    compiled.slots[n].path, compiled.slots[n].line, "merge-field") for n in flagged]


def mailchimp_tag_findings(path: str, source: str) -> list[Finding]:
    """Mailchimp merge tags (``*|FNAME|*``) left in an issue pasted from there: every reader would see them."""
    findings = []
    for number, text in enumerate(source.split("\n"), 1):
        for match in MAILCHIMP_TAG.finditer(text):
            tag = match.group(1).upper()
            field = MAILCHIMP_FIELDS.get(tag, f"subscriber.{tag.lower()}")
            findings.append(Finding("error", f"Mailchimp merge tag {match.group(0)!r} would be sent as it is; write "
                                             f"{{{{ {field} }}}} instead", path, number, "mailchimp-tag"))
    return findings


def _line_in(source: str, needle: str) -> int | None:
    index = source.find(needle)
    return source.count("\n", 0, index) + 1 if index >= 0 else None


def _images(html: str) -> list[dict[str, str | None]]:
    found: list[dict[str, str | None]] = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                found.append(dict(attrs))

    Images(convert_charrefs=True).feed(html)
    return found
