"""Compile an issue once: Markdown -> Jinja2 layout -> MJML -> inlined HTML, plus text.

Recipient-level merge fields become slots first (see :mod:`newsletter.compile.slots`),
so the result is a template that :mod:`newsletter.compile.personalize` fills per
subscriber without compiling anything again.
"""

from __future__ import annotations

import datetime as dt
import difflib
import email.utils
import functools
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from markupsafe import Markup, escape

from ..config import Settings
from ..errors import TemplateError
from ..models import Image, Issue, Section
from .images import ImageResolver, LocalImage
from .inline import inline_css
from .markdown import Body, body_to_text, render_body, underline
from .slots import Slot, SlotTable, SlotTemplate, replace_recipient_expressions
from .utm import tag_text, tagger


@dataclass(frozen=True)
class CompiledIssue:
    issue: Issue
    subject: SlotTemplate
    preheader: SlotTemplate
    html: SlotTemplate
    text: SlotTemplate
    slots: tuple[Slot, ...]
    layout: Path
    content_hash: str
    view_online_url: str
    images: tuple[LocalImage, ...] = ()  # the issue's own image files it uses (compile/images.py)
    utm_tagged: int | None = None  # links ([render] utm) tagged in the HTML part; None: utm is off

    def send_template(self, *, subject_prefix: str = "") -> dict[str, SlotTemplate]:
        """What an adapter sends once with per-recipient values (``Batch.template``): subject, html, text;
        the subject's first literal part prefixed with ``subject_prefix`` (proofs' "[TEST] ")."""
        subject = self.subject
        if subject_prefix:
            subject = SlotTemplate((subject_prefix + subject.parts[0],) + subject.parts[1:], subject.slot_ids)
        return {"subject": subject, "html": self.html, "text": self.text}


def templates_dir(settings: Settings) -> Path:
    return settings.workspace_path("templates")


def layout_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.mjml"))


@dataclass(frozen=True)
class LayoutSource:
    """The layout rendered by Jinja for one issue: MJML with slot tokens, before compiling."""

    issue: Issue
    mjml: str
    subject: str
    preheader: str
    title: str
    cta: dict[str, str] | None
    body: Body
    table: SlotTable
    layout: Path
    view_online_url: str
    images: tuple[LocalImage, ...] = ()


def compile_issue(issue: Issue, settings: Settings, *, inliner: str | None = None,
                  layout: Path | None = None, require_published: bool = True) -> CompiledIssue:
    """``layout``: a layout file to use instead of the issue's (``lint --template FILE``).

    ``require_published=False`` is for ``archive``, which publishes the issue's images itself after
    compiling; everything else refuses an image file whose published copy is missing (compile/images.py).
    """
    source = render_mjml(issue, settings, layout, require_published=require_published)
    html = inline_css(label_article(mjml_to_html(source.mjml, source.layout), source.title),
                      inliner or settings.render.inliner)
    text = text_part(source, settings)
    tagged = None
    campaign = tagger(settings, issue.id, source.view_online_url)
    if campaign is not None:
        html, links, tagged = campaign.tag_html(html)
        text = tag_text(text, links)
    subject, preheader = source.subject, source.preheader
    digest = hashlib.sha256("\x00".join((subject, preheader, html, text)).encode()).hexdigest()
    return CompiledIssue(issue=issue, subject=SlotTemplate.split(subject), preheader=SlotTemplate.split(preheader),
                         html=SlotTemplate.split(html), text=SlotTemplate.split(text),
                         slots=tuple(source.table.slots), layout=source.layout, content_hash=digest,
                         view_online_url=source.view_online_url, images=source.images, utm_tagged=tagged)


def find_layout(issue: Issue, settings: Settings) -> Path:
    folder = templates_dir(settings)
    name = issue.template or settings.newsletter.template
    layout = folder / f"{name}.mjml"
    if not layout.is_file():
        available = ", ".join(layout_names(folder)) or "none"
        raise TemplateError(f"unknown template {name!r}: there is no {layout}",
                            path=issue.path, line=issue.front_matter_lines.get("template"),
                            hint=f"available layouts: {available}")
    return layout


