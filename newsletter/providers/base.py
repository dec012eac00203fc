"""The provider interface: one batch in, one outcome per recipient out.

The send path is a template method that no adapter overrides (django-anymail's
shape: its test backend replaces the transport step, not the path)::

    send_batch(batch, session)
        refuse_line_breaks(batch)                  # shared: no header injection, whatever the adapter
        request = self.build_request(batch)        # adapter verb: endpoint, auth, body (the outbox: MIME files)
        answer = self.transmit(request, session)   # shared HTTP here (timeouts, network errors); the outbox writes
        return self.parse_response(batch, answer)  # adapter verb: per-recipient outcomes

Whole-batch failures are exceptions (docs/architecture.md, errors):
:class:`AuthError` (401/403, abort the run); :class:`NotAccepted` when the
provider certainly did not take the batch (the request never left: connection
refused, DNS failure, connect timeout, a URL requests cannot use; or it
answered 429 or a 5xx of its own); :class:`NoAnswer` when the request went out
and no answer came (read timeout, dropped connection, a gateway's 502/504), so
it may have been accepted. The fact is known here, where the request is made;
the send loop only reads the class. A partial rejection is data:
``Outcome(state="failed")`` for that recipient. An answer we cannot read after
the provider may have accepted the batch is ``Outcome(state="unknown")``,
never ``sent``.

Whose fault is a refusal? Only an error the provider attributes to one
recipient (a malformed or inactive address) makes that recipient ``failed``,
which is for good. Anything about the request or the account (sender not
verified, unknown stream or domain, no credits, account pending) would be
refused for every reader of the list: the adapter raises a non-retryable
:class:`ProviderError` with the provider's own words, so the run stops and
nobody is marked failed. Where the provider already accepted part of the batch
(per-message APIs), raising would send those again, so the refused ones go back
to pending (``retry``) instead; sent again alone, they are refused outright and
the run stops there. When in doubt an error counts as the request's: a
recipient wrongly held back is sent once the cause is fixed, a recipient
wrongly failed never is.

A recipient whose own data makes the request impossible (a line break in their
name or subject, merge values over a provider's cap) is a
:class:`~newsletter.errors.RecipientError` raised before anything is sent:
that recipient fails, the rest of the batch goes back to pending.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import math
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from ..compile.slots import SlotTemplate, escape_html
from ..config import Settings
from ..errors import AuthError, ConfigError, NoAnswer, NotAccepted, ProviderError, RecipientError
from ..jsontext import json_size
from ..models import Message, Outcome
from ..text import has_line_break
from .answers import about_sender, json_body, provider_message, retry_after
from .stats import IssueStats

if TYPE_CHECKING:  # requests loads where a call is made: the outbox, and `build` through it, never need it
    import requests


@dataclass(frozen=True)
class Batch:
    """Recipients sent in one API call, with the per-recipient messages already personalised.

    ``template`` and ``slot_values`` let an adapter send the template once with
    per-recipient values (SendGrid substitutions, Mailgun recipient-variables).
    """

    issue_id: str
    batch_id: str
    messages: tuple[Message, ...]
    slot_values: tuple[Sequence[str], ...] = ()
    template: Mapping[str, SlotTemplate] | None = None  # "subject", "html", "text"

    def __post_init__(self) -> None:
        # Adapters pair each message with its values: a short list would drop readers from the request
        # while the answer marks the whole batch sent.
        if self.slot_values and len(self.slot_values) != len(self.messages):
            raise ValueError(f"batch {self.batch_id}: {len(self.slot_values)} sets of merge values for "
                             f"{len(self.messages)} messages")

    @property
    def idempotency_key(self) -> str:
        return f"{self.issue_id}/{self.batch_id}"


# Why a provider will not send to an address, in our words (the list's subscriber statuses, plus "blocked":
# suppressed by the account owner, not by the reader).
SUPPRESSION_KINDS = ("bounced", "complained", "unsubscribed", "blocked")


@dataclass(frozen=True)
class ProviderSuppression:
    """An address on the provider's own suppression list (``newsletter suppressions sync``)."""

    email: str
    kind: str  # one of SUPPRESSION_KINDS
    detail: str = ""  # the provider's own words: its reason, bounce code or origin
    issue_id: str = ""  # the issue (the message's tag) the entry names, when the provider records one

    def __post_init__(self) -> None:
        if self.kind not in SUPPRESSION_KINDS:  # an adapter's mapping gone wrong, not the provider's data
            raise ValueError(f"suppression kind {self.kind!r} is not one of {SUPPRESSION_KINDS}")


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # carries the API key: never in reprs
    # Bodies hold every recipient's address and message: kept out of reprs (logs, tracebacks) too.
    json: Any = field(default=None, repr=False)
    data: Any = field(default=None, repr=False)
    files: Any = field(default=None, repr=False)


