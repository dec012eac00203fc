"""Markdown body -> HTML fragments (intro + ``## `` sections) and plain text.

CommonMark + tables via markdown-it-py; the author's raw HTML passes through.
Section numbers follow docs/authoring.md#numbered-sections: a number the author
wrote (``1.``, ``1)``, ``#1``, ``No. 1``, ``1 -``) is used and taken out of the
title so it never shows twice; a ``## `` heading ending in ``{-}`` or
``{.unnumbered}`` (Pandoc's syntax) has no number.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Callable

from markdown_it import MarkdownIt
from markdown_it.token import Token

from ..models import Image, Section
from .images import LocalImage
from .slots import TOKEN

_UNNUMBERED = re.compile(r"\s*\{(?:-|\.unnumbered)\}\s*$")
# A number written at the start of a heading. A bare number needs a separator after it (so
# "3 ways to..." and "2026 in review" are titles), a dash needs spaces (so "1-2 punch" is one).
_WRITTEN_NUMBER = re.compile(r"""^\s*(?:
      (?P<prefix>\#|No\.?|Nr\.?|N[º°o]\.?)\s*(?P<n1>\d{1,4})(?:\s*[.):]\s+|\s+[-–—]\s+|\s+|$)
    | (?P<n2>\d{1,4})(?:[.):](?:\s+|$)|\s+[-–—]\s+)
    )""", re.X | re.I)


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True, "typographer": False}).enable("table")


_md = _parser()


@dataclass(frozen=True)
class Body:
    intro: str
    sections: tuple[Section, ...]
    html: str
    tokens: tuple[Token, ...]
    hero: Image | None = None  # an image the intro starts with
    intro_rest: str = ""  # ``intro`` without it


@dataclass(frozen=True)
class Heading:
    """What a ``## `` heading says about its number, as written (before any numbering is decided)."""

    line: int
    text: str  # the heading's source, for messages
    written: int | None  # the number the author wrote, if any
    style: str  # how it was written: "1.", "1)", "#1", "No. 1", "1 -", or "" without one
    unnumbered: bool  # marked {-} / {.unnumbered}


def numbers_for(headings: list[Heading], numbering: str) -> list[int | None]:
    """The number each section shows, by the ``numbering`` mode (auto | on | off).

    auto: when any heading carries a written number, those numbers and only those are used
    (a wrap-up after hand-numbered items stays unnumbered); otherwise every section is numbered.
    on: every section is numbered, a written number used as is and counted on from.
    off: none (written numbers stay part of the title).
    """
    if numbering == "off":
        return [None] * len(headings)
    if numbering == "auto" and any(h.written is not None for h in headings):
        return [h.written for h in headings]
    numbers: list[int | None] = []
    last = 0
    for heading in headings:
        if heading.unnumbered:
            numbers.append(None)
            continue
        last = heading.written if heading.written is not None else last + 1
        numbers.append(last)
    return numbers


# src as written, its line -> the published copy to use instead (None: leave the image as it is)
ImageCallback = Callable[[str, "int | None"], "LocalImage | None"]