def render_mjml(issue: Issue, settings: Settings, layout: Path | None = None, *,
                require_published: bool = True) -> LayoutSource:
    """Markdown and Jinja: everything issue-level is filled in, recipient fields become slots."""
    layout = layout.resolve() if layout else find_layout(issue, settings)
    view_online = f"{settings.newsletter.site_url.rstrip('/')}/{issue.id}.html" if settings.newsletter.site_url else ""
    context: dict[str, Any] = {
        "newsletter": {key: settings.values["newsletter"][key] for key in settings.values["newsletter"]},
        "view_online_url": view_online,
        "text_direction": text_direction(settings.newsletter.language),
    }
    table = SlotTable(context)

    def front_matter_text(key: str, text: str) -> str:
        """A front matter value with merge fields: issue-level filled now, recipient fields as slots."""
        line = issue.front_matter_lines.get(key, issue.front_matter_lines.get("subject", 1))
        return _render_line(table.extract(text, issue.path, line), issue, key, context)

    subject = front_matter_text("subject", issue.subject)
    preheader = front_matter_text("preheader", issue.preheader)
    title = front_matter_text("title", issue.title)  # defaults to the subject, merge fields and all
    cta = {part: front_matter_text("cta", value) for part, value in issue.cta.items()} if issue.cta else None
    context["issue"] = _issue_values(issue, subject, preheader, title, cta)
    images = ImageResolver(issue.path, settings.workspace_path("issues"), settings.newsletter.site_url,
                           settings.workspace_path(settings.newsletter.archive_dir),
                           require_published=require_published)
    body = _render_body(table, issue, context, issue.numbering or settings.render.numbering, images)
    context.update(
        intro=Markup(body.intro),
        content=Markup(body.html),
        sections=[_section_values(s) for s in body.sections],
        hero=_image_values(body.hero),
        intro_rest=Markup(body.intro_rest),
        signature=_signature(issue, settings),
    )
    mjml_source = _render_layout(layout, table, context)
    return LayoutSource(issue, mjml_source, subject, preheader, title, cta, body, table, layout, view_online,
                        tuple(images.used))


def _section_values(section: Section) -> dict[str, Any]:
    return {"title": Markup(section.title), "html": Markup(section.html), "number": section.number,
            "image": _image_values(section.image), "rest": Markup(section.rest)}


def _image_values(image: Image | None) -> dict[str, str] | None:
    return {"src": image.src, "alt": image.alt, "href": image.href, "width": image.width,
            "height": image.height} if image else None


def _signature(issue: Issue, settings: Settings) -> list[str]:
    """The sign-off lines: front matter ``signature``, else the From display name, else the newsletter's name."""
    text = issue.signature or email.utils.parseaddr(settings.newsletter.from_)[0] or settings.newsletter.name
    return [line.strip() for line in text.splitlines() if line.strip()]


_RTL_LANGUAGES = frozenset("ar arc ckb dv fa he iw ks ku ps sd ug ur yi".split())


def text_direction(language: str) -> str:
    """``rtl`` for a right-to-left language tag (``ar``, ``he-IL``, ``ur``; or a ``-Arab``/``-Hebr`` script)."""
    subtags = language.lower().replace("_", "-").split("-")
    rtl = subtags[0] in _RTL_LANGUAGES or any(tag in ("arab", "hebr", "thaa", "syrc", "nkoo") for tag in subtags[1:])
    return "rtl" if rtl else "ltr"


def long_date(day: dt.date) -> str:
    """A date as the layouts' header writes it: "November 30, 2026"."""
    return f"{day.strftime('%B')} {day.day}, {day.year}"


def _issue_values(issue: Issue, subject: str, preheader: str, title: str, cta: dict | None) -> dict[str, Any]:
    date_long = long_date(dt.date.fromisoformat(issue.date)) if issue.date else ""
    return {"id": issue.id, "subject": subject, "preheader": preheader, "title": title,
            "date": issue.date, "date_long": date_long, "cta": cta, "segment": issue.segment}