class Provider:
    """Base class for adapters. Class attributes describe the provider's documented limits."""

    name = "base"
    max_batch = 1  # recipients per API call
    max_payload_bytes = 10 * 1024 * 1024
    # A batch is held in memory as messages and again as its request body, by each worker:
    # cutting it at a few MB keeps peak RSS flat whatever the list size (the count limit
    # still applies; providers that send the template once stay far below this).
    memory_budget = 2 * 1024 * 1024
    default_rate = 10.0  # requests per second when [provider] rate_limit = 0
    idempotent = False  # honours an idempotency key: in-doubt batches can be retried safely
    # Seconds the provider remembers a key (when ``idempotent``): an in-doubt batch first claimed
    # longer ago than this would be sent again by a retry, so it becomes ``unknown`` instead.
    idempotency_window = math.inf
    needs_api_key = True
    # Its requests go through the worker's ``requests.Session`` (the outbox writes files instead): a
    # session that made no request then proves nothing left, so a bug before the call loses nobody.
    delivers_through_session = True
    # Sends the compiled template once with per-recipient values (Batch.template/slot_values):
    # the send loop then skips building each reader's html and text.
    substitutes = False
    # Builds each message's body from the batch's template and values (already JSON-encoded, see
    # :meth:`message_bodies`): the send loop leaves html and text empty and sets ``body_bytes``.
    fills_bodies = False
    envelope_bytes = 512  # what one message's fixed JSON keys and addresses add, generously
    default_origin = ""  # the API origin; ``[provider] api_base`` overrides it (EU regions, tests)
    # Seconds after a try before the provider's logs can prove it was never accepted (``reconcile``):
    # asked sooner it answers ``unknown``, and `newsletter reconcile` says when to come back.
    reconcile_settles = 0.0
    # What `newsletter reconcile` says when ``reconcile`` cannot answer for this provider.
    reconcile_note = "this provider has no API to look up whether an in-doubt batch was accepted"
    # ``[unsubscribe] url = "provider"``: what stands for the provider's own unsubscribe link in a body
    # (it replaces it per recipient and adds the List-Unsubscribe headers itself); "" when it cannot.
    unsubscribe_placeholder = ""
    # What `newsletter suppressions sync` says when ``suppression_list`` cannot answer for this provider,
    # and what its key needs to read the lists (when a send-only key would be refused).
    sync_note = "this provider keeps no suppression list of its own: nothing to sync"
    sync_key_hint = ""
    # The hint for a 403 that is about the sender or sending domain rather than the key.
    sender_hint = "verify the From address or its domain with the provider"
    # The [provider] key naming what, within this provider, an issue's plan is bound to besides the
    # provider itself (docs/sending.md, provider binding): Mailgun's domain, Postmark's stream.
    scope_key = ""

    def __init__(self, settings: Settings, api_key: str | None = None):
        self.refuse_batch_size(settings)
        self.settings = settings
        self.api_key = api_key
        self.timeout = settings.provider.timeout

    @classmethod
    def refuse_batch_size(cls, settings: Settings) -> None:
        """:class:`ConfigError` when ``[provider] batch_size`` is more than this provider takes in one call
        (docs/configuration.md, values that are refused): never cut down silently to something not asked for."""
        configured = settings.provider.batch_size
        if configured > cls.max_batch:
            raise ConfigError(f"[provider] batch_size = {configured} is more than {cls.name} takes in one batch "
                              f"({cls.max_batch})", path=settings.origins.get("provider.batch_size"),
                              hint=f"write batch_size = {cls.max_batch} or less, or 0 for {cls.name}'s maximum")

    def plan_scope(cls, settings: Settings) -> str:
        """The value of ``scope_key`` that ``settings`` send through ("" for a provider without one)."""
        return ""

    @classmethod
    def unsubscribe_refusal(cls, settings: Settings) -> str:
        """Why this provider cannot manage unsubscribes with ``settings`` ("" when it can)."""
        if cls.unsubscribe_placeholder:
            return ""
        return (f"newsletter leaves unsubscribe links to the provider only with Postmark (its broadcast streams), "
                f"SendGrid (an unsubscribe group) and Mailgun, not with {cls.name}")

    @property
    def needs_bodies(self) -> bool:
        """Whether each message must carry its own html and text; else the adapter builds them from the
        batch's template and values (``substitutes``, ``fills_bodies``) and the send loop leaves them out."""
        return not (self.substitutes or self.fills_bodies)

    def can(self, verb: str) -> bool:
        """Whether this adapter implements the optional ``verb`` ("reconcile", "suppression_list"), for
        saying so before calling it; a call of one it lacks answers None."""
        return getattr(type(self), verb) is not getattr(Provider, verb)

    # -- verbs the adapters implement -------------------------------------------------
    def build_request(self, batch: Batch) -> Any:
        """What :meth:`transmit` hands over: a :class:`Request` for the HTTP adapters."""
        raise NotImplementedError

    def parse_response(self, batch: Batch, response: Any) -> list[Outcome]:
        """One outcome per recipient from what :meth:`transmit` returned (a ``requests.Response``)."""
        raise NotImplementedError

    def payload_size(self, message: Message) -> int:
        """Bytes this message adds to a request body at most (for cutting batches by size): its
        JSON-escaped bodies, subject and headers, plus ``envelope_bytes`` for the fixed keys."""
        bodies = message.body_bytes if message.body_bytes >= 0 else json_size(message.html) + json_size(message.text)
        return (bodies + json_size(message.subject)
                + sum(json_size(k) + json_size(v) for k, v in message.headers.items()) + self.envelope_bytes)

    def message_bodies(self, batch: Batch) -> Iterator[tuple[list[str], list[str]]]:
        """Each message's html and text, JSON-encoded (as pieces to join): filled from the batch's
        template and values when it has them (the send loop leaves the messages' bodies empty),
        else the messages' own."""
        if batch.template is not None and batch.slot_values:
            html, text = batch.template["html"], batch.template["text"]
            for values in batch.slot_values:
                yield html.json_pieces(values, html=True), text.json_pieces(values, html=False)
        else:
            for message in batch.messages:
                if message.body_bytes >= 0:  # its bodies were left to us, and there is nothing to fill them from
                    raise ProviderError(f"{self.name}: a message left without its bodies in a batch without the "
                                        "compiled template; nothing was sent", hint="this is a bug in the send loop")
                yield [json.dumps(message.html)], [json.dumps(message.text)]

    def honours_key(self, age: float | None) -> bool:
        """True when a batch first claimed ``age`` seconds ago (None: not known) can be sent again
        under its idempotency key without anybody getting a second copy."""
        if not self.idempotent:
            return False
        if math.isinf(self.idempotency_window):
            return True
        return age is not None and age < self.idempotency_window

    def reconcile(self, batch: Batch, session: requests.Session, *, age: float | None,
                  since_last_try: float | None = None) -> list[Outcome] | None:
        """Optional verb: ask the provider whether an in-doubt batch was accepted.

        ``age`` is the number of seconds since the batch id was first claimed: never less than
        the time since its first send, so windows that close (a key or a log expiring) are
        judged on the safe side. ``since_last_try`` is the number of seconds since its rows last
        changed, never more than the time since its last send, for windows that open (logs
        catching up); it defaults to ``age``. Either is None when not known.
        Returns one outcome per message: ``sent`` (accepted, with its id), ``retry``
        (provably never accepted: safe to send again) or ``unknown`` (cannot tell yet);
        None when this provider cannot answer at all (see ``reconcile_note``).
        """
        return None

    def preflight(self, session: requests.Session) -> list[str]:
        """Optional verb, before a send: ask the provider about settings that would make the send go
        wrong. Raises what must stop it (:class:`ConfigError`, :class:`AuthError` for a refused key, a
        :class:`ProviderError` when not knowing is unsafe); returns warnings for the rest."""
        return []

    def suppression_list(self, session: requests.Session) -> Iterator[ProviderSuppression] | None:
        """Optional verb: every address the provider refuses to send to (bounces, complaints,
        unsubscribes), read page by page; None when it keeps no such list (see ``sync_note``).
        Raises :class:`ProviderError` (``retryable`` when trying again may help) part-way: the
        caller keeps nothing from an incomplete read."""
        return None

    def get_json(self, session: requests.Session, url: str, params: Mapping[str, Any] | None, what: str,
                 expect: type = object) -> Any:
        """GET ``url`` (a path on the configured origin, or a full URL on it, such as a paging link)
        and return its JSON body, which must be an ``expect`` (dict, list). ``what`` names the look-up
        in errors ("message search"). 401/403 raise :class:`AuthError`; 429, 5xx, network trouble and
        a 200 we cannot read (a proxy's page, a body of another shape) a retryable
        :class:`ProviderError`; any other answer a non-retryable one, with the provider's words."""
        if url.startswith("/"):
            url = self.url(url)
        elif not url.startswith(self.url("/")):  # never send the key to another host
            raise ProviderError(f"{self.name}: the {what} pointed to another host; stopped", retryable=False)
        import requests

        try:  # no redirects either: requests would carry a key header such as Postmark's to the new host
            response = session.get(url, params=params, headers=self.read_headers(), timeout=self.timeout,
                                   allow_redirects=False)
        except requests.RequestException as err:
            raise self.network_error(err, url, what) from err
        self.raise_for_status(response)
        if response.status_code != 200:
            said = self.scrub(provider_message(response))
            raise ProviderError(f"{self.name}'s {what} answered HTTP {response.status_code}"
                                + (f": {said}" if said else ""), status=response.status_code,
                                body=self.scrub(response.text))
        body = json_body(response)
        if body is None or not isinstance(body, expect):
            raise ProviderError(f"{self.name}'s {what} answered something we cannot read", status=200,
                                body=self.scrub(response.text), retryable=True)
        return body

    def read_headers(self) -> Mapping[str, str]:
        """The headers of a look-up (GET): the provider's authentication."""
        raise NotImplementedError

    def url(self, path: str) -> str:
        """``path`` on the configured origin (``[provider] api_base``, else the provider's own)."""
        return (self.settings.provider.api_base or self.default_origin).rstrip("/") + path

    # -- the shared path ----------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.settings.provider.batch_size or self.max_batch  # never above max_batch: see refuse_batch_size

    @property
    def rate_limit(self) -> float:
        return self.settings.provider.rate_limit or self.default_rate

    @property
    def read_rate(self) -> float:
        """Look-ups (GET) per second: the send rate, unless the provider paces its reads apart (SES
        counts its send rate in recipients, its reads in requests)."""
        return self.rate_limit

    def cut_batches(self, messages: Iterable[Message]) -> Iterator[list[Message]]:
        """Groups of messages within the count AND payload-size limits."""
        group: list[Message] = []
        size = 0
        limit = min(self.max_payload_bytes, self.memory_budget)
        count = self.batch_size
        for message in messages:
            weight = self.payload_size(message)
            if group and (len(group) >= count or size + weight > limit):
                yield group
                group, size = [], 0
            group.append(message)
            size += weight
        if group:
            yield group

    def send_batch(self, batch: Batch, session: requests.Session | None) -> list[Outcome]:
        """The one send path of every adapter (never overridden; override :meth:`transmit` instead)."""
        refuse_line_breaks(batch)
        request = self.build_request(batch)
        try:
            outcomes = self.parse_response(batch, self.transmit(request, session))
        except ProviderError as err:  # a provider (or a proxy) may echo our headers back: never show the key
            self.scrubbed(err)
            raise
        if not self.secrets() or not any(o.reason for o in outcomes):
            return outcomes
        return [dataclasses.replace(o, reason=self.scrub(o.reason)) if o.reason else o for o in outcomes]

    def scrubbed(self, err: ProviderError) -> ProviderError:
        """``err`` with the key scrubbed from everything it says (its message, hint and body), in place."""
        err.message, err.body = self.scrub(err.message), self.scrub(err.body)
        err.hint = self.scrub(err.hint) if err.hint else err.hint
        err.args = (err.render(),)
        return err

    def transmit(self, request: Any, session: requests.Session | None) -> Any:
        """Hand the request over and return the answer: here an HTTP call without redirects, whose
        failures say whether the provider certainly did not take it (:class:`NotAccepted`) or may
        have (:class:`NoAnswer`); 401/403 raise :class:`AuthError`."""
        if session is None:
            raise ValueError(f"{self.name} sends over HTTP: it needs a requests.Session")
        import requests

        try:
            response = session.request(request.method, request.url, headers=dict(request.headers),
                                       json=request.json, data=request.data, files=request.files,
                                       timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as err:
            raise self.network_error(err, request.url, "request") from err
        self.raise_for_status(response)
        return response

    def network_error(self, err: requests.RequestException, url: str, what: str) -> ProviderError:
        """``err`` as :class:`NotAccepted` when the request certainly never left this machine (or never
        reached a server), else :class:`NoAnswer`; the message names the host it tried, never the key."""
        import requests

        host, nothing = _host(url), "; nothing was sent" if what == "request" else ""
        if isinstance(err, (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL,
                            requests.exceptions.MissingSchema, requests.exceptions.InvalidHeader)):
            return NotAccepted(f"{self.name}: the {what} could not be made to {url_origin(url)!r} "
                               f"({self.scrub(str(err))}){nothing}", retryable=False,
                               hint="check [provider] api_base: it should be the provider's https:// API origin")
        if isinstance(err, requests.ConnectTimeout):
            return NotAccepted(f"{self.name}: could not connect to {host} within {self.timeout:g} s{nothing}",
                               retryable=True)
        never_connected = _never_connected(err)
        if never_connected:
            return NotAccepted(f"{self.name}: could not connect to {host} ({never_connected}){nothing}",
                               retryable=True, hint="check the network, and [provider] api_base")
        if isinstance(err, requests.Timeout):
            return NoAnswer(f"{self.name}: no answer within {self.timeout:g} s from {host}")
        return NoAnswer(f"{self.name}: the connection to {host} broke before an answer ({type(err).__name__})")

    def raise_for_status(self, response: requests.Response) -> None:
        """401/403 abort; 429 and the provider's own 5xx were not accepted; a gateway's 502/504 is no
        answer; other 4xx are left to ``parse_response``."""
        status = response.status_code
        if status in (401, 403):
            raise self.auth_error(response)
        if 300 <= status < 400:  # never followed: the key would go with it (requests keeps Postmark's header)
            raise ProviderError(f"{self.name} answered HTTP {status}, a redirect to "
                                f"{response.headers.get('Location', '(nowhere)')!r}, which is not followed",
                                status=status, retryable=False,
                                hint="check [provider] api_base: it should be the provider's API origin")
        if status == 429 or status >= 500:
            # A gateway in front of the provider gave up (502 Bad Gateway, 504 Gateway Timeout): the
            # provider behind it may have accepted the batch, so that answer is no answer at all.
            error = NoAnswer if status in GATEWAY_STATUSES else NotAccepted
            raise error(f"{self.name} answered HTTP {status}", status=status, body=self.scrub(response.text),
                        retryable=True, retry_after=retry_after(response.headers))

    def auth_error(self, response: requests.Response) -> AuthError:
        """401/403 with the provider's own words: a bad key, or (403) a key that may not send from this
        sender or domain (SendGrid's unverified Sender Identity, Mailgun's sandbox domains)."""
        status = response.status_code
        said = self.scrub(provider_message(response))
        key_hint = f"check the key in ${self.settings.provider.api_key_env}; it is never printed"
        if status == 403 and about_sender(said):
            message, hint = f"{self.name} refused to send from this sender or domain (HTTP 403)", self.sender_hint
        elif status == 403:
            message, hint = (f"{self.name} refused the API key (HTTP 403)",
                             f"{key_hint}; a 403 can also mean the key lacks the permission to send mail")
        else:
            message, hint = f"{self.name} refused the API key (HTTP {status})", key_hint
        return AuthError(f"{message}: {said}" if said else message, status=status, body=self.scrub(response.text),
                         hint=hint)

    def secrets(self) -> list[str]:
        """Strings that must never appear in an error: the key, in every form we send it."""
        return [self.api_key] if self.api_key and len(self.api_key) >= 4 else []

    def scrub(self, text: str) -> str:
        """``text`` with the API key (should a provider echo it) replaced by ``[API key]``."""
        for secret in self.secrets():
            text = text.replace(secret, "[API key]")
        return text

    def close(self) -> None:
        """Release anything held open (files, connections)."""

    # -- per-issue figures (newsletter report) ----------------------------------------------
    # What `newsletter report` says when ``issue_stats`` cannot answer for this provider, and what a key
    # needs to read the figures (named when the provider refuses the key).
    stats_note = "this provider's API gives no per-issue figures"
    stats_key_hint = ""
    # Paths of read-only queries sent as POST (Mailgun's metrics API), which a look-up session may retry.
    stats_queries: tuple[str, ...] = ()

    def issue_stats(self, session: requests.Session, issue_id: str, since: date, *,
                    detail: bool = True) -> IssueStats | None:
        """Optional verb: the provider's figures for the messages tagged ``issue_id`` since ``since`` (the
        day the issue was planned); with ``detail``, also per day and per link where the API gives them
        (more calls). None when the provider has no per-issue figures (see ``stats_note``). Raises
        :class:`AuthError` for a key that may not read them and :class:`ProviderError` otherwise."""
        return None


def template_once(batch: Batch, key: Callable[[str, int], str],
                  placeholder: Callable[[str], str]) -> tuple[str, str, list[dict[str, str]]]:
    """For providers that send the template once: the html and text with each slot written as
    ``placeholder(key(part, slot))``, and each recipient's values under those keys (HTML-escaped
    for the html part, as :meth:`SlotTemplate.fill` does). ``part`` is "html" or "text".

    Without a template (proof copies) every recipient must have the same bodies, else the batch
    cannot be sent as one.
    """
    if batch.template is None:
        first = batch.messages[0]
        if any(m.html != first.html or m.text != first.text for m in batch.messages):
            raise ProviderError("batches that send the body once need the compiled template and per-recipient "
                                "values (Batch.template, Batch.slot_values)", hint="this is a bug in the send loop")
        return first.html, first.text, [{} for _ in batch.messages]
    html_t, text_t = batch.template["html"], batch.template["text"]
    html_keys = [(i, key("html", i)) for i in sorted(set(html_t.slot_ids))]
    text_keys = [(i, key("text", i)) for i in sorted(set(text_t.slot_ids))]
    merge = []
    for values in batch.slot_values:
        mine = {name: escape_html(values[i]) for i, name in html_keys}
        mine.update({name: values[i] for i, name in text_keys})
        merge.append(mine)
    return (html_t.with_placeholders(lambda i: placeholder(key("html", i))),
            text_t.with_placeholders(lambda i: placeholder(key("text", i))), merge)


def outcomes_from_logs(batch: Batch, accepted: Mapping[str, str], *, age: float | None,
                       since_last_try: float | None, delay: float, retention: float,
                       missing: str, not_yet: str) -> list[Outcome]:
    """Reconcile a batch from a provider's logs (``accepted``: lower-cased address -> message id).

    Found means ``sent``. Absence proves "never accepted" (back to pending) only once the logs
    have caught up with the last try (``delay``) and while they still hold the first one
    (``retention``; ``age`` counts from the first claim, so it never errs young); otherwise
    the recipient stays ``unknown`` with ``not_yet`` as the reason.
    """
    settled = age if since_last_try is None else since_last_try
    conclusive = age is not None and settled is not None and delay <= settled and age <= retention
    outcomes = []
    for m in batch.messages:
        found = accepted.get(m.to.lower())
        if found:
            outcomes.append(Outcome(m.to, "sent", provider_id=found))
        else:
            outcomes.append(Outcome(m.to, "retry", reason=missing) if conclusive
                            else Outcome(m.to, "unknown", reason=not_yet))
    return outcomes


def refuse_line_breaks(batch: Batch) -> None:
    """docs/architecture.md, security: CR or LF in a header value could add headers (a Bcc) to the email, so it is never sent.

    A recipient's own values (address, name, subject, headers) are theirs: :class:`RecipientError`, the
    others are sent. The sender and Reply-To come from ``[newsletter]`` and are the same for every
    reader (SendGrid and Mailgun send one per batch): a refusal of the request, which stops the run.
    """
    # The sender and Reply-To are the same for nearly every message: each distinct one is checked once.
    for sender, reply_to in {(m.sender, m.reply_to) for m in batch.messages}:
        for field_name, value in (("From", sender), ("Reply-To", reply_to)):
            if has_line_break(value):
                raise ProviderError(f"the {field_name} address contains a line break; nothing was sent",
                                    hint=f"set [newsletter] {field_name.lower().replace('-', '_')} on one line")
    for message in batch.messages:
        # One search over the recipient's values together (this runs per recipient); the one at fault
        # is named only when there is one.
        headers = message.headers
        if not has_line_break(f"{message.to}{message.to_name}{message.subject}{''.join(headers)}"
                              f"{''.join(headers.values())}"):
            continue
        values = [("address", message.to), ("name", message.to_name), ("subject", message.subject)]
        values += [(f"{name!r} header", name + value) for name, value in message.headers.items()]
        for what, value in values:
            if has_line_break(value):
                raise RecipientError(message.to, f"the {what} for {message.to!r} contains a line break, which "
                                     "could add headers to the email; not sent to this recipient",
                                     hint="remove line breaks from that subscriber's values in the list")


GATEWAY_STATUSES = (502, 504)


def _host(url: str) -> str:
    """The host (and port) a request went to, for errors: never a path, a query or credentials."""
    try:
        parts = urlsplit(url)
        return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else repr(url_origin(url))
    except ValueError:
        return repr(url_origin(url))


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` without credentials, or what stands before its path."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}" if parts.scheme else url.split("/", 1)[0]


def _never_connected(err: requests.RequestException) -> str:
    """Why no connection was ever made ("connection refused", "host name not resolved"), or "" when one may
    have been: urllib3 wraps a failed connect as a NewConnectionError inside its MaxRetryError."""
    import requests
    from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

    if not isinstance(err, requests.ConnectionError) or isinstance(err, requests.exceptions.ProxyError):
        return ""
    for arg in err.args:
        reason = arg.reason if isinstance(arg, MaxRetryError) else arg
        if isinstance(reason, NameResolutionError):
            return "host name not resolved"
        if isinstance(reason, NewConnectionError):
            return "connection refused" if isinstance(reason.__cause__ or reason.__context__,
                                                      ConnectionRefusedError) else "no connection"
    return ""


def all_outcomes(batch: Batch, state: str, *, reason: str = "", provider_id: str = "") -> list[Outcome]:
    return [Outcome(m.to, state, provider_id=provider_id, reason=reason) for m in batch.messages]


def split_address(value: str) -> tuple[str, str]:
    """``"Name <a@b.c>"`` -> ``("Name", "a@b.c")`` for APIs that take the parts separately."""
    name, address = email.utils.parseaddr(value)
    return name, address or value
