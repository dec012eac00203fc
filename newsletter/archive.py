"""The static web archive: the pages that "View this issue online" links point to.

``newsletter archive`` writes, into one folder that any static web server can
serve as ``[newsletter] site_url``::

    <id>.html    each sent issue (every issue with --all), as an anonymous reader sees it
    images/…     every image file under issues/, at its path there (compile/images.py): the emails link
                 to these copies, so drafts' images are published too, before their issue is sent
    index.html   the issues, newest first: date, linked title, preheader
    feed.xml     an Atom feed with absolute links under site_url (skipped when site_url is empty)

The pages are public, so they hold no subscriber data: each issue's compiled
template is filled once for :data:`ANONYMOUS`, a reader with no fields at all,
so every ``subscriber.*`` slot shows its ``default(...)`` fallback or nothing,
and the unsubscribe link carries no token (see :func:`anonymous_unsubscribe_url`).
The subscriber list is never read.

Everything is compiled before anything is written, so an issue that fails to
compile stops the run with the archive as it was. Each file is then written
atomically (a temporary file in the same folder, renamed over the old one), so
a web server never serves half a page. Pages of issues that no longer qualify
(an issue file deleted, a ledger reset) are left alone, never deleted: the
folder may hold pages published by hand or by an earlier run, and removing a
public URL is the user's decision. :attr:`WriteReport.stale` names them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import io
import os
import string
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .compile.images import image_files
from .compile.issue import load_issue
from .compile.personalize import Personalizer
from .compile.render import compile_issue, long_date
from .config import Settings
from .errors import IssueError
from .ledger import open_ledger
from .ledger.base import parse_time
from .models import Issue, Subscriber
from .subscribers.csvfile import fsync_dir
from .unsubscribe import PREVIEW_SECRET, PROVIDER_MANAGED

_PERSONAL = ("{token}", "{email}")  # the per-subscriber placeholders of [unsubscribe] url
ATOM = "http://www.w3.org/2005/Atom"


class _AnonymousReader(Subscriber):
    """A reader with no merge values at all: every ``subscriber.*`` is absent, so ``default()`` applies.

    (An ordinary ``Subscriber(email="")`` would still define ``subscriber.email`` as "",
    which Jinja's ``default()`` keeps.)
    """

    def merge_values(self) -> dict[str, str]:
        return {}


ANONYMOUS = _AnonymousReader(email="")


@dataclass(frozen=True)
class ArchivePage:
    """One issue as the archive publishes it."""

    issue_id: str
    title: str  # plain text (escape it for HTML)
    preheader: str
    published: dt.datetime  # aware, UTC: the issue's date, else when it was first planned for sending
    html: str

    @property
    def filename(self) -> str:
        return f"{self.issue_id}.html"


@dataclass(frozen=True)
class Archive:
    """Everything ``newsletter archive`` writes, compiled and rendered in memory first."""

    pages: list[ArchivePage]  # newest first
    index_html: str
    feed_xml: bytes | None  # None when site_url is empty
    warnings: list[str] = field(default_factory=list)
    images: list[tuple[str, Path]] = field(default_factory=list)  # (path under issues/ and the archive, file)


@dataclass
class WriteReport:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)  # already held exactly these bytes
    stale: list[Path] = field(default_factory=list)  # pages of issues not in this archive, left alone


def anonymous_unsubscribe_url(template: str) -> str:
    """``[unsubscribe] url`` with the per-subscriber part removed, for a page anybody can read.

    A public page must not carry anybody's token: whoever clicked it would
    unsubscribe that subscriber, and the token encodes the address itself. We
    point the link at the unsubscribe page without the token instead of dropping
    it, because the layout's footer keeps its "Unsubscribe" text either way and an
    empty href would just reload the archive page; the site's unsubscribe page,
    reached with no token, should ask the visitor for their address. Query
    parameters holding ``{token}``/``{email}`` are dropped
    (``.../unsubscribe?t={token}`` -> ``.../unsubscribe``); a placeholder in the
    path cuts it there (``.../u/{token}`` -> ``.../u/``). With no URL configured,
    or with the provider's links (which exist only inside its emails), the
    :class:`Personalizer` falls back to the ``mailto`` address, which unsubscribes
    whoever writes to it, never somebody else (and with no mailto either, the
    link is empty).
    """
    if not template or template == PROVIDER_MANAGED:
        return ""
    base, _, fragment = template.partition("#")
    base, has_query, query = base.partition("?")
    cut = min((base.find(p) for p in _PERSONAL if p in base), default=-1)
    if cut >= 0:
        base = base[:cut]
    kept = [param for param in query.split("&") if param and not any(p in param for p in _PERSONAL)]
    url = base + ("?" + "&".join(kept) if has_query and kept else "")
    if fragment and not any(p in fragment for p in _PERSONAL):
        url += "#" + fragment
    return "" if any(p in url for p in _PERSONAL) else url


# -- choosing and compiling the issues (no writes) ----------------------------------------------
def sent_issues(settings: Settings) -> dict[str, str]:
    """Issue id -> when its plan was created, for every issue the ledger shows as sent to somebody."""
    with open_ledger(settings, readonly=True) as ledger:
        return {record.issue_id: record.created_at for record in ledger.issues()
                if ledger.counts(record.issue_id)["sent"] > 0}


def select_issues(settings: Settings, sent: dict[str, str], *, include_all: bool,
                  named: frozenset[str] = frozenset()) -> tuple[list[Issue], list[str]]:
    """The issue files to publish, and warnings about files and ledger entries left out.

    ``named``: ids given on the command line, published whether sent or not. With ``include_all``,
    ``init``'s example issue (front matter ``example: true``) is left out unless sent or named.
    """
    folder = settings.workspace_path("issues")
    chosen: list[Issue] = []
    warnings: list[str] = []
    seen: dict[str, str] = {}
    stems: dict[str, str] = {}  # file name without .md -> id, to name an issue either way
    for path in sorted(folder.glob("*.md")):
        try:
            issue = load_issue(path)
        except IssueError as err:
            if include_all or path.stem in sent:
                raise
            warnings.append(f"skipped {err.render()}: cannot tell whether it was sent (`newsletter lint` it)")
            continue
        if issue.id in seen:
            raise IssueError(f"issue id {issue.id!r} is also the id of {seen[issue.id]}", path=str(path),
                             line=issue.front_matter_lines.get("id"),
                             hint="give each issue its own id: both would be published as the same page")
        seen[issue.id] = str(path)
        stems[path.stem] = issue.id
        if issue.id in sent or issue.id in named or path.stem in named:
            chosen.append(issue)
        elif include_all and issue.example:
            warnings.append(f"left out {path.name}: it is `newsletter init`'s example (front matter example: true); "
                            f"name it to publish it anyway (`newsletter archive {issue.id}`), or delete that line")
        elif include_all:
            chosen.append(issue)
    for ref in sorted(named - seen.keys() - stems.keys()):
        raise IssueError(f"no issue {ref!r}", path=str(folder),
                         hint="name an issue by its id (front matter 'id', else the file name without .md)")
    for issue_id in sorted(sent.keys() - seen.keys()):
        warnings.append(f"issue {issue_id} was sent but has no file in {folder}: left out of the index "
                        f"(an existing {issue_id}.html is left alone)")
    return chosen, warnings


def _issue_id(ref: str) -> str:
    """An issue named on the command line by id, file name or path -> its id."""
    name = Path(ref).name
    return name[:-3] if name.endswith(".md") else name


def render_page(settings: Settings, issue: Issue, planned_at: str = "") -> ArchivePage:
    """Compile ``issue`` and fill its slots for :data:`ANONYMOUS` (no re-compile, no subscriber data)."""
    compiled = compile_issue(issue, settings, require_published=False)  # the archive publishes the images
    personalizer = Personalizer(compiled, sender=settings.newsletter.from_ or settings.newsletter.name,
                                unsubscribe_template=anonymous_unsubscribe_url(settings.unsubscribe.url),
                                unsubscribe_mailto=settings.unsubscribe.mailto,
                                secret=PREVIEW_SECRET)  # unused: the anonymous URL has no {token} to sign
    message, values = personalizer.message_with_values(ANONYMOUS)
    # An explicit title is issue-level text; otherwise the subject, with its merge fields filled anonymously.
    title = issue.title if issue.front_matter.get("title") else message.subject
    return ArchivePage(issue_id=issue.id, title=title, preheader=compiled.preheader.fill(values, html=False),
                       published=_published(issue, planned_at), html=message.html)


def _published(issue: Issue, planned_at: str) -> dt.datetime:
    if issue.date:
        return dt.datetime.combine(dt.date.fromisoformat(issue.date), dt.time(), dt.timezone.utc)
    when = parse_time(planned_at)
    if when is None:  # not sent (--all) and undated: the file's last change
        when = dt.datetime.fromtimestamp(Path(issue.path).stat().st_mtime, dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).replace(microsecond=0)


def build_archive(settings: Settings, *, include_all: bool = False, named: tuple[str, ...] = ()) -> Archive:
    """Compile every qualifying issue and render the index and feed, all in memory.

    Raises the first issue's :class:`~newsletter.errors.IssueError` or
    ``TemplateError`` before anything is written.
    """
    sent = sent_issues(settings)
    issues, warnings = select_issues(settings, sent, include_all=include_all,
                                     named=frozenset(_issue_id(ref) for ref in named))
    pages = [render_page(settings, issue, sent.get(issue.id, "")) for issue in issues]
    pages.sort(key=lambda page: (page.published, page.issue_id), reverse=True)
    site_url = settings.newsletter.site_url.rstrip("/")
    if not site_url:
        warnings.append("[newsletter] site_url is empty: no feed.xml written, and the pages have no "
                        "view-online link (set it to the address this folder is served from)")
    feed = render_feed(settings.newsletter.name, site_url, pages) if site_url else None
    issues_dir = settings.workspace_path("issues")
    images = [(path.relative_to(issues_dir).as_posix(), path) for path in image_files(issues_dir)]
    return Archive(pages, render_index(settings.newsletter.name, pages, feed=feed is not None), feed, warnings,
                   images)


# -- the index and the feed ----------------------------------------------------------------------
_INDEX = string.Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$name: archive</title>
$feed_link<style>
  :root { color-scheme: light dark; --ink: #1f2933; --muted: #52606d; --accent: #0b5cad; --rule: #e4e7eb;
          --paper: #ffffff; --page: #eef1f5; }
  @media (prefers-color-scheme: dark) {
    :root { --ink: #e4e7eb; --muted: #9aa5b1; --accent: #7cb4f0; --rule: #323f4b; --paper: #1f2933; --page: #121a21; }
  }
  body { margin: 0; background: var(--page); color: var(--ink);
         font: 16px/1.6 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
  main { max-width: 40rem; margin: 2rem auto; padding: 1.5rem 1.75rem; background: var(--paper);
         border-top: 4px solid var(--accent); }
  header p { margin: 0; font-size: .8rem; font-weight: 700; letter-spacing: .06em; text-transform: uppercase;
             color: var(--accent); }
  h1 { margin: .25rem 0 1rem; font-size: 1.75rem; line-height: 1.25; }
  ol { list-style: none; margin: 0; padding: 0; }
  li { padding: 1rem 0; border-top: 1px solid var(--rule); }
  time { display: block; font-size: .85rem; color: var(--muted); }
  li a { font-size: 1.15rem; font-weight: 700; color: var(--accent); text-decoration: none; }
  li a:hover, li a:focus { text-decoration: underline; }
  li p { margin: .25rem 0 0; color: var(--muted); }
  footer { margin-top: 1rem; font-size: .85rem; color: var(--muted); }
  footer a { color: inherit; }
  @media (max-width: 30rem) { main { margin: 0; padding: 1.25rem; } }
</style>
</head>
<body>
<main>
<header><p>$name</p><h1>Past issues</h1></header>
$entries
$footer</main>
</body>
</html>
""")


