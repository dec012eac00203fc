"""One run of ``newsletter send`` (and of each issue ``dispatch`` sends), start to finish.

The sequence, the same every time (docs/sending.md)::

    refuse test mode -> compile once -> lint's checks (refuse on errors) -> open the provider -> the signing secret
    -> refuse a plan bound to another provider (or ask about one an older version left unknown)
    -> validate the list -> the plan as it would be, read-only (refuse a plan of nobody) -> ask the provider
    about its settings (preflight) -> read its unsubscribes (url = "provider")
    -> take the issue's lease (or exit 75; PostgreSQL: register as a worker) -> summary
    -> offer to reconcile recipients in doubt -> confirm -> freeze or resume the plan -> send

The run never prints and never reads the terminal: what it says and asks goes through
:class:`Conversation`, which the CLI supplies. Errors are raised; the result says what the
ledger holds after the run, from which the caller derives the exit code.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Collection, Iterator, Protocol

from ..compile.lint import CHECKS, NOT_IGNORABLE, Finding, for_sending
from ..compile.pipeline import Build, build_issue, lint_build, personalizer, sample_subscriber
from ..config import Settings
from ..errors import AuthError, ConfigError, NewsletterError, ProviderError, ReconcileInterrupted
from ..ledger import open_ledger
from ..ledger.base import Ledger
from ..providers import open_provider, provider_facts
from ..providers.base import Provider
from ..subscribers.reader import iter_valid_subscribers
from ..unsubscribe import PREVIEW_SECRET, PROVIDER_MANAGED
from .binding import ASK, NEW, route_verdict, unknown_question, unknown_refused
from .lease import LeaseKeeper
from .lookups import PacedSession
from .outcomes import BatchReport, RunTotals
from .plan import SendOptions, SendRun, Summary
from .reconcile import Reconciliation, reconcile_issue
from .suppression_sync import sync_suppressions



class ProgressDisplay(Protocol):
    """What shows the batches as they are recorded (a bar on a terminal, a line each under cron)."""

    def __enter__(self) -> ProgressDisplay: ...
    def __exit__(self, *exc) -> None: ...
    def batch(self, report: BatchReport) -> None: ...


@dataclass
class Conversation:
    """How a run talks to whoever started it. ``ask`` is None when nobody can answer (no terminal)."""

    info: Callable[[str], None]
    warn: Callable[[str], None]
    summary: Callable[[Summary], None]
    ask: Callable[[str, bool], bool] | None  # (question, default) -> answer
    reconciled: Callable[[Reconciliation], None]
    progress: Callable[[int], ProgressDisplay]  # the number of recipients to send -> the display


@dataclass
class SendResult:
    summary: Summary
    totals: RunTotals | None  # None for a dry run
    counts: dict[str, int]  # the issue's rows per state after the run
    provider: Provider  # closed; its name and capabilities remain
    declined: bool = False  # the user answered no: nothing was frozen or sent
    # Several workers: rows of ``counts`` still pending or sending that other live workers have reserved or
    # claimed (theirs to finish: not this run's unfinished business).
    others: int = 0


def send_issue(settings: Settings, ref: str, options: SendOptions, talk: Conversation, *, dry_run: bool = False,
               yes: bool = False, allow_changed: bool = False) -> SendResult:
    """Send (or resume) the issue ``ref`` (a path or an id); ``dry_run`` writes nothing anywhere."""
    if not dry_run:
        refuse_test_mode(settings, "send")
    built = build_issue(settings, ref)
    check_issue(settings, built, options.ignore_lint, talk.warn, enforce=_new_content(settings, built),
                nothing="nothing was frozen or sent")
    provider = open_provider(settings)
    try:
        secret = signing_secret(settings, provider, talk.warn)
        # Read-only first: the plan's provider (a plan bound to another one) and what the plan would be (a
        # segment of nobody, a frozen segment, an invalid list) refuse before the provider is asked anything
        # or the ledger is written.
        with open_ledger(settings, readonly=True) as ledger:
            options = _settle_route(ledger, built.issue.id, provider, options, talk, dry_run=dry_run, yes=yes)
            look = SendRun(settings, built, provider, ledger, options, secret=secret)  # validates the list
            if dry_run:
                summary = look.summary()
                talk.summary(summary)
                return SendResult(summary, None, summary.counts, provider)
            look.refuse_nobody()  # the summary's counts come later, under the lease: one pass fewer
        preflight(provider, talk.warn)
        with open_ledger(settings) as ledger:
            if settings.unsubscribe.url == PROVIDER_MANAGED:
                _sync_unsubscribes(provider, ledger, talk)
            # The look's check of the list is kept if the file has not changed since (SendRun._check_list).
            run = SendRun(settings, built, provider, ledger, options, secret=secret, checked=look.checked)
            with LeaseKeeper(ledger, built.issue.id) as keeper, _sigterm_as_interrupt():
                summary = run.summary()
                talk.summary(summary)
                unknown = summary.counts["unknown"]
                if unknown and not yes and not options.resend_unknown and talk.ask is not None:
                    if _offer_reconcile(provider, ledger, run, talk, unknown):
                        summary = run.summary()  # some may be sent, or back to pending, now
                if not _confirm(summary, talk, yes=yes, allow_changed=allow_changed):
                    return SendResult(summary, None, summary.counts, provider, declined=True)
                run.freeze_plan(keeper.holder)
                with talk.progress(summary.sending_now) as progress:
                    totals = run.send(keeper.holder, on_batch=progress.batch, keeper=keeper,
                                      on_interrupt=lambda in_flight: talk.warn(_interrupted(in_flight, provider)))
            others = ledger.others_unfinished(summary.issue_id, keeper.holder, stale_after=keeper.stale_after)
            return SendResult(summary, totals, ledger.counts(summary.issue_id), provider, others=others)
    finally:
        provider.close()


def check_issue(settings: Settings, built: Build, ignore: Collection[str], warn: Callable[[str], None], *,
                enforce: bool = True, nothing: str = "nothing was sent") -> None:
    """``newsletter lint``'s checks before anything is frozen or sent (docs/sending.md, "Checks before a
    send"): errors refuse, unless their check is in ``ignore``; warnings are said and do not stop.

    ``enforce`` False (a resume of content already sent to some) says the errors as warnings: the
    first run let them through, and stopping half-way would help nobody.
    """
    _check_ignorable(ignore)
    facts = provider_facts(settings)
    message = personalizer(settings, built.compiled, facts=facts).message(sample_subscriber(built))
    errors = []
    for finding in for_sending(lint_build(settings, built, message, facts)):
        if finding.level == "error" and finding.check in ignore:
            warn(f"{_place(finding)}: {finding.message} (an error, let through by --ignore-lint {finding.check})")
        elif finding.level == "error" and enforce:
            errors.append(finding)
        else:
            warn(f"{_place(finding)}: {finding.message} [{finding.check}]")
    if errors:
        checks = sorted({f.check for f in errors} - NOT_IGNORABLE)
        override = (f"; if you know better, {' '.join(f'--ignore-lint {c}' for c in checks)} lets "
                    f"{'it' if len(checks) == 1 else 'them'} through") if checks else ""
        raise NewsletterError(f"{len(errors)} lint error(s), {nothing}:\n" + "\n".join(f"  {f}" for f in errors),
                              hint=f"fix {'it' if len(errors) == 1 else 'them'} and run again (`newsletter lint "
                                   f"{built.issue.id}` checks without sending){override}")


def _check_ignorable(ignore: Collection[str]) -> None:
    for name in ignore:
        if name in NOT_IGNORABLE:
            raise ConfigError(f"--ignore-lint {name}: this check cannot be ignored (without it there is nothing "
                              f"to send)", hint="fix what it reports; `newsletter lint ISSUE` shows it")
        if name not in CHECKS:
            raise ConfigError(f"--ignore-lint {name}: no such check", hint=f"checks: {', '.join(CHECKS)}")


def _place(finding: Finding) -> str:
    return f"{finding.path}:{finding.line}" if finding.line else finding.path


def _new_content(settings: Settings, built: Build) -> bool:
    """True unless this issue's plan is frozen with this very content (a resume): then lint's errors
    were judged by the first run."""
    with open_ledger(settings, readonly=True) as ledger:
        record = ledger.issue(built.issue.id)
    return record is None or record.content_hash != built.compiled.content_hash


def _interrupted(in_flight: int, provider: Provider) -> str:
    """What the first Ctrl-C says (the second raises StoppedNow)."""
    if not in_flight:
        return "stopping: no batch is in flight; the rest stay pending for the next run"
    fate = "they are retried under the same key by the next run" if provider.idempotent else "they become unknown"
    return (f"finishing {in_flight} batch{'es' if in_flight != 1 else ''} in flight; Ctrl-C (or kill) again to stop now "
            f"({fate})")


def exit_code(counts: dict[str, int], others: int = 0) -> int:
    """The exit code of a run that finished (docs/sending.md): 4 pending left (besides the ``others`` that
    other live workers are sending), 3 failed or in doubt, else 0."""
    if counts["pending"] + counts["sending"] > others:
        return 4
    if counts["failed"] or counts["unknown"]:
        return 3
    return 0


def refuse_test_mode(settings: Settings, command: str) -> None:
    """A provider in test mode accepts and delivers nothing: a real send would record everyone as sent."""
    if settings.provider.test_mode:
        raise ConfigError(f"[provider] test_mode is on: {settings.provider.name} accepts messages in test mode "
                          f"without delivering them, and `{command}` would record every reader as sent",
                          path=settings.origins.get("provider.test_mode"),
                          hint="for proof copies use `newsletter test ISSUE --to ADDR`; set test_mode = false "
                               "to send for real")


def preflight(provider: Provider, warn: Callable[[str], None]) -> None:
    """Ask the provider about its settings before anything is sent: a wrong key or a stream that cannot
    carry this newsletter stops here, and what it warns about is said (see Provider.preflight). The
    question is paced and asked again after a 429, 5xx or dropped connection."""
    with PacedSession(provider.read_rate) as session:
        for warning in provider.preflight(session):
            warn(warning)


def signing_secret(settings: Settings, provider: Provider, warn: Callable[[str], None]) -> bytes:
    """The unsubscribe signing secret from the environment; the outbox may fall back to the preview key."""
    if "{token}" not in settings.unsubscribe.url:
        return PREVIEW_SECRET  # no signed links in this newsletter
    secret = settings.secret("unsubscribe", "secret_env")
    if secret:
        return secret.encode()
    name = settings.unsubscribe.secret_env
    if provider.name == "outbox":
        warn(f"${name} is not set: the outbox's unsubscribe links are signed with the preview-only key "
             f"(set it before sending through a real provider)")
        return PREVIEW_SECRET
    raise ConfigError(f"${name} is not set, and unsubscribe links must be signed with a secret",
                      hint=f"export {name}=<a long random string>, e.g. from "
                           f"`python -c 'import secrets; print(secrets.token_urlsafe(32))'`; keep it the same "
                           f"for every send so old links keep working")


def _sync_unsubscribes(provider: Provider, ledger: Ledger, talk: Conversation) -> None:
    """With the provider's own unsubscribe links, those who used them are on its list, not in ours: bring
    them in before planning, so they are left out rather than refused (and failed) one by one."""
    try:
        report = sync_suppressions(provider, ledger)
    except ProviderError as err:  # the provider refuses them anyway: a nuisance, not a danger
        talk.warn(f"could not read {provider.name}'s suppressions before sending ({err.message}); those who "
                  f"unsubscribed through {provider.name} since the last sync will be refused by it and marked "
                  f"failed")
        return
    if report.added:
        talk.info(f"Suppressed: {report.added} new from {provider.name} (unsubscribes, bounces, complaints)")


def _settle_route(ledger: Ledger, issue_id: str, provider: Provider, options: SendOptions, talk: Conversation,
                  *, dry_run: bool, yes: bool) -> SendOptions:
    """Refuse a plan bound to another provider before anything is asked of the provider or written
    (``SendRun`` checks again under the lease); for a plan an older version left ``unknown``, ask on a
    terminal whether it went through this provider. Returns the options, with the answer."""
    record = ledger.issue(issue_id)
    verdict = route_verdict(record, provider, ledger, restart=options.restart)
    if options.restart and verdict == NEW:
        talk.info(f"Restart: issue {issue_id} has no plan yet; nothing to forget")
    if verdict != ASK:
        return options
    if dry_run:
        talk.warn(f"{unknown_question(record, provider, ledger)} A real run asks this first (on a terminal).")
        return replace(options, provider_confirmed=True)
    if yes or talk.ask is None:
        raise unknown_refused(record, provider, ledger, asked=False)
    if not talk.ask(unknown_question(record, provider, ledger), False):
        raise unknown_refused(record, provider, ledger, asked=True)
    return replace(options, provider_confirmed=True)


def _offer_reconcile(provider: Provider, ledger: Ledger, run: SendRun, talk: Conversation, unknown: int) -> bool:
    """Before sending, on a terminal: ask, then reconcile as ``newsletter reconcile`` does. True if it ran.

    The caller holds the issue's lease. A provider that cannot answer is not asked (the run's
    last line says so). A look-up that fails mid-way keeps what it resolved and the send goes
    on: the rest stay ``unknown``, never sent.
    """
    if not provider.can("reconcile"):
        return False
    who = f"{unknown} recipient{'s are' if unknown != 1 else ' is'} in doubt"
    if not talk.ask(f"{who}; ask {provider.name} now?", True):
        return False
    try:
        report = reconcile_issue(run.issue_id, iter_valid_subscribers(run.list_path), provider, ledger, run.personalizer)
    except ReconcileInterrupted as err:
        talk.reconciled(err.report)
        if isinstance(err.__cause__, AuthError):
            raise err.__cause__  # the send would be refused too: stop here, nothing was sent
        talk.warn(f"{err.message}; sending the others now")
        return True
    talk.reconciled(report)
    return True


def _confirm(summary: Summary, talk: Conversation, *, yes: bool, allow_changed: bool) -> bool:
    """False when the user answered no."""
    if summary.sending_now == 0 and not summary.in_doubt and summary.restarting is None:
        return True  # nothing will be sent: no question to ask (cron and scripts need no --yes for that)
    if summary.content_changed:
        if yes and not allow_changed:
            raise NewsletterError(f"issue {summary.issue_id} changed since its first send; refusing to resume "
                                  f"it without asking (--yes, or cron's dispatch)", hint=f"check the change, then run `newsletter send "
                                                       f"{summary.issue_id} --yes --allow-changed` to send the new "
                                                       f"content to the remaining recipients")
        if not yes and not _ask(talk, "The issue changed since its first send. Send the NEW content to the "
                                      "remaining recipients?"):
            return False
    if yes:
        return True
    if summary.restarting is not None:  # one question: the trial is dropped only if the send goes on
        trial = "outbox trial" if summary.restarting_from in ("", "outbox") else "plan that reached nobody"
        return _ask(talk, f"Forget the {trial} of {summary.issue_id} and send {summary.sending_now} email(s) "
                          f"through {summary.provider} now?")
    return _ask(talk, f"Send {summary.sending_now} email(s) now?")


def _ask(talk: Conversation, question: str) -> bool:
    if talk.ask is None:
        raise NewsletterError("not sending without confirmation, and there is no terminal to ask on",
                              hint="pass --yes to send from scripts and cron; --dry-run shows what would be sent")
    return talk.ask(question, False)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``kill`` (cron timeouts, systemd stop) stops like Ctrl-C: batches in flight are recorded first."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
