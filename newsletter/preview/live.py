"""The issue as the preview shows it: compiled once per change, personalised per request.

:class:`LiveIssue` holds the latest :class:`Snapshot` (an immutable value replaced
whole, so request threads never see half of a rebuild) and wakes every waiting
Server-Sent Events stream when it changes. A compile error is a snapshot too:
the page shows it, and the next good save replaces it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from pathlib import Path
from typing import Any, Callable

from ..compile.lint import GMAIL_CLIP, SIZE_WARNING, Finding
from ..compile.personalize import Personalizer
from ..compile.pipeline import Build, build_issue, lint_build, personalizer
from ..compile.render import layout_names, templates_dir
from ..config import Settings
from ..errors import NewsletterError
from ..files import file_stamp
from ..models import Subscriber
from ..providers import provider_facts
from ..subscribers.lookup import find_subscriber
from ..subscribers.reader import iter_valid_subscribers

log = logging.getLogger(__name__)

PICKER_SIZE = 8  # subscribers offered in the page's "Preview as" list
PICKER_SEARCH = 2000  # rows read at most to fill the list (and find a reader with blank fields)
LOOKUPS_KEPT = 64  # other addresses (--as, ?as=) remembered per compile, found or not
NO_FIELDS_EMAIL = "no-fields@example.com"  # a reader with no name or columns: shows every fallback
SAMPLE_READER = Subscriber(email="reader@example.com", name="Sample Reader")  # when the list has nobody


@dataclass(frozen=True)
class CompileError:
    """A compile failure as the page shows it: file, line, message, what to do."""

    message: str
    path: str | None = None
    line: int | None = None
    hint: str | None = None
    kind: str = "NewsletterError"

    @classmethod
    def from_exception(cls, err: Exception) -> "CompileError":
        if isinstance(err, NewsletterError):
            return cls(err.message, err.path, err.line, err.hint, type(err).__name__)
        return cls(f"{type(err).__name__}: {err}", hint="this is a bug in newsletter; the terminal shows "
                                                      "the traceback, please report it", kind="InternalError")

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: " if self.path and self.line else f"{self.path}: " if self.path else ""
        return f"{where}{self.message}"


@dataclass(frozen=True)
class Inputs:
    """What a compile reads: the issue, the config, the subscriber list, the templates folder."""

    files: frozenset[Path]
    templates: Path | None

    def fingerprint(self) -> tuple:
        """Every input's stamp (inode, size, mtime), to notice a save the watcher was not yet listening for."""
        paths = sorted(self.files | set(self.templates.rglob("*") if self.templates else ()))
        return tuple((str(p), file_stamp(p)) for p in paths)


_NOT_YET = object()


class Readers:
    """The subscribers one compile shows, by address, so that a request never reads the whole list.

    ``picked`` (the "Preview as" list) is found by reading the list only as far as needed
    (:func:`readers_worth_seeing`). Any other address (``--as``, ``?as=``) costs one read of
    the list up to that row, once per compile: the answer, found or not, is kept.
    """

    def __init__(self, list_path: Path, picked: tuple[Subscriber, ...]):
        self.list_path = list_path
        self.picked = picked
        self._picked = {s.email.lower(): s for s in reversed(picked)}  # the first of a repeated address
        self._looked_up: dict[str, Subscriber | None] = {}
        self._lock = threading.Lock()

    def find(self, email: str) -> Subscriber | None:
        """The list's subscriber with this address (any case), or None."""
        key = email.strip().lower()
        if key in self._picked:
            return self._picked[key]
        found = self._looked_up.get(key, _NOT_YET)  # no lock: another thread may be evicting an old entry
        if found is not _NOT_YET:
            return found
        with self._lock:  # two requests for one new address: one read of the list
            found = self._looked_up.get(key, _NOT_YET)
            if found is _NOT_YET:
                found = find_subscriber(self.list_path, email)
                if len(self._looked_up) >= LOOKUPS_KEPT:
                    del self._looked_up[next(iter(self._looked_up))]
                self._looked_up[key] = found
            return found

    def reader(self, email: str | None) -> Subscriber:
        """Who the email is shown as: ``email`` (a reader with no fields when not in the list), else the first
        subscribed reader (as ``newsletter build`` renders it)."""
        if email:
            return self.find(email) or Subscriber(email=email.strip())
        return next((s for s in self.picked if s.email != NO_FIELDS_EMAIL), SAMPLE_READER)


@dataclass(frozen=True)
class Snapshot:
    """One compile of the issue, good or failed."""

    version: int
    fingerprint: tuple = ()  # of the inputs, taken just before compiling
    settings: Settings | None = None
    build: Build | None = None
    personalizer: Personalizer | None = None
    findings: tuple[Finding, ...] = ()
    lookup: Readers | None = None  # the "Preview as" readers and every other address asked for
    error: CompileError | None = None
    compiled_at: float = field(default_factory=time.time)
    took_ms: float = 0.0

    @property
    def readers(self) -> tuple[Subscriber, ...]:
        """The page's "Preview as" list."""
        return self.lookup.picked if self.lookup else ()


