"""Small frozen value objects passed between the modules."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, TypeVar

_T = TypeVar("_T")


def quick_init(cls: type[_T]) -> type[_T]:
    """A frozen dataclass built per recipient (a subscriber, their message, its outcome) gets an
    ``__init__`` that fills the instance's ``__dict__`` in one call: the generated one sets each field
    through ``object.__setattr__``, two to three times slower. Same signature, defaults and result; no
    ``__post_init__`` (these classes have none)."""
    assert not hasattr(cls, "__post_init__"), cls
    params, names, scope = [], [], {"_MISSING": dataclasses.MISSING}
    for f in dataclasses.fields(cls):
        names.append(f.name)
        if f.default is not dataclasses.MISSING:
            scope[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
        else:
            params.append(f.name)
    made = [f"{n}=_factory_{n}() if {n} is _MISSING else {n}" if f"_factory_{n}" in scope else f"{n}={n}"
            for n in names]
    source = f"def __init__(self, {', '.join(params)}):\n    self.__dict__.update({', '.join(made)})\n"
    exec(source, scope)  # noqa: S102 - built from the class's own field names, as dataclasses does
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls


@quick_init
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


@quick_init
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


@quick_init
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
