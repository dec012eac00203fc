"""Small frozen value objects passed between the modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping


@dataclass(frozen=True)
class Subscriber:
    """One row of the list. ``fields`` holds every column (normalised names) for merge fields."""

    email: str
    name: str = ""
    status: str = "subscribed"
    tags: tuple[str, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)
    line: int = 0  # line in the CSV file, for messages

    def merge_values(self) -> dict[str, str]:
        """Values visible as ``subscriber.<column>``; blank cells are absent so ``default()`` applies."""
        values = {k: v for k, v in self.fields.items() if v != ""}
        values["email"] = self.email
        if self.name:
            values["name"] = self.name
        return values


@dataclass(frozen=True)
class Image:
    """A Markdown image that leads a section (a layout's thumbnail) or the intro (its hero)."""

    src: str
    alt: str
    href: str = ""  # the link around it, if any
    width: int = 0  # for a file of the issue's (compile/images.py); 0 = not known
    height: int = 0


@dataclass(frozen=True)
class Section:
    """A ``## `` section of an issue: a numbered news item unless marked ``{-}``."""

    title: str
    html: str
    number: int | None
    line: int
    image: Image | None = None  # the image the section starts with, if any
    rest: str = ""  # ``html`` without that image


@dataclass(frozen=True)
class Issue:
    """An issue file parsed: front matter plus Markdown body (not yet rendered)."""

    id: str
    path: str
    subject: str
    body: str
    body_line: int  # line of the file where the Markdown body starts
    preheader: str = ""
    title: str = ""
    date: str = ""
    send_at: datetime | None = None
    template: str = ""
    numbering: str = ""  # auto | on | off from the front matter; "" = the config's
    signature: str = ""  # the letter layout's sign-off; "" = the From name
    example: bool = False  # `init`'s example issue: `archive --all` leaves it out unless named
    segment: str = ""
    cta: Mapping[str, str] | None = None
    front_matter: Mapping[str, object] = field(default_factory=dict)
    front_matter_lines: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """One personalised email, ready for a provider."""

    issue_id: str
    to: str
    subject: str
    html: str
    text: str
    sender: str
    reply_to: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)  # List-Unsubscribe and friends
    to_name: str = ""
    # When ``html`` and ``text`` are left empty for the adapter to build from the batch's template:
    # what this reader adds to the request for them, JSON-encoded (their filled bodies or, for a
    # provider that sends the template once, their merge values), for cutting batches by bytes.
    # -1: weigh ``html`` and ``text``.
    body_bytes: int = -1


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient of a batch.

    ``state`` is ``sent`` (with ``provider_id``), ``failed`` (permanent, with ``reason``),
    ``retry`` (transient: back to pending) or ``unknown`` (accepted or not, we cannot tell).
    """

    email: str
    state: str
    provider_id: str = ""
    reason: str = ""
    suppress: bool = False  # the provider says never to send to this address again