def render_index(name: str, pages: list[ArchivePage], *, feed: bool) -> str:
    """A small hand-written page: newest first, every text escaped (titles may hold ``<`` and ``&``)."""
    items = []
    for page in pages:
        preheader = f"\n  <p>{html.escape(page.preheader)}</p>" if page.preheader else ""
        items.append(f'<li>\n  <time datetime="{page.published.date().isoformat()}">{long_date(page.published)}'
                     f'</time>\n  <a href="{html.escape(quote(page.filename))}">{html.escape(page.title)}</a>'
                     f'{preheader}\n</li>')
    entries = "<ol>\n" + "\n".join(items) + "\n</ol>" if items else "<p>No issues yet.</p>"
    return _INDEX.substitute(
        name=html.escape(name or "Newsletter"),
        feed_link='<link rel="alternate" type="application/atom+xml" title="Atom feed" href="feed.xml">\n'
                  if feed else "",
        entries=entries,
        footer='<footer><a href="feed.xml">Atom feed</a></footer>\n' if feed else "",
    )


def render_feed(name: str, site_url: str, pages: list[ArchivePage]) -> bytes:
    """An Atom 1.0 feed (RFC 4287): one entry per page, absolute links under ``site_url``."""
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        element.text = text
        return element

    def stamp(when: dt.datetime) -> str:
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")

    feed = ET.Element(f"{{{ATOM}}}feed")
    sub(feed, "title", name or "Newsletter")
    sub(feed, "id", f"{site_url}/")
    sub(feed, "link", href=f"{site_url}/feed.xml", rel="self")
    sub(feed, "link", href=f"{site_url}/", rel="alternate", type="text/html")
    newest = pages[0].published if pages else dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    sub(feed, "updated", stamp(newest))  # from the content, so an unchanged archive writes the same bytes
    sub(sub(feed, "author"), "name", name or "Newsletter")
    for page in pages:
        entry = sub(feed, "entry")
        url = f"{site_url}/{quote(page.filename)}"
        sub(entry, "title", page.title)
        sub(entry, "link", href=url, rel="alternate", type="text/html")
        sub(entry, "id", url)
        sub(entry, "updated", stamp(page.published))
        if page.preheader:
            sub(entry, "summary", page.preheader)
    ET.indent(feed)
    out = io.BytesIO()
    ET.ElementTree(feed).write(out, encoding="utf-8", xml_declaration=True)
    return out.getvalue() + b"\n"


# -- writing ---------------------------------------------------------------------------------------
def write_archive(out: Path, archive: Archive) -> WriteReport:
    """Write images, then pages, then the index and feed, so nothing links to a file not yet there."""
    out.mkdir(parents=True, exist_ok=True)
    report = WriteReport()
    for rel, source in archive.images:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (report.written if atomic_write(target, source.read_bytes()) else report.unchanged).append(target)
    files = [(out / page.filename, page.html.encode("utf-8")) for page in archive.pages]
    files.append((out / "index.html", archive.index_html.encode("utf-8")))
    if archive.feed_xml is not None:
        files.append((out / "feed.xml", archive.feed_xml))
    for path, data in files:
        (report.written if atomic_write(path, data) else report.unchanged).append(path)
    names = {path.name for path, _ in files}
    report.stale = sorted(p for p in out.glob("*.html") if p.name not in names)
    return report


def atomic_write(path: Path, data: bytes) -> bool:
    """Replace ``path`` with ``data`` by a rename; False (and no write) if it already holds ``data``."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == data:
            return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a web server running as another user must read it
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True