class _SlotLoader(jinja2.FileSystemLoader):
    """Reads layouts with each recipient-level ``{{ expr }}`` rewritten as ``{{ _slot(i) }}``.

    The compiled Jinja template is then reusable across compiles (Jinja caches it
    until the file changes); ``_slot(i)`` asks the current compile's SlotTable
    for the token, so slot numbering stays per issue.
    """

    def __init__(self, folder: Path):
        super().__init__(str(folder))
        self.expressions: list[tuple[str, str, int]] = []  # (source, path, line), append-only

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)

        def as_call(expression: str, path: str, line: int) -> str:
            self.expressions.append((expression, path, line))
            return f"{{{{ _slot({len(self.expressions) - 1}) }}}}"

        return replace_recipient_expressions(source, filename, 1, as_call), filename, uptodate


@functools.lru_cache(maxsize=16)
def _layout_env(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(loader=_SlotLoader(folder), undefined=jinja2.StrictUndefined,
                              autoescape=True, keep_trailing_newline=True, auto_reload=True)


def _render_layout(layout: Path, table: SlotTable, context: dict[str, Any]) -> str:
    env = _layout_env(layout.parent)
    expressions = env.loader.expressions

    def slot(index: int) -> Markup:
        return Markup(table.register(*expressions[index]))

    try:
        return env.get_template(layout.name).render(context, _slot=slot)
    except jinja2.TemplateError as err:
        raise _jinja_error(err, str(layout)) from None


# Subject, preheader and the Markdown body are text, not HTML: no autoescape.
_HAS_JINJA = re.compile(r"\{[{%#]")
_plain_env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _render_line(source: str, issue: Issue, key: str, context: dict) -> str:
    if not _HAS_JINJA.search(source):
        return source
    try:
        return _plain_env.from_string(source).render(context)
    except jinja2.TemplateError as err:
        raise _jinja_error(err, issue.path, issue.front_matter_lines.get(key, 1)) from None


def _render_body(table: SlotTable, issue: Issue, context: dict, numbering: str, images: ImageResolver) -> Body:
    source = table.extract(issue.body, issue.path, issue.body_line)
    try:
        if _HAS_JINJA.search(source):
            source = _plain_env.from_string(source).render(context)
    except jinja2.TemplateError as err:
        raise _jinja_error(err, issue.path, issue.body_line) from None
    return render_body(source, issue.body_line, numbering=numbering, images=images)


def _jinja_error(err: jinja2.TemplateError, path: str, first_line: int = 1) -> TemplateError:
    """One clear message with the file's line, from Jinja's syntax or undefined errors."""
    line = getattr(err, "lineno", None)
    if line is None:  # UndefinedError: find the template frame in the traceback
        tb = sys.exc_info()[2]
        while tb is not None:
            if tb.tb_frame.f_code.co_filename in (path, "<template>"):
                line = tb.tb_lineno
            tb = tb.tb_next
    message = err.message or str(err)
    opened = _unclosed_before(err) if isinstance(err, jinja2.TemplateSyntaxError) else None
    if opened is not None and line is not None and opened[0] < line:  # Jinja names where it gave up, not the slip
        message = (f"{opened[1]} on this line is never closed with {opened[2]} (Jinja gave up {line - opened[0]} "
                   f"line(s) later: {message})")
        line = opened[0]
    hint = None
    if "subscriber" in message or "unsubscribe_url" in message:
        hint = "subscriber fields work only inside {{ }}, e.g. {{ subscriber.name | default(\"there\") }}"
    elif isinstance(err, jinja2.UndefinedError):
        hint = _undefined_hint(message)
    elif isinstance(err, jinja2.TemplateSyntaxError):
        hint = _syntax_hint(err)
    return TemplateError(f"template error: {message}", path=path,
                         line=(first_line + line - 1) if line else None, hint=hint)


def _unclosed_before(err: jinja2.TemplateSyntaxError) -> tuple[int, str, str] | None:
    """The last ``{{`` or ``{%`` up to the end of the error's line with no closing delimiter after it: (its
    line in the template, the opening, the closing), or None."""
    if not err.source or not err.lineno:
        return None
    before = "".join(err.source.splitlines(keepends=True)[:err.lineno])
    at, start, end = max((before.rfind(start), start, end) for start, end in (("{{", "}}"), ("{%", "%}")))
    if at < 0 or before.find(end, at) >= 0:
        return None
    return before.count("\n", 0, at) + 1, start, end


ISSUE_NAMES = ("newsletter, issue, intro, intro_rest, hero, sections, content, signature, view_online_url, "
               "text_direction")


def _undefined_hint(message: str) -> str:
    """A bare ``{{ first_name }}`` (Buttondown, ConvertKit, HubSpot's ``contact.``...) is a subscriber field here."""
    name = re.match(r"'(\w+)' is undefined", message)
    if name and re.match(r"(?i)unsub|opt_?out|leave", name.group(1)):  # {{ unsubscribe_link }}, {{ unsub }}
        return f"the reader's unsubscribe link is {{{{ unsubscribe_url }}}}; issue-level names are {ISSUE_NAMES}"
    if name and name.group(1) not in ("subscriber", "unsubscribe_url"):
        typo = difflib.get_close_matches(name.group(1), ("subscriber",), n=1, cutoff=0.75)
        if typo:  # {{ subsciber.name }}
            return f"did you mean {typo[0]!r}? issue-level names are {ISSUE_NAMES}"
        field = name.group(1).lower()
        example = "first_name" if field in ("contact", "recipient", "member", "person", "user") else field
        return (f"write a subscriber's field as {{{{ subscriber.{example} }}}}, a column of the list; "
                f"issue-level names are {ISSUE_NAMES}")
    return f"issue-level names are {ISSUE_NAMES}"


def _syntax_hint(err: jinja2.TemplateSyntaxError) -> str:
    line = (err.source or "").splitlines()[err.lineno - 1] if err.source and err.lineno else ""
    if re.search(r"\{\{\s*\.\w", line):  # listmonk's Go templates: {{ .Subscriber.Name }}
        return "listmonk's {{ .Subscriber.Name }} is written {{ subscriber.name }} here"
    return "check the {{ }} / {% %} pairs on that line"


# mjml-python accepts unknown tags silently; a typo like <mj-sektion> would vanish from the email.
MJML_TAGS = frozenset("""mjml mj-head mj-body mj-attributes mj-all mj-class mj-breakpoint mj-font mj-html-attributes
    mj-html-attribute mj-selector mj-preview mj-style mj-title mj-accordion mj-accordion-element mj-accordion-title
    mj-accordion-text mj-button mj-carousel mj-carousel-image mj-column mj-divider mj-group mj-hero mj-image
    mj-navbar mj-navbar-link mj-raw mj-section mj-social mj-social-element mj-spacer mj-table mj-text mj-wrapper
    mj-include""".split())


def _check_tags(source: str, layout: Path) -> None:
    for match in re.finditer(r"</?(mj-[\w-]+|mjml[\w-]+)", source):  # closing tags too: </mj-bdy>
        tag = match.group(1)
        if tag not in MJML_TAGS:
            template = layout.read_text(encoding="utf-8")
            index = min((i for i in (template.find(f"<{tag}"), template.find(f"</{tag}")) if i >= 0), default=-1)
            close = difflib.get_close_matches(tag, MJML_TAGS, n=1)
            raise TemplateError(f"unknown MJML tag <{tag}>", path=str(layout),
                                line=template.count("\n", 0, index) + 1 if index >= 0 else None,
                                hint=f"did you mean <{close[0]}>?" if close else "see https://documentation.mjml.io")


def _layout_uses(layout: Path, name: str) -> bool:
    """Whether the layout reads the context value ``name`` (Jinja's own analysis, not a text search)."""
    return name in _names_read(layout, layout.stat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _names_read(layout: Path, _mtime_ns: int) -> frozenset[str]:
    """Read apart from the slot loader, which records every recipient expression it is given."""
    return frozenset(jinja2.meta.find_undeclared_variables(_plain_env.parse(layout.read_text(encoding="utf-8"))))


def mjml_to_html(source: str, layout: Path) -> str:
    """Compile with mjml-python; includes are read from the layout's folder only."""
    from mjml import mjml2html

    _check_tags(source, layout)
    folder = layout.parent

    refused: list[TemplateError] = []

    def include(path: str) -> str:
        target = (folder / path).resolve()
        if folder.resolve() not in target.parents or not target.is_file():
            refused.append(TemplateError(f"mj-include {path!r} is not a file inside {folder}", path=str(layout)))
            raise ValueError(path)
        text = target.read_text(encoding="utf-8")
        try:  # an included file gets the layout's checks, and is not a Jinja template
            _check_tags(text, target)
            if "{{" in text or "{%" in text:
                raise TemplateError("mj-include inserts the file as it is: its {{ }} or {% %} would reach "
                                    "readers literally", path=str(target),
                                    hint=f'include it with Jinja instead: {{% include "{path}" %}}')
        except TemplateError as err:
            refused.append(err)
            raise ValueError(path) from None
        return text

    try:
        return mjml2html(source, disable_comments=True, include_loader=include, fonts={})  # no remote fonts
    except ValueError as err:
        if refused:  # mjml-python wraps the loader's exception; report ours
            raise refused[0] from None
        raise TemplateError(f"MJML refused the layout: {err}{_mjml_context(source, str(err))}", path=str(layout),
                            hint="check tag names and nesting (mjml > mj-body > mj-section > mj-column); "
                                 "`npx mjml --validate` gives details") from None


_ARTICLE = re.compile(r'<div aria-roledescription="email"[^>]*?role="article"')


def label_article(html: str, title: str) -> str:
    """Name MJML's ``role="article"`` wrapper after the issue, so a screen reader announces which
    email it is in (mjml-python has no ``mj-html-attributes`` to do it from the layout)."""
    label = str(escape(title))
    return _ARTICLE.sub(lambda m: f'{m.group(0)} aria-label="{label}"', html, count=1)


def _mjml_context(source: str, message: str) -> str:
    m = re.search(r"position (\d+)", message)
    if not m:
        return ""
    offset = int(m.group(1))
    line = source.count("\n", 0, offset) + 1
    excerpt = source.splitlines()[line - 1].strip()[:80] if source.splitlines() else ""
    return f" near rendered line {line}: {excerpt!r}"


def text_part(source: LayoutSource, settings: Settings) -> str:
    """The plain-text part: the Markdown read as text, framed by title and footer."""
    issue, body, table, view_online = source.issue, source.body, source.table, source.view_online_url
    name = settings.newsletter.name
    head = [source.title, underline(source.title, "=")]
    if issue.date:
        head.append(f"{name} · {issue.date}")
    if view_online:
        head.append(f"View online: {view_online}")
    parts = ["\n".join(head), body_to_text(body).rstrip()]
    if source.cta:
        parts.append(f"{source.cta['text']}: {source.cta['url']}")
    if _layout_uses(source.layout, "signature"):  # the letter signs off in both parts
        lines = _signature(issue, settings)
        parts.append("\n".join([f"\u2014 {lines[0]}", *lines[1:]] if lines else []))
    footer = ["--", f"You are receiving {name} because you subscribed."]
    unsubscribe = table.extract("{{ unsubscribe_url }}", "text footer")
    footer.append(f"Unsubscribe: {unsubscribe}")
    if settings.newsletter.postal_address:
        footer.append(settings.newsletter.postal_address)
    parts.append("\n".join(footer))
    return "\n\n".join(parts) + "\n"