class LiveIssue:
    """The preview's one source of truth: ``rebuild()`` on change, ``view(email)`` per request."""

    def __init__(self, issue_path: str, load_settings: Callable[[], Settings], *,
                 default_email: str | None = None, settings: Settings | None = None):
        self.issue_path = issue_path
        self.default_email = default_email
        self._load_settings = load_settings
        self.settings = settings  # the last configuration that loaded; the watcher follows its paths
        self.boot = secrets.token_hex(4)  # tells a page that reconnects to a restarted server to refresh
        self.snapshot = Snapshot(version=0, error=CompileError("not compiled yet"))
        self._changed = threading.Condition()
        self._other_layouts: dict[tuple[int, str], Snapshot] = {}  # the page's layout choice, this version only
        self.closed = False

    def inputs(self) -> Inputs:
        files = {Path(self.issue_path).resolve()}
        templates = None
        if self.settings is not None:
            if self.settings.path is not None:
                files.add(self.settings.path.resolve())
            files.add(self.settings.workspace_path(self.settings.subscribers.file).resolve())
            templates = templates_dir(self.settings).resolve()
        return Inputs(frozenset(files), templates)

    @property
    def issue_id(self) -> str:
        """The issue's id: the last good compile's, else the file's name (as the page's heading shows it)."""
        build = self.snapshot.build
        return build.issue.id if build is not None else Path(self.issue_path).stem

    @property
    def tag(self) -> str:
        return f"{self.boot}-{self.snapshot.version}"

    def rebuild(self) -> Snapshot:
        """Reload the settings and compile the issue again; never raises for a bad file."""
        started = time.perf_counter()
        version = self.snapshot.version + 1
        fingerprint = self.inputs().fingerprint()
        try:
            self.settings = self._load_settings()
        except Exception as err:
            snapshot = self._failed(version, fingerprint, err)
        else:
            snapshot = self._compile(version, fingerprint, self.settings)
        snapshot = dataclasses.replace(snapshot, took_ms=(time.perf_counter() - started) * 1000)
        with self._changed:
            self.snapshot = snapshot
            self._changed.notify_all()
        return snapshot

    def _compile(self, version: int, fingerprint: tuple, settings: Settings, layout: Path | None = None) -> Snapshot:
        """One compile, with the issue's layout or ``layout``; a failure becomes a failed snapshot."""
        try:
            build = build_issue(settings, self.issue_path, layout=layout)
            facts = provider_facts(settings)
            person = personalizer(settings, build.compiled, facts=facts)
            lookup = Readers(build.list_path, readers_worth_seeing(build))
            message = person.message(lookup.reader(self.default_email))
            findings = tuple(lint_build(settings, build, message, facts))
            return Snapshot(version, fingerprint, settings, build, person, findings, lookup)
        except Exception as err:  # the author is mid-edit: show any failure in the page, keep serving
            return self._failed(version, fingerprint, err, settings)

    @staticmethod
    def _failed(version: int, fingerprint: tuple, err: Exception, settings: Settings | None = None) -> Snapshot:
        if not isinstance(err, NewsletterError):
            log.exception("preview compile failed")
        return Snapshot(version, fingerprint, settings, error=CompileError.from_exception(err))

    def layouts(self) -> list[str]:
        return layout_names(templates_dir(self.settings)) if self.settings is not None else []

    def for_layout(self, layout: str | None) -> Snapshot:
        """The current snapshot, or the same version compiled with another layout of the templates
        folder (the page's "Layout" choice; compiled once per version, on first request)."""
        snapshot = self.snapshot
        if not layout or snapshot.error or snapshot.build is None or layout == snapshot.build.compiled.layout.stem:
            return snapshot
        if layout not in self.layouts():  # a name from the folder, never a path
            return dataclasses.replace(snapshot, build=None, error=CompileError(
                f"no layout {layout!r} in the templates folder", hint=f"layouts: {', '.join(self.layouts())}"))
        key = (snapshot.version, layout)
        with self._changed:
            found = self._other_layouts.get(key)
        if found is None:
            started = time.perf_counter()
            found = self._compile(snapshot.version, snapshot.fingerprint, snapshot.settings,
                                  templates_dir(snapshot.settings) / f"{layout}.mjml")
            found = dataclasses.replace(found, took_ms=(time.perf_counter() - started) * 1000)
            with self._changed:
                self._other_layouts = {k: v for k, v in self._other_layouts.items() if k[0] == snapshot.version}
                self._other_layouts[key] = found
        return found

    def wait_for_change(self, seen_tag: str, timeout: float) -> bool:
        """Block until the tag differs from ``seen_tag`` (True) or timeout/close (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.closed or self.tag != seen_tag, timeout) and not self.closed

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def email_html(self, email: str | None, layout: str | None = None) -> str | None:
        """The personalised HTML part, or None while the issue does not compile."""
        snapshot = self.for_layout(layout)
        if snapshot.error:
            return None
        try:
            return snapshot.personalizer.message(snapshot.lookup.reader(email or self.default_email)).html
        except NewsletterError:
            return None

    def view(self, email: str | None, layout: str | None = None) -> dict[str, Any]:
        """Everything the page shows for one subscriber, as JSON-ready values."""
        snapshot = self.for_layout(layout)
        data: dict[str, Any] = {
            "tag": f"{self.boot}-{snapshot.version}",
            "issue": {"path": self.issue_path, "id": Path(self.issue_path).stem},
            "compiled_at": snapshot.compiled_at,
            "took_ms": round(snapshot.took_ms, 1),
            "error": None,
        }
        if snapshot.error is None:
            try:
                data.update(_personalised_view(snapshot, snapshot.lookup.reader(email or self.default_email),
                                               self.default_email))
            except NewsletterError as err:  # e.g. a merge value that breaks the subject for this reader
                data["error"] = CompileError.from_exception(err).__dict__
        else:
            data["error"] = snapshot.error.__dict__
        data["layouts"] = self.layouts()
        return data


def _personalised_view(snapshot: Snapshot, subscriber: Subscriber, default_email: str | None) -> dict[str, Any]:
    build, person = snapshot.build, snapshot.personalizer
    message, values = person.message_with_values(subscriber)
    size = len(message.html.encode())
    headers = [
        ("From", message.sender),
        ("To", _display_address(message.to_name, message.to)),
        ("Reply-To", message.reply_to),
        ("Subject", message.subject),
        ("Preheader", build.compiled.preheader.fill(values, html=False)),
        *message.headers.items(),
    ]
    return {
        "issue": {"path": build.issue.path, "id": build.issue.id, "layout": str(build.compiled.layout)},
        "as": subscriber.email,
        "subscribers": subscriber_choices(snapshot, subscriber, default_email),
        "headers": [[name, value] for name, value in headers if value],
        "size": {"bytes": size, "clip": GMAIL_CLIP, "warning": SIZE_WARNING},
        "lint": [f.__dict__ for f in snapshot.findings],
        "text": message.text,
    }


def _display_address(name: str, address: str) -> str:
    """``Name <address>`` as a mail client shows it: quoted when needed, never RFC 2047-encoded."""
    if not name:
        return address
    try:
        return str(Address(display_name=name, addr_spec=address))
    except (ValueError, HeaderParseError):  # ?as= is whatever the author typed
        return f"{name} <{address}>"


def readers_worth_seeing(build: Build) -> tuple[Subscriber, ...]:
    """The first subscribed readers, one with blank merge fields (to see the fallbacks),
    and a reader with no fields at all.

    Found once per compile by streaming the list, and only as far as needed: lists can be
    long. A reader with blank fields is looked for among the first :data:`PICKER_SEARCH` rows.
    """
    stream = iter_valid_subscribers(build.list_path)
    subscribed = (s for s in itertools.islice(stream, PICKER_SEARCH) if s.status == "subscribed")
    first = list(itertools.islice(subscribed, PICKER_SIZE))
    used = {name for slot in build.compiled.slots for name in slot.fields}
    with_blanks = [] if any(used - s.merge_values().keys() for s in first) else \
        list(itertools.islice((s for s in subscribed if used - s.merge_values().keys()), 1))
    stream.close()  # the list file, now rather than whenever the generator is collected
    return (*first, *with_blanks, Subscriber(email=NO_FIELDS_EMAIL))




def subscriber_choices(snapshot: Snapshot, chosen: Subscriber, default_email: str | None) -> list[dict[str, str]]:
    """The page's "Preview as" list: the chosen reader, the ``--as`` one, then the snapshot's readers."""
    build = snapshot.build
    used = {name for slot in build.compiled.slots for name in slot.fields}
    candidates = [chosen, *([snapshot.lookup.reader(default_email)] if default_email else []), *snapshot.readers]
    choices, seen = [], set()
    for subscriber in candidates:
        if subscriber.email.lower() not in seen:
            seen.add(subscriber.email.lower())
            choices.append({"email": subscriber.email, "label": _label(subscriber, used)})
    return choices


def _label(subscriber: Subscriber, used: set[str]) -> str:
    if subscriber.email == NO_FIELDS_EMAIL:
        return "A reader with no name or fields (every fallback)"
    label = f"{subscriber.name} <{subscriber.email}>" if subscriber.name else subscriber.email
    blank = sorted(used - subscriber.merge_values().keys())
    if subscriber.status != "subscribed":
        label += f" ({subscriber.status})"
    if blank:
        label += f" (blank: {', '.join(blank)})"
    return label
