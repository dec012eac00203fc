"""The whole exception tree of newsletter.

    NewsletterError                 anything the user can fix; the CLI prints "Error: ..." and exits 1
     +-- ConfigError                newsletter.toml, NEWSLETTER_* env, flags
     +-- IssueError                 an issue file: front matter, Markdown
     +-- TemplateError              a layout: Jinja, MJML, merge fields
     +-- SubscriberError            the subscriber list
     +-- RecipientError             one recipient cannot be sent (their data); the others can
     +-- LedgerError                the delivery ledger
     |    +-- LeaseHeld             another run holds the issue (exit 75)
     |    +-- PlanExists            another worker planned the issue first: join its plan
     |    +-- RouteRefused          a run through another provider than the plan's; a --restart of a real send
     +-- StoppedNow                 a second Ctrl-C stopped a send mid-batch (exit 130)
     +-- ProviderError              an email API failed (retryable, retry_after; never carries the key);
          |                         a bare one that is retryable is in doubt, like NoAnswer
          +-- AuthError             401/403: abort the whole run
          +-- NotAccepted           certainly not accepted: the request never left (connection refused, DNS
          |                         failure, connect timeout, a URL requests cannot use) or the provider
          |                         itself said no for now (429, its own 5xx): back to pending
          +-- NoAnswer              sent, but no answer came (read timeout, dropped connection, a gateway's
          |                         502/504): the provider may have accepted it, so it is in doubt
          +-- ReconcileInterrupted  the provider failed mid-reconcile; what was resolved is kept

Every message says what went wrong, where (file:line, recipient) and what to do.
Library code raises these; only ``newsletter.cli`` turns them into exit codes.
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Base of every error the user can act on."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, hint: str | None = None):
        self.message = message
        self.path = path
        self.line = line
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        text = f"{where}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(NewsletterError):
    """Bad configuration: TOML syntax, unknown key, secret in the file, bad value."""


class IssueError(NewsletterError):
    """A bad issue file: front matter missing or malformed, no subject."""


class TemplateError(NewsletterError):
    """A layout or merge field that cannot be rendered."""


class SubscriberError(NewsletterError):
    """A subscriber list that cannot be read or contains invalid rows."""


class RecipientError(NewsletterError):
    """One recipient's message cannot be built or is refused for their data alone.

    The send loop records that recipient ``failed`` with the message and goes on with
    the others: one bad row must never stop a newsletter.
    """

    def __init__(self, email: str, message: str, **kw):
        self.email = email
        super().__init__(message, **kw)


class FeedFailed(NewsletterError):
    """The process that reads and personalises the list for a send stopped without handing it all over
    (newsletter/sending/feedprocess.py): a bug, or the kernel killed it."""


class LedgerError(NewsletterError):
    """The delivery ledger refused an operation or is inconsistent."""


class LeaseHeld(LedgerError):
    """Another run holds this issue's lease; nothing was done (EX_TEMPFAIL)."""

    exit_code = 75


class PlanExists(LedgerError):
    """The issue was planned already (by another worker a moment ago, with many workers): join that plan."""


class StoppedNow(NewsletterError):
    """A second Ctrl-C (or SIGTERM) stopped a send without waiting for its batches in flight: their rows
    stay ``sending``, which the next run resolves (docs/sending.md, exit codes)."""

    exit_code = 130  # 128 + SIGINT, as shells report a process stopped by Ctrl-C

class RouteRefused(LedgerError):
    """A run through another provider than the one the issue's plan is bound to, or a ``--restart`` that
    could give a reader a second real copy; nothing was sent or changed."""


class ProviderError(NewsletterError):
    """An email API failed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "", retryable: bool = False,
                 retry_after: float | None = None, **kw):
        self.status = status
        self.body = body[:500]
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message, **kw)


class AuthError(ProviderError):
    """The provider refused our credentials: stop sending at once."""


class NotAccepted(ProviderError):
    """The provider certainly did not take the request: it never left this machine (refused connection,
    DNS failure, connect timeout, a URL requests cannot use) or the provider answered 429 or a 5xx of
    its own. Sending it again cannot make a second copy (httpx's ConnectError, not its ReadError)."""


class NoAnswer(ProviderError):
    """The request went out and no answer came back (read timeout, dropped connection, a gateway's
    502/504): the provider may have accepted it. Retried only under the same idempotency key."""

    def __init__(self, message: str, *, retryable: bool = True, **kw):
        super().__init__(message, retryable=retryable, **kw)


class ReconcileInterrupted(ProviderError):
    """``newsletter reconcile`` stopped on a provider error; batches already resolved are recorded.

    ``report`` is what was found until then (a ``newsletter.sending.reconcile.Reconciliation``)."""

    def __init__(self, report: object, err: ProviderError, resolved: int):
        self.report = report
        super().__init__(f"{err.message} (after resolving {resolved} recipient(s); run `newsletter reconcile` "
                         f"again to continue)", status=err.status, body=err.body, retryable=err.retryable,
                         retry_after=err.retry_after, hint=err.hint)
