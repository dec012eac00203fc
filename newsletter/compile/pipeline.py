"""The steps every command shares: find the issue, compile it once, check its merge fields."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError, TemplateError
from ..models import Issue, Message, Subscriber
from ..subscribers.lookup import find_subscriber
from ..subscribers.reader import iter_valid_subscribers, load_subscribers, merge_columns
from ..unsubscribe import PREVIEW_SECRET, PROVIDER_MANAGED
from .issue import load_issue, resolve_issue_path
from .lint import Finding, lint, merge_field_findings, settings_findings, shared_id_findings
from .mime import to_mime
from .personalize import Personalizer
from .render import CompiledIssue, compile_issue

FROM_PLACEHOLDER = "from-is-not-set@invalid"  # builds and previews without [newsletter] from


@dataclass(frozen=True)
class ProviderFacts:
    """What compiling needs to know of the configured provider, handed in by the caller: compile/ knows
    nothing of providers (newsletter.providers.provider_facts gives them)."""

    unsubscribe_link: str = ""  # the placeholder the provider fills with its own link (url = "provider")
    unsubscribe_refusal: str = ""  # why url = "provider" cannot work with this provider ("" when it can)


@dataclass(frozen=True)
class Build:
    compiled: CompiledIssue
    list_path: Path
    columns: set[str]

    @functools.cached_property
    def subscribers(self) -> list[Subscriber]:
        """The whole list in memory: only for small jobs (preview picker, reconcile); sending streams."""
        return load_subscribers(self.list_path) if self.list_path.exists() else []

    @property
    def issue(self) -> Issue:
        return self.compiled.issue


def issue_path(settings: Settings, ref: str) -> Path:
    return resolve_issue_path(ref, settings.workspace_path("issues"))


def build_issue(settings: Settings, ref: str, *, inliner: str | None = None, layout: Path | None = None) -> Build:
    """Compile the issue and refuse merge fields that no subscriber column provides."""
    return build_loaded(settings, load_issue(issue_path(settings, ref)), inliner=inliner, layout=layout)


def build_loaded(settings: Settings, issue: Issue, *, inliner: str | None = None, layout: Path | None = None) -> Build:
    """:func:`build_issue` for an issue already read (``layout``: a layout file instead of the issue's)."""
    compiled = compile_issue(issue, settings, inliner=inliner, layout=layout)
    list_path = settings.workspace_path(settings.subscribers.file)
    columns = merge_columns(list_path)
    for finding in merge_field_findings(compiled, columns, (), settings.subscribers.file):
        if finding.level == "error":
            raise TemplateError(finding.message, path=finding.path, line=finding.line,
                                hint="add the column to the list, fix the name, or give a fallback with default()")
    return Build(compiled, list_path, columns)


def sample_subscriber(build: Build, email: str | None = None) -> Subscriber:
    """The subscriber a build or proof is rendered for: ``email`` (as the list compares addresses), else the
    first subscribed row. An address not in the list gets a bare subscriber (``line`` 0): fallbacks only."""
    if email:
        return find_subscriber(build.list_path, email) or Subscriber(email=email)
    for subscriber in iter_valid_subscribers(build.list_path):  # streamed: stops at the first match
        if subscriber.status == "subscribed":
            return subscriber
    return Subscriber(email="reader@example.com", name="Sample Reader")


def personalizer(settings: Settings, compiled: CompiledIssue, *, secret: bytes | None = None,
                 facts: ProviderFacts = ProviderFacts()) -> Personalizer:
    """Personalizer with the configured sender and unsubscribe settings.

    Without ``secret`` (builds, previews, proofs) links are signed with a preview-only
    key and an empty From shows :data:`FROM_PLACEHOLDER`; ``send`` passes the real secret from the
    environment, and there an empty From is refused. With ``[unsubscribe] url =
    "provider"`` the link is the provider's placeholder (``facts``), and the provider adds the headers.
    """
    url, managed = settings.unsubscribe.url, settings.unsubscribe.url == PROVIDER_MANAGED
    if managed:
        url = facts.unsubscribe_link
    return Personalizer(compiled, sender=sender(settings, for_sending=secret is not None),
                        reply_to=settings.newsletter.reply_to,
                        unsubscribe_template=url, unsubscribe_mailto=settings.unsubscribe.mailto,
                        secret=secret or PREVIEW_SECRET, list_headers=not managed)


def sender(settings: Settings, *, for_sending: bool) -> str:
    """The From header. An empty ``[newsletter] from`` is never replaced by a made-up address: builds and
    previews show a placeholder that says what is missing (``.invalid`` can never be delivered), a send refuses."""
    if settings.newsletter.from_:
        return settings.newsletter.from_
    if for_sending:
        raise ConfigError("[newsletter] from is empty: there is no From address to send from",
                          path=settings.origins.get("newsletter.from"),
                          hint='set from = "Name <you@example.com>" in newsletter.toml')
    return f"{settings.newsletter.name} <{FROM_PLACEHOLDER}>"


def lint_build(settings: Settings, build: Build, message: Message, facts: ProviderFacts = ProviderFacts()
               ) -> list[Finding]:
    findings = lint(build.compiled, html_size=len(message.html.encode()), columns=build.columns,
                    subscribers=iter_valid_subscribers(build.list_path), postal_address=settings.newsletter.postal_address,
                    list_path=settings.subscribers.file)
    return (settings_findings(settings, facts.unsubscribe_refusal)
            + shared_id_findings(build.issue, settings.workspace_path("issues")) + findings)


def write_build(out: Path, message: Message) -> dict[str, Path]:
    """``<id>.html``, ``<id>.txt`` and ``<id>.eml`` for one personalised message."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"{message.issue_id}.{kind}" for kind in ("html", "txt", "eml")}
    paths["html"].write_text(message.html, encoding="utf-8")
    paths["txt"].write_text(message.text, encoding="utf-8")
    paths["eml"].write_bytes(to_mime(message).as_bytes())
    return paths
