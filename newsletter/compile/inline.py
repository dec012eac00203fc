"""CSS inlining: one seam, two backends (docs/architecture.md).

``css-inline`` is the default: maintained, fast (~1 ms), and with the settings
below it keeps every ``<style>`` block, media query, ``!important`` and slot
token. Its defaults are unsafe for email (they delete ``<style>`` and fetch
remote sheets), hence the explicit options.

``premailer`` is the user's named choice and stays selectable
(``[render] inliner = "premailer"``) with the workarounds its 3.10 release needs:
``strip_important=False`` (mobile overrides stop working without it), image
``width``/``height`` attributes left alone, the doctype put back (lxml drops it,
which means quirks mode), ``@import`` rules hidden from it (it tries to fetch
them even with ``allow_network=False``) and cssutils' warnings silenced.
Our slot tokens are plain letters and digits, so premailer's URL-encoding of
``{{ }}`` in ``href`` (lxml >= 5) cannot touch them.
"""

from __future__ import annotations

import logging
import re

from ..errors import TemplateError

_DOCTYPE = re.compile(r"^\s*<!doctype[^>]*>", re.I)
_IMPORT = re.compile(r"@import\s+url\([^)]*\)\s*;?|@import\s+['\"][^'\"]*['\"]\s*;?", re.I)


def inline_css(html: str, backend: str = "css-inline") -> str:
    if backend == "css-inline":
        return _css_inline(html)
    if backend == "premailer":
        return _premailer(html)
    raise TemplateError(f"unknown CSS inliner {backend!r}", hint="use css-inline or premailer")


_inliner = None


def _css_inline(html: str) -> str:
    global _inliner
    import css_inline

    if _inliner is None:
        _inliner = css_inline.CSSInliner(
            keep_style_tags=True,           # media queries must reach the client
            remove_inlined_selectors=True,  # ...but not twice: only rules that could not be inlined
            keep_link_tags=True,
            load_remote_stylesheets=False,  # never touch the network while compiling
        )
    try:
        return _inliner.inline(html)
    except ValueError as err:  # css_inline.InlineError subclasses ValueError
        raise TemplateError(f"css-inline could not inline the compiled HTML: {err}") from err


def _premailer(html: str) -> str:
    import premailer

    doctype = _DOCTYPE.match(html)
    imports: list[str] = []

    def hide(match: re.Match) -> str:
        imports.append(match.group(0))
        return f"/*nlimport{len(imports) - 1}*/"

    hidden = _IMPORT.sub(hide, html)
    try:
        out = premailer.Premailer(
            hidden,
            strip_important=False,
            keep_style_tags=True,
            allow_network=False,
            allow_loading_external_files=False,
            disable_basic_attributes=["width", "height", "align", "bgcolor", "valign"],
            disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
    except Exception as err:  # premailer raises bare lxml/cssutils errors
        raise TemplateError(f"premailer could not inline the compiled HTML: {err}") from err
    for i, rule in enumerate(imports):
        out = out.replace(f"/*nlimport{i}*/", rule)
    if doctype and not _DOCTYPE.match(out):
        out = doctype.group(0).strip() + "\n" + out
    return out