def render_body(markdown: str, first_line: int = 1, numbering: str = "auto",
                images: ImageCallback | None = None) -> Body:
    """Split the body at ``## `` headings and render each part to HTML.

    ``images`` (compile/images.py) turns an image's relative path into its published URL and size.
    """
    tokens = _md.parse(markdown)
    if images is not None:
        _publish_images(tokens, first_line, images)
    starts = [i for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"]
    headings = [_read_heading(tokens, i, first_line) for i in starts]
    numbers = numbers_for(headings, numbering)
    bounds = [0, *starts, len(tokens)]
    intro = _md.renderer.render(tokens[: bounds[1]], _md.options, {}) if bounds[1] else ""
    hero = _lead_image(tokens, 0, bounds[1])
    intro_rest = _md.renderer.render(tokens[3: bounds[1]], _md.options, {}) if hero else intro
    sections = []
    for start, end, heading, number in zip(starts, bounds[2:], headings, numbers):
        inline = tokens[start + 1]
        if heading.unnumbered:
            _strip(inline, _UNNUMBERED)
        if number is not None and heading.written is not None:
            _strip(inline, _WRITTEN_NUMBER, leading=True)  # the number shows once, as the section's number
        tokens[start].meta["number"] = number  # for body_to_text
        title = _md.renderer.render([inline], _md.options, {})
        html = _md.renderer.render(tokens[start + 3: end], _md.options, {})
        image = _lead_image(tokens, start + 3, end)
        rest = _md.renderer.render(tokens[start + 6: end], _md.options, {}) if image else html
        sections.append(Section(title=title, html=html, number=number, line=heading.line, image=image, rest=rest))
    full = _md.renderer.render(tokens, _md.options, {})
    return Body(intro=intro, sections=tuple(sections), html=full, tokens=tuple(tokens), hero=hero,
                intro_rest=intro_rest)


def _publish_images(tokens: list[Token], first_line: int, images: ImageCallback) -> None:
    """Give every Markdown image that ``images`` knows its published URL, width and height."""
    for token in tokens:
        for child in token.children or ():
            if child.type != "image":
                continue
            line = first_line + token.map[0] if token.map else None
            published = images(str(child.attrs.get("src", "")), line)
            if published is not None:
                width, height = published.display
                child.attrs.update(src=published.url, width=str(width), height=str(height))


def _lead_image(tokens: list[Token], start: int, end: int) -> Image | None:
    """The image of a paragraph holding nothing but it (maybe linked), when that paragraph comes first."""
    if end - start < 3 or tokens[start].type != "paragraph_open":
        return None
    children = [c for c in tokens[start + 1].children or () if not (c.type == "text" and not c.content.strip())]
    kinds = [c.type for c in children]
    if kinds == ["image"]:
        image, href = children[0], ""
    elif kinds == ["link_open", "image", "link_close"]:
        image, href = children[1], str(children[0].attrs.get("href", ""))
    else:
        return None
    alt = "".join(c.content for c in image.children or ()) or image.content
    return Image(src=str(image.attrs.get("src", "")), alt=alt, href=href,
                 width=int(image.attrs.get("width", 0)), height=int(image.attrs.get("height", 0)))


def read_headings(markdown: str, first_line: int = 1) -> list[Heading]:
    """The ``## `` headings of a body with their written numbers (for lint)."""
    tokens = _md.parse(markdown)
    return [_read_heading(tokens, i, first_line) for i, t in enumerate(tokens)
            if t.type == "heading_open" and t.tag == "h2"]


def title_headings(markdown: str, first_line: int = 1) -> list[tuple[int, str]]:
    """(line, text) of each ``# `` heading in a body: the layout prints the subject as the email's one
    ``<h1>``, so another is a second title, larger than the real one (lint)."""
    tokens = _md.parse(markdown)
    return [(first_line + t.map[0], tokens[i + 1].content) for i, t in enumerate(tokens)
            if t.type == "heading_open" and t.tag == "h1" and t.map]


def headings_written_as_lists(markdown: str, first_line: int = 1) -> list[tuple[int, str]]:
    """(line, text) of one-item numbered lists that read like headings: a draft pasted from a web page
    or a word processor, where ``1. Title`` on its own line is a list in Markdown, not a heading.
    Reported only when there are two or more, numbered on from each other."""
    tokens = _md.parse(markdown)
    found: list[tuple[int, str, int]] = []
    for i, tok in enumerate(tokens):
        if tok.type != "ordered_list_open" or tok.level != 0:
            continue
        close = next(j for j in range(i + 1, len(tokens)) if tokens[j].type == "ordered_list_close"
                     and tokens[j].level == 0)
        items = [t for t in tokens[i:close] if t.type == "list_item_open"]
        inlines = [t for t in tokens[i:close] if t.type == "inline"]
        if len(items) != 1 or len(inlines) != 1 or "\n" in inlines[0].content or len(inlines[0].content) > 150:
            continue
        start = int(tok.attrs.get("start", 1) or 1)
        found.append((first_line + (tok.map[0] if tok.map else 0), inlines[0].content, start))
    starts = [start for _, _, start in found]
    if len(found) < 2 or starts != list(range(starts[0], starts[0] + len(starts))):
        return []
    return [(line, f"{start}. {text}") for line, text, start in found]


def _read_heading(tokens: list[Token], start: int, first_line: int) -> Heading:
    inline = tokens[start + 1]
    line = first_line + (tokens[start].map[0] if tokens[start].map else 0)
    unnumbered = bool(_UNNUMBERED.search(inline.content))
    first = inline.children[0] if inline.children else None
    match = _WRITTEN_NUMBER.match(first.content) if first is not None and first.type == "text" else None
    if match is None or unnumbered:
        return Heading(line, inline.content, None, "", unnumbered)
    number = int(match.group("n1") or match.group("n2"))
    return Heading(line, inline.content, number, _style(match), unnumbered)


def _style(match: re.Match) -> str:
    if match.group("prefix"):
        prefix = match.group("prefix")
        return "#1" if prefix == "#" else "No. 1"
    rest = match.group(0).strip()[len(match.group("n2")):].strip()
    return "1 -" if rest[:1] in "-–—" else f"1{rest[:1]}"


def _strip(inline: Token, pattern: re.Pattern, *, leading: bool = False) -> None:
    """Remove a marker from the heading's source and from its first (or last) text token."""
    inline.content = pattern.sub("", inline.content, count=1)
    if inline.children:
        child = inline.children[0 if leading else -1]
        if child.type == "text":
            child.content = pattern.sub("", child.content, count=1)


def body_to_text(body: Body) -> str:
    """Readable plain text from the parsed Markdown: links as ``text (url)``, images as alt."""
    out: list[str] = []
    prefix: list[str] = []  # blockquote / list markers in force
    list_stack: list[list[int]] = []  # [next number] for ordered, [-1] for bullets
    row: list[str] = []
    tokens = body.tokens
    for i, tok in enumerate(tokens):
        kind = tok.type
        if kind == "heading_open":
            inline = tokens[i + 1]
            title = _inline_text(inline)
            if tok.meta.get("number") is not None:
                title = f"{tok.meta['number']}. {title}"
            rule = _RULES.get(tok.tag, "~")
            out.append(f"{title}\n{underline(title, rule)}\n\n")
        elif kind == "inline" and tokens[i - 1].type not in ("heading_open", "th_open", "td_open"):
            text = _inline_text(tok)
            lead = "".join(prefix)
            out.append(lead + text.replace("\n", "\n" + _continued(prefix)) + ("\n" if list_stack else "\n\n"))
            if prefix and prefix[-1].strip() and list_stack:
                prefix[-1] = " " * len(prefix[-1])  # continuation lines of a list item
        elif kind == "bullet_list_open":
            list_stack.append([-1])
        elif kind == "ordered_list_open":
            list_stack.append([int(tok.attrs.get("start", 1) or 1)])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            list_stack.pop()
            if not list_stack:
                out.append("\n")
        elif kind == "list_item_open":
            counter = list_stack[-1]
            marker = "- " if counter[0] < 0 else f"{counter[0]}. "
            if counter[0] >= 0:
                counter[0] += 1
            prefix.append(marker)  # a nested item's indent is its parents' prefixes, already spaces
        elif kind == "list_item_close":
            prefix.pop()
        elif kind == "blockquote_open":
            prefix.append("> ")
        elif kind == "blockquote_close":
            prefix.pop()
        elif kind in ("fence", "code_block"):  # indented under the item or quote it belongs to
            lead = _continued(prefix) + "    "
            out.append("".join(lead + line + "\n" for line in tok.content.rstrip("\n").split("\n")) + "\n")
        elif kind == "hr":
            out.append("-" * 20 + "\n\n")
        elif kind in ("th_open", "td_open"):
            row.append(_inline_text(tokens[i + 1]))
        elif kind == "tr_close":
            out.append(" | ".join(row) + "\n")
            row = []
        elif kind == "table_close":
            out.append("\n")
        elif kind == "html_block":
            text = _strip_tags(tok.content).strip()
            if text:
                out.append(text + "\n\n")
    return re.sub(r"\n{3,}", "\n\n", "".join(out)).strip() + "\n"


def _continued(prefix: list[str]) -> str:
    """The lead of a block's next lines: a quote's "> " on each, a list marker's width in spaces."""
    return "".join(part if part == "> " else " " * len(part) for part in prefix)


# Setext-style rules keep the hierarchy in the text part: the title (and any body h1) "=",
# sections "-", sub-headings "~".
_RULES = {"h1": "=", "h2": "-"}


def underline(title: str, rule: str) -> str:
    """A rule as long as the title reads, however long (slot tokens count as a few characters)."""
    visible = TOKEN.sub("xxxxx", title)
    return rule * len(visible)


def _inline_text(inline: Token) -> str:
    parts: list[str] = []
    href_stack: list[tuple[str, int]] = []
    for child in inline.children or ():
        kind = child.type
        if kind in ("text", "code_inline"):
            parts.append(child.content)
        elif kind in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif kind == "image":
            alt = "".join(c.content for c in child.children or ()) or child.content
            if alt:
                parts.append(f"[{alt}]")
        elif kind == "link_open":
            href_stack.append((str(child.attrs.get("href", "")), len(parts)))
        elif kind == "link_close" and href_stack:
            href, start = href_stack.pop()
            label = "".join(parts[start:])
            if href and href != label and not href.startswith("#"):
                parts.append(f" ({href})")
        elif kind == "html_inline":
            tag = child.content.lower()
            if tag.startswith("<br"):
                parts.append("\n")
            elif tag.startswith("<a ") and (href := _HREF.search(child.content)):
                href_stack.append((html.unescape(href.group(1)), len(parts)))
            elif tag.startswith("</a") and href_stack:
                href, start = href_stack.pop()
                if href and href != "".join(parts[start:]) and not href.startswith("#"):
                    parts.append(f" ({href})")
    return re.sub(r" *\n *", "\n", "".join(parts))  # "and <br> break": no space left at either end of the line


_HREF = re.compile(r"""href\s*=\s*["']([^"']*)["']""", re.I)


def _strip_tags(markup: str) -> str:
    """Text of an HTML block: tags dropped, links kept as ``text (url)``, entities decoded; a table's cells
    kept apart as the Markdown tables' are (``a | b``), its rows, breaks and blocks on lines of their own."""
    markup = re.sub(r"""<a\s[^>]*href\s*=\s*["']([^"']*)["'][^>]*>(.*?)</a\s*>""", r"\2 (\1)", markup,
                    flags=re.I | re.S)
    markup = re.sub(r"</t[dh]\s*>\s*(?=<t[dh][\s>])", " | ", markup, flags=re.I)
    markup = re.sub(r"<br\s*/?>|</(?:tr|p|div|li|h[1-6])\s*>", "\n", markup, flags=re.I)
    text = html.unescape(re.sub(r"<[^>]+>", "", markup))
    return re.sub(r"\n{2,}", "\n", "\n".join(line.rstrip() for line in text.splitlines()))
