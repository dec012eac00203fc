"""Campaign tags on links: ``[render] utm`` (docs/authoring.md, "Campaign tags on links").

At compile time, once per issue, every link to your own site (``[newsletter] site_url``'s domain, or the
domains in ``[render] utm_domains``) gets ``utm_source``, ``utm_medium`` and ``utm_campaign``, so your
site's analytics can tell which issue a visit came from. A link that already carries a ``utm_``
parameter keeps its own; the query and the fragment stay as written; ``mailto:`` links, the
unsubscribe link (a per-reader slot at this point) and the view-online link are left alone.
The plain-text part gets the same links as the HTML part.
"""

from __future__ import annotations

import html as html_lib
import re
import string
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from anyascii import anyascii

from ..config import SCHEMA, Settings
from ..errors import ConfigError

FIELDS = ("source", "medium", "campaign")
PLACEHOLDERS = ("newsletter", "issue")  # what a utm_ template may hold: {newsletter} and {issue}
_HREF = re.compile(r'(\bhref=")([^"]*)(")', re.I)
# Where a URL of the text part ends: white space, or a closing bracket or punctuation before it.
_TEXT_END = r"(?=[\s)>\]]|[.,;:!?](?:\s|$)|$)"


@dataclass(frozen=True)
class Tagger:
    """The parameters to add and the hosts whose links get them."""

    params: tuple[tuple[str, str], ...]  # (("utm_source", "field-notes"), ...)
    domains: tuple[str, ...]
    skip: frozenset[str]  # URLs left as they are (the view-online link)

    def tag(self, url: str) -> str | None:
        """``url`` with the campaign parameters before its fragment, or None when it is not to be tagged."""
        if url in self.skip:
            return None
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:
            return None
        if parts.scheme.lower() not in ("http", "https") or not any(
                host == domain or host.endswith("." + domain) for domain in self.domains):
            return None
        if any(name.lower().startswith("utm_") for name, _ in parse_qsl(parts.query, keep_blank_values=True)):
            return None  # the author's own campaign tags win
        return _insert_query(url, urlencode(self.params), "&")

    def tag_html(self, html: str) -> tuple[str, dict[str, str], int]:
        """Every ``href`` tagged: the HTML, {link as written: tagged link} (unescaped URLs) and how many
        ``href`` attributes were tagged."""
        tagged: dict[str, str] = {}
        hrefs = 0

        def one(match: re.Match) -> str:
            raw = match.group(2)
            url = html_lib.unescape(raw)
            new = self.tag(url)
            if new is None:
                return match.group(0)
            nonlocal hrefs
            tagged[url], hrefs = new, hrefs + 1
            return match.group(1) + _insert_query(raw, html_lib.escape(urlencode(self.params)), "&amp;") + match.group(3)

        html = _HREF.sub(one, html)
        return html, tagged, hrefs


def tagger(settings: Settings, issue_id: str, view_online_url: str) -> Tagger | None:
    """The issue's tagger, or None when ``[render] utm`` is off. Raises ConfigError for a template with an
    unknown placeholder, or for nothing to tag (no site_url and no utm_domains)."""
    render = settings.render
    if not render.utm:
        return None
    values = {"newsletter": _slug(settings.newsletter.name), "issue": issue_id}
    params = tuple((f"utm_{name}", _fill(settings, name, values)) for name in FIELDS)
    domains = tuple(d.strip().lower().lstrip(".") for d in render.utm_domains.split(",") if d.strip())
    if not domains:
        site = urlsplit(settings.newsletter.site_url).hostname if settings.newsletter.site_url else None
        if not site:
            raise ConfigError("[render] utm = true tags links to your own site, and neither [newsletter] site_url "
                              "nor [render] utm_domains says which site that is", path=settings.origins["render.utm"],
                              hint='set [newsletter] site_url = "https://example.com", or list the domains: '
                                   'utm_domains = "example.com, shop.example.com"')
        domains = (site.lower(),)
    return Tagger(params, domains, frozenset({view_online_url} - {""}))


def tag_text(text: str, tagged: dict[str, str]) -> str:
    """The plain-text part with each link the HTML part tagged tagged the same way (longest first, so a
    link is never matched inside a longer one)."""
    for url in sorted(tagged, key=len, reverse=True):
        text = re.sub(r"(?<![^\s(<\[])" + re.escape(url) + _TEXT_END, lambda _m, new=tagged[url]: new, text)
    return text


def _fill(settings: Settings, name: str, values: dict[str, str]) -> str:
    template = settings.values["render"][f"utm_{name}"]
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
        unknown = {"{" + field + "}" for field in used - set(PLACEHOLDERS)}
        if not unknown:
            value = template.format(**values)
    except ValueError:
        unknown = {"a lone { or }"}
    if unknown:
        raise ConfigError(f"[render] utm_{name} = {template!r} holds {', '.join(sorted(unknown))}, which is not "
                          "something it can be filled with", path=settings.origins[f"render.utm_{name}"],
                          hint="a utm_ template may hold {newsletter} (the newsletter's name as a slug) and "
                               "{issue} (the issue id)")
    if not value.strip():
        default = SCHEMA["render"][f"utm_{name}"][0]
        raise ConfigError(f"[render] utm_{name} is empty", path=settings.origins[f"render.utm_{name}"],
                          hint=f'write e.g. utm_{name} = "{default}"')
    return value


def _slug(name: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", anyascii(name).lower())) or "newsletter"


def _insert_query(url: str, query: str, joiner: str) -> str:
    """``query`` appended to the URL's query (or as its query), before its fragment."""
    head, hash_, fragment = url.partition("#")
    if "?" in head:
        head = head + ("" if head.endswith(("?", "&", "&amp;")) else joiner) + query
    else:
        head = head + "?" + query
    return head + hash_ + fragment
