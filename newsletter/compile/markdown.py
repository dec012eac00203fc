"""Markdown body -> HTML fragments (intro + ``## `` sections) and plain text.

CommonMark + tables via markdown-it-py; the author's raw HTML passes through.
A ``## `` heading ending in ``{-}`` or ``{.unnumbered}`` (Pandoc's syntax) is a
section without a number, e.g. the wrap-up.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

from ..models import Section
from .slots import TOKEN

_UNNUMBERED = re.compile(r"\s*\{(?:-|\.unnumbered)\}\s*$")


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True, "typographer": False}).enable("table")


_md = _parser()


@dataclass(frozen=True)
class Body:
    intro: str
    sections: tuple[Section, ...]
    html: str
    tokens: tuple[Token, ...]


def render_body(markdown: str, first_line: int = 1) -> Body:
    """Split the body at ``## `` headings and render each part to HTML."""
    tokens = _md.parse(markdown)
    starts = [i for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"]
    bounds = [0, *starts, len(tokens)]
    intro = _md.renderer.render(tokens[: bounds[1]], _md.options, {}) if bounds[1] else ""
    sections = []
    number = 0
    for start, end in zip(starts, bounds[2:]):
        inline = tokens[start + 1]
        title_source = inline.content
        numbered = not _UNNUMBERED.search(title_source)
        if not numbered:
            _strip_marker(inline)
        else:
            number += 1
        tokens[start].meta["number"] = number if numbered else None  # for body_to_text
        title = _md.renderer.render([inline], _md.options, {})
        html = _md.renderer.render(tokens[start + 3: end], _md.options, {})
        line = first_line + (tokens[start].map[0] if tokens[start].map else 0)
        sections.append(Section(title=title, html=html, number=number if numbered else None, line=line))
    full = _md.renderer.render(tokens, _md.options, {})
    return Body(intro=intro, sections=tuple(sections), html=full, tokens=tuple(tokens))


def _strip_marker(inline: Token) -> None:
    inline.content = _UNNUMBERED.sub("", inline.content)
    if inline.children:
        last = inline.children[-1]
        if last.type == "text":
            last.content = _UNNUMBERED.sub("", last.content)


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
            if tok.meta.get("number"):
                title = f"{tok.meta['number']}. {title}"
            rule = "=" if tok.tag == "h1" else "-"
            out.append(f"{title}\n{underline(title, rule)}\n\n")
        elif kind == "inline" and tokens[i - 1].type not in ("heading_open", "th_open", "td_open"):
            text = _inline_text(tok)
            lead = "".join(prefix)
            out.append(lead + text.replace("\n", "\n" + " " * len(lead)) + ("\n" if list_stack else "\n\n"))
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
            prefix.append("  " * (len(list_stack) - 1) + marker)
        elif kind == "list_item_close":
            prefix.pop()
        elif kind == "blockquote_open":
            prefix.append("> ")
        elif kind == "blockquote_close":
            prefix.pop()
        elif kind in ("fence", "code_block"):
            out.append("".join("    " + line + "\n" for line in tok.content.rstrip("\n").split("\n")) + "\n")
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


def underline(title: str, rule: str) -> str:
    """A rule as long as the title reads (slot tokens count as a few characters), at most 72."""
    visible = TOKEN.sub("xxxxx", title)
    return rule * min(len(visible), 72)


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
    return "".join(parts)


_HREF = re.compile(r"""href\s*=\s*["']([^"']*)["']""", re.I)


def _strip_tags(markup: str) -> str:
    """Text of an HTML block: tags dropped, links kept as ``text (url)``, entities decoded."""
    markup = re.sub(r"""<a\s[^>]*href\s*=\s*["']([^"']*)["'][^>]*>(.*?)</a\s*>""", r"\2 (\1)", markup,
                    flags=re.I | re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", markup))
