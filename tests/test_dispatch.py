"""The send loop against a scripted in-test Provider: retries, backoff, Retry-After, auth abort, in-doubt batches."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
from helpers import SleepClock

from newsletter.config import resolve
from newsletter.errors import (AuthError, LedgerError, NewsletterError, NoAnswer, NotAccepted, ProviderError,
                             RecipientError)
from newsletter.ledger.sqlite import SQLiteLedger
from newsletter.models import Message, Outcome
from newsletter.providers.base import Batch, Provider, Request
from newsletter.sending.outcomes import Verdict, Work, decide_failure
from newsletter.sending.pool import Dispatcher
from newsletter.sending.ratelimit import Backoff, TokenBucket, wait_words

ISSUE = "weekly"
SETTINGS = resolve({}, {}, {}, source=None)
FAST = Backoff(base=0.001, cap=0.005)


class ScriptedProvider(Provider):
    """Answers each call with the next scripted step: "ok", an exception, or a function of the batch."""

    name = "scripted"
    max_batch = 2
    default_rate = 0.0
    needs_api_key = False
    delivers_through_session = False  # answers from its script: a bug in it may come after a delivery

    def __init__(self, *steps, idempotent=False):
        super().__init__(SETTINGS)
        self.steps = list(steps)
        self.idempotent = idempotent
        self.calls: list[tuple[str, list[str]]] = []
        self.timed: list[tuple[str, list[str], float]] = []
        self._lock = threading.Lock()

    def build_request(self, batch: Batch) -> Batch:
        return batch

    def parse_response(self, batch: Batch, outcomes: list[Outcome]) -> list[Outcome]:
        return outcomes

    def transmit(self, batch: Batch, session) -> list[Outcome]:
        with self._lock:
            self.calls.append((batch.batch_id, [m.to for m in batch.messages]))
            self.timed.append((batch.batch_id, [m.to for m in batch.messages], time.monotonic()))
            step = self.steps.pop(0) if self.steps else "ok"
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            return step(batch)
        return [Outcome(m.to, "sent", provider_id=f"id-{m.to}") for m in batch.messages]


def message(to: str) -> Message:
    return Message(issue_id=ISSUE, to=to, subject="Hi", html="<p>Hi</p>", text="Hi", sender="n@example.com")


EMAILS = [f"r{n}@example.com" for n in range(5)]


@pytest.fixture
def ledger(tmp_path):
    with SQLiteLedger(tmp_path / "ledger.sqlite3") as db:
        db.create_plan(ISSUE, content_hash="h", subject="Hi", segment="", emails=EMAILS)
        db.acquire_lease(ISSUE, "me", stale_after=60)
        yield db


def run(ledger, provider, emails=EMAILS, *, concurrency=1, max_attempts=3, limiter=None):
    dispatcher = Dispatcher(ledger, provider, ISSUE, "me", concurrency=concurrency, max_attempts=max_attempts,
                            backoff=FAST, limiter=limiter)
    dispatcher.start()
    for group in provider.cut_batches(message(e) for e in emails):
        dispatcher.submit(Work(group))
    return dispatcher.finish()


def states(ledger, only=EMAILS[:2]):
    """State per address, for the addresses a test sent to (the rest of the plan stays pending)."""
    rows = ledger.rows(ISSUE, ("pending", "sending", "sent", "failed", "unknown"))
    return {r.email: r.state for r in rows if r.email in only}


def test_every_recipient_is_sent_once_in_batches_of_the_provider_size(ledger):
    provider = ScriptedProvider()
    totals = run(ledger, provider, concurrency=3)
    assert totals.sent == 5 and not totals.aborted
    assert sorted(len(emails) for _, emails in provider.calls) == [1, 2, 2]
    assert sorted(e for _, emails in provider.calls for e in emails) == EMAILS
    assert set(states(ledger, EMAILS).values()) == {"sent"}
    assert {r.provider_id for r in ledger.rows(ISSUE, ("sent",))} == {f"id-{e}" for e in EMAILS}


def test_a_5xx_puts_the_batch_back_to_pending_and_it_is_claimed_again_under_a_new_batch_id(ledger):
    provider = ScriptedProvider(NotAccepted("HTTP 500", status=500, retryable=True))
    totals = run(ledger, provider, EMAILS[:2])
    (first, who1), (second, who2) = provider.calls
    assert who1 == who2 and first != second
    assert totals.sent == 2 and totals.retried == 2
    assert {r.attempts for r in ledger.rows(ISSUE, ("sent",))} == {2}


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_provider_error_answer_is_certainly_not_accepted(ledger, status):
    provider = ScriptedProvider(NotAccepted(f"HTTP {status}", status=status, retryable=True))
    totals = run(ledger, provider, EMAILS[:2])
    assert len({batch for batch, _ in provider.calls}) == 2 and totals.sent == 2 and totals.unknown == 0


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_may_come_after_the_provider_accepted_so_it_is_never_resent_blindly(ledger, status):
    provider = ScriptedProvider(NoAnswer(f"HTTP {status}", status=status, retryable=True))
    totals = run(ledger, provider, EMAILS[:2])
    assert len(provider.calls) == 1 and totals.unknown == 2
    assert set(states(ledger).values()) == {"unknown"}
    assert f"may or may not have been sent (HTTP {status})" in ledger.rows(ISSUE)[0].reason


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_is_retried_under_the_same_batch_id_by_an_idempotent_provider(ledger, status):
    provider = ScriptedProvider(NoAnswer(f"HTTP {status}", status=status, retryable=True), idempotent=True)
    totals = run(ledger, provider, EMAILS[:2])
    (first, _), (second, _) = provider.calls
    assert first == second and totals.sent == 2


def run_waiting_at_most(ledger, provider, emails, max_wait):
    dispatcher = Dispatcher(ledger, provider, ISSUE, "me", concurrency=1, backoff=FAST, max_wait=max_wait)
    dispatcher.start()
    for group in provider.cut_batches(message(e) for e in emails):
        dispatcher.submit(Work(group))
    return dispatcher.finish()


def test_a_retry_after_longer_than_a_run_waits_stops_it_as_incomplete(ledger):
    provider = ScriptedProvider(NotAccepted("HTTP 429", status=429, retryable=True, retry_after=2))
    totals = run_waiting_at_most(ledger, provider, EMAILS[:4], max_wait=1)
    assert len(provider.calls) == 1
    assert totals.error is None  # incomplete (exit 4), not an error
    assert totals.aborted == ("scripted asked to wait 2 s before the next request (HTTP 429), longer than the "
                              "1 s a run waits; run again after that")
    assert set(states(ledger, EMAILS[:4]).values()) == {"pending"}


def test_a_long_retry_after_on_an_in_doubt_batch_keeps_it_for_the_same_key_next_run(ledger):
    provider = ScriptedProvider(ProviderError("no answer", retryable=True),
                                NotAccepted("HTTP 429", status=429, retryable=True, retry_after=2),
                                idempotent=True)
    totals = run_waiting_at_most(ledger, provider, EMAILS[:2], max_wait=1)
    assert "asked to wait 2 s" in totals.aborted and len(provider.calls) == 2
    assert list(ledger.in_doubt(ISSUE).values()) == [EMAILS[:2]]  # the next run retries it under its key


def test_a_run_waits_15_minutes_at_most_by_default(ledger):
    assert Dispatcher(ledger, ScriptedProvider(), ISSUE, "me").max_wait == 15 * 60
    assert [wait_words(s) for s in (2, 900, 7200, 5400)] == ["2 s", "15 min", "2 h", "1.5 h"]


def test_exhausted_retries_say_why_the_run_is_incomplete(ledger):
    provider = ScriptedProvider(*[NotAccepted("HTTP 503", status=503, retryable=True)] * 3)
    totals = run(ledger, provider, EMAILS[:2], max_attempts=3)
    assert not totals.aborted
    assert totals.incomplete_reason() == "2 recipient(s) still failing transiently after 3 tries"


def test_a_429_with_retry_after_pauses_every_worker(ledger):
    answered = []

    def too_many(batch):
        answered.append(time.monotonic())
        raise NotAccepted("HTTP 429", status=429, retryable=True, retry_after=0.3)

    provider = ScriptedProvider(too_many)
    totals = run(ledger, provider, EMAILS[:4])  # two batches, one worker
    assert totals.sent == 4
    (_, first), (_, second), (_, third) = [(b, e) for b, e, _ in provider.timed]
    assert second == EMAILS[2:4]  # the other batch, not the one that got the 429 ...
    assert provider.timed[1][2] - answered[0] >= 0.29  # ... also waited for Retry-After
    assert third == EMAILS[:2]


def test_transient_failures_stop_after_max_attempts_and_leave_recipients_pending(ledger):
    error = NotAccepted("HTTP 503", status=503, retryable=True)
    provider = ScriptedProvider(*[error] * 20)
    totals = run(ledger, provider, EMAILS[:2], max_attempts=3)
    assert len(provider.calls) == 3
    assert states(ledger) == {"r0@example.com": "pending", "r1@example.com": "pending"}
    assert totals.exhausted == {"r0@example.com", "r1@example.com"}


def test_a_provider_that_keeps_failing_ends_the_run(ledger):
    provider = ScriptedProvider(*[NotAccepted("HTTP 503", status=503, retryable=True)] * 100)
    totals = run(ledger, provider, max_attempts=1)
    assert "kept failing" in totals.aborted
    assert len(provider.calls) == 3  # three batches in a row gave up: no point trying the rest
    assert set(states(ledger, EMAILS).values()) == {"pending"}


def test_an_auth_failure_aborts_at_once_and_marks_nothing_sent(ledger):
    provider = ScriptedProvider(AuthError("scripted refused the API key (HTTP 401)", status=401))
    totals = run(ledger, provider)
    assert len(provider.calls) == 1
    assert isinstance(totals.error, AuthError) and totals.sent == 0
    assert set(states(ledger, EMAILS).values()) == {"pending"}


def test_no_answer_from_a_provider_without_idempotency_makes_the_batch_unknown(ledger):
    provider = ScriptedProvider(ProviderError("scripted: no answer within 30 s", retryable=True))
    totals = run(ledger, provider, EMAILS[:2])
    assert len(provider.calls) == 1  # never re-sent blindly
    assert states(ledger) == {"r0@example.com": "unknown", "r1@example.com": "unknown"}
    assert totals.unknown == 2
    assert "may or may not have been sent" in ledger.rows(ISSUE)[0].reason


def test_no_answer_from_an_idempotent_provider_retries_the_same_batch_id(ledger):
    provider = ScriptedProvider(ProviderError("no answer", retryable=True), idempotent=True)
    totals = run(ledger, provider, EMAILS[:2])
    (first, who1), (second, who2) = provider.calls
    assert first == second and who1 == who2  # the same idempotency key
    assert totals.sent == 2 and set(states(ledger).values()) == {"sent"}


def test_an_idempotent_retry_that_never_gets_an_answer_ends_unknown(ledger):
    provider = ScriptedProvider(*[ProviderError("no answer", retryable=True)] * 5, idempotent=True)
    run(ledger, provider, EMAILS[:2], max_attempts=2)
    assert [batch for batch, _ in provider.calls] == [provider.calls[0][0]] * 2
    assert set(states(ledger).values()) == {"unknown"}


def test_a_same_key_retry_is_not_sent_once_the_provider_has_forgotten_the_key(ledger):
    """Resend keeps a key 24 h: a retry under an expired key would be a second copy, so the batch is unknown."""
    clock = [1_000_000.0]

    def no_answer_for_a_day(batch):
        clock[0] += 23 * 3600 + 1  # the answer never comes, and by the retry the key is gone
        raise ProviderError("no answer", retryable=True)

    provider = ScriptedProvider(no_answer_for_a_day, idempotent=True)
    provider.idempotency_window = 23 * 3600
    dispatcher = Dispatcher(ledger, provider, ISSUE, "me", backoff=FAST, clock=lambda: clock[0])
    dispatcher.start()
    dispatcher.submit(Work([message(e) for e in EMAILS[:2]]))
    totals = dispatcher.finish()
    assert len(provider.calls) == 1 and totals.unknown == 2
    assert set(states(ledger).values()) == {"unknown"}
    assert "past the time scripted keeps its idempotency key" in ledger.rows(ISSUE)[0].reason


@pytest.mark.parametrize("age, sent", [(23 * 3600 - 60, True), (23 * 3600 + 60, False), (None, False)])
def test_an_in_doubt_batch_is_resent_under_its_key_only_while_the_key_is_remembered(ledger, age, sent):
    provider = ScriptedProvider(idempotent=True)
    provider.idempotency_window = 23 * 3600
    ledger.claim(ISSUE, "old", EMAILS[:2], "me")
    now = 1_000_000.0
    dispatcher = Dispatcher(ledger, provider, ISSUE, "me", backoff=FAST, clock=lambda: now)
    dispatcher.start()
    dispatcher.submit(Work([message(e) for e in EMAILS[:2]], batch_id="old",
                           claimed_at=None if age is None else now - age))
    dispatcher.finish()
    assert provider.calls == ([("old", EMAILS[:2])] if sent else [])
    assert set(states(ledger).values()) == {"sent" if sent else "unknown"}


def test_a_provider_that_keeps_keys_forever_resends_an_in_doubt_batch_of_any_age(ledger):
    provider = ScriptedProvider(idempotent=True)  # the outbox: the same batch id rewrites the same files
    ledger.claim(ISSUE, "old", EMAILS[:2], "me")
    dispatcher = Dispatcher(ledger, provider, ISSUE, "me", backoff=FAST)
    dispatcher.start()
    dispatcher.submit(Work([message(e) for e in EMAILS[:2]], batch_id="old"))
    dispatcher.finish()
    assert provider.calls == [("old", EMAILS[:2])] and set(states(ledger).values()) == {"sent"}


def test_a_429_on_an_in_doubt_batch_keeps_it_in_doubt(ledger):
    """The first try may have been accepted; a later 429 says nothing about it."""
    provider = ScriptedProvider(ProviderError("no answer", retryable=True),
                                NotAccepted("HTTP 429", status=429, retryable=True), idempotent=True)
    run(ledger, provider, EMAILS[:2])
    assert len({batch for batch, _ in provider.calls}) == 1 and len(provider.calls) == 3
    assert set(states(ledger).values()) == {"sent"}


def test_a_connection_that_was_never_made_is_retried_not_in_doubt(ledger):
    """Through the shared send path: a refused connection is NotAccepted there, so the batch goes back to
    pending and is claimed again, never unknown."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connections are refused
    provider = Posting(f"http://127.0.0.1:{port}/email")
    totals = run(ledger, provider, EMAILS[:2])
    assert len(provider.batch_ids) == 2 and totals.sent == 2 and totals.unknown == 0
    assert len(set(provider.batch_ids)) == 2  # claimed again under a new batch id


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: connections are refused


# Requests that provably never left this machine (issue 10): what the shared path raises, and where the batch goes.
NEVER_LEFT = {
    "InvalidSchema": ("ftp://127.0.0.1/email", False, "'ftp://127.0.0.1'"),
    "InvalidURL": ("http:///email", False, "'http://'"),
    "MissingSchema": ("api.example.com/email", False, "'api.example.com'"),
    "refused connection": ("http://127.0.0.1:{port}/email", True, "127.0.0.1:{port} (connection refused)"),
    "DNS failure": ("http://newsletter-test.invalid/email", True, "newsletter-test.invalid (host name not resolved)"),
}


@pytest.mark.parametrize("case", sorted(NEVER_LEFT))
def test_a_request_that_never_left_is_not_accepted_and_names_the_host(case):
    url, retryable, where = NEVER_LEFT[case]
    port = refused_port()
    provider = Posting(url.format(port=port))
    provider.api_key = "SECRET-key-never-shown"
    with requests.Session() as session, pytest.raises(NotAccepted) as caught:
        provider.send_batch(Batch(ISSUE, "b1", (message("r0@example.com"),)), session)
    assert caught.value.retryable is retryable and where.format(port=port) in caught.value.message
    assert "nothing was sent" in caught.value.message and "SECRET" not in str(caught.value)


@pytest.mark.parametrize("case", sorted(NEVER_LEFT))
def test_a_batch_whose_request_never_left_goes_back_to_pending_never_unknown(ledger, case):
    url, retryable, _ = NEVER_LEFT[case]
    provider = Posting(url.format(port=refused_port()), failures=99)
    totals = run(ledger, provider, EMAILS[:2], max_attempts=2)
    assert set(states(ledger).values()) == {"pending"} and totals.unknown == 0 and ledger.in_doubt(ISSUE) == {}
    if retryable:  # tried again under a new batch id, then left pending for the next run
        assert len(set(provider.batch_ids)) == 2 and totals.exhausted == set(EMAILS[:2])
    else:  # trying again cannot help: the run stops at once, saying what to fix
        assert len(provider.batch_ids) == 1 and "api_base" in str(totals.error)


def test_the_progress_line_says_the_real_back_off():
    """The "retry in X" of a report is the delay the batch is then held for."""
    reports, delays = [], []
    provider = ScriptedProvider(NotAccepted("HTTP 503", status=503, retryable=True))
    with SQLiteLedger(":memory:") as db:
        db.create_plan(ISSUE, content_hash="h", subject="Hi", segment="", emails=EMAILS[:2])
        db.acquire_lease(ISSUE, "me", stale_after=60)
        dispatcher = Dispatcher(db, provider, ISSUE, "me", backoff=Backoff(base=0.2, cap=0.2),
                                on_batch=reports.append)
        later = dispatcher._later
        dispatcher._later = lambda work, delay: (delays.append(delay), later(work, delay))
        dispatcher.start()
        dispatcher.submit(Work([message(e) for e in EMAILS[:2]]))
        dispatcher.finish()
    assert len(delays) == 1 and 0.1 <= delays[0] <= 0.2
    assert reports[0].note == f"HTTP 503; retry in {wait_words(delays[0])}"


def test_a_definite_refusal_of_the_whole_request_stops_the_run_and_loses_nobody(ledger):
    """A 422 'From address not verified' would refuse every batch: stop, keep everyone pending."""
    provider = ScriptedProvider(ProviderError("HTTP 422: From address not verified", status=422))
    totals = run(ledger, provider, EMAILS[:6])
    assert len(provider.calls) == 1 and totals.failed == 0 and totals.sent == 0
    assert "From address not verified" in str(totals.error) and "run stopped" in str(totals.error)
    assert set(states(ledger, EMAILS[:6]).values()) == {"pending"}


def test_the_adapters_hint_survives_a_stopped_run(ledger):
    provider = ScriptedProvider(ProviderError("postmark: stream 'news' not found", status=422,
                                              hint="check [provider] message_stream"))
    totals = run(ledger, provider, EMAILS[:2])
    assert "(check [provider] message_stream; then run `newsletter send` again)" in str(totals.error)


def test_per_recipient_outcomes_are_recorded_and_only_the_transient_ones_retried(ledger):
    def mixed(batch):
        return [Outcome("r0@example.com", "sent", provider_id="m0"),
                Outcome("r1@example.com", "failed", reason="invalid address"),
                Outcome("r2@example.com", "retry", reason="throttled")]  # r3: no outcome at all

    provider = ScriptedProvider(mixed)
    provider.max_batch = 4
    run(ledger, provider, EMAILS[:4])
    assert states(ledger, EMAILS[:4]) == {"r0@example.com": "sent", "r1@example.com": "failed", "r2@example.com": "sent",
                              "r3@example.com": "unknown"}
    assert provider.calls[1][1] == ["r2@example.com"]
    assert "no outcome" in {r.email: r.reason for r in ledger.rows(ISSUE)}["r3@example.com"]


def test_an_address_twice_in_a_batch_is_sent_once(ledger):
    provider = ScriptedProvider()
    provider.max_batch = 4
    run(ledger, provider, ["r0@example.com", "R0@example.com", "r1@example.com"])
    assert provider.calls[0][1] == ["r0@example.com", "r1@example.com"]


def test_losing_the_lease_stops_sending(ledger):
    ledger._db.execute("UPDATE leases SET holder = 'someone-else'")
    provider = ScriptedProvider()
    totals = run(ledger, provider)
    assert provider.calls == []
    assert isinstance(totals.error, LedgerError) and "took over" in totals.aborted


def test_an_unexpected_error_stops_the_run_with_one_error_and_the_batch_unknown(ledger):
    """Was: rows left `sending` and the RuntimeError re-raised (a traceback). The batch may have been
    accepted (this adapter has its own send path), so it is `unknown`, never re-sent blindly, and the run
    stops with a NewsletterError chained to the bug."""
    provider = ScriptedProvider(RuntimeError("disk on fire"))
    totals = run(ledger, provider, EMAILS[:4])
    assert len(provider.calls) == 1  # stopped: the other batch stays pending
    assert type(totals.error) is NewsletterError and isinstance(totals.error.__cause__, RuntimeError)
    assert ("unexpected RuntimeError from the scripted adapter while sending batch" in str(totals.error)
            and "its 2 recipient(s) are marked unknown" in str(totals.error))
    assert states(ledger, EMAILS[:4]) == {"r0@example.com": "unknown", "r1@example.com": "unknown",
                                          "r2@example.com": "pending", "r3@example.com": "pending"}
    assert ledger.in_doubt(ISSUE) == {}
    assert "disk on fire" in ledger.rows(ISSUE)[0].reason and totals.unknown == 2


class Posting(Provider):
    """The real shared send path to ``url`` for the first ``failures`` tries; the later ones are taken as if
    the provider had accepted them (no network)."""

    name = "posting"
    max_batch = 2
    default_rate = 0.0
    needs_api_key = False

    def __init__(self, url: str, *, failures: int = 1):
        super().__init__(SETTINGS)
        self.url, self.failures = url, failures
        self.batch_ids: list[str] = []

    def build_request(self, batch):
        self.batch_ids.append(batch.batch_id)
        return Request("POST", self.url, json={"to": [m.to for m in batch.messages]})

    def transmit(self, request, session):
        if len(self.batch_ids) <= self.failures:
            return super().transmit(request, session)
        return None

    def parse_response(self, batch, response):
        return [Outcome(m.to, "sent", provider_id=f"id-{m.to}") for m in batch.messages]


class BrokenBuilder(Provider):
    """The shared send path (build_request -> session.request -> parse_response) with a buggy adapter verb."""

    name = "broken"
    max_batch = 2
    default_rate = 0.0
    needs_api_key = False

    def __init__(self, fail_in: str):
        super().__init__(SETTINGS)
        self.fail_in = fail_in

    def build_request(self, batch):
        if self.fail_in == "build":
            raise KeyError("Metadata")
        return Request("POST", "http://127.0.0.1:9/never")

    def parse_response(self, batch, response):
        raise AssertionError("unreachable")


def test_an_unexpected_error_before_any_request_puts_the_batch_back_to_pending(ledger):
    totals = run(ledger, BrokenBuilder("build"), EMAILS[:2])
    assert set(states(ledger).values()) == {"pending"}  # no request was made: nothing can have been accepted
    assert "no request was made, so its 2 recipient(s) are back to pending" in str(totals.error)
    assert isinstance(totals.error.__cause__, KeyError)


def test_an_unexpected_error_after_a_request_leaves_the_batch_unknown(ledger, monkeypatch):
    def answered(session, method, url, **kw):
        session.requests_made += 1  # what CountingSession.request counts, without a network
        raise ValueError("bad answer")

    monkeypatch.setattr("newsletter.sending.outcomes.CountingSession.request", answered)
    totals = run(ledger, BrokenBuilder("parse"), EMAILS[:2])
    assert set(states(ledger).values()) == {"unknown"} and isinstance(totals.error.__cause__, ValueError)


def test_a_bug_in_the_send_loop_stops_it_with_one_error_not_a_raw_exception(ledger, monkeypatch):
    monkeypatch.setattr(SQLiteLedger, "record", lambda *a, **kw: 1 / 0)
    totals = run(ledger, ScriptedProvider(), EMAILS[:2])
    assert type(totals.error) is NewsletterError and isinstance(totals.error.__cause__, ZeroDivisionError)
    assert "unexpected ZeroDivisionError in the send loop" in str(totals.error)


# -- one recipient's bad data ---------------------------------------------------------------
def test_a_recipient_error_fails_that_recipient_and_sends_the_others_in_a_new_batch(ledger):
    provider = ScriptedProvider(RecipientError("r1@example.com", "the To name of r1@example.com contains a "
                                               "line break", hint="fix that row"))
    provider.max_batch = 4
    totals = run(ledger, provider, EMAILS[:4])
    assert not totals.aborted and totals.error is None
    (first, who1), (second, who2) = provider.calls
    assert first != second and who2 == ["r0@example.com", "r2@example.com", "r3@example.com"]
    assert states(ledger, EMAILS[:4]) == {"r0@example.com": "sent", "r1@example.com": "failed",
                                          "r2@example.com": "sent", "r3@example.com": "sent"}
    reason = {r.email: r.reason for r in ledger.rows(ISSUE, ("failed",))}["r1@example.com"]
    assert reason == "the To name of r1@example.com contains a line break (fix that row)"
    assert totals.failed == 1 and totals.sent == 3 and ledger.in_doubt(ISSUE) == {}


def test_recipient_errors_one_after_another_each_fail_alone(ledger):
    provider = ScriptedProvider(RecipientError("r0@example.com", "bad"), RecipientError("R2@example.com", "bad"))
    provider.max_batch = 4
    totals = run(ledger, provider, EMAILS[:4])
    assert states(ledger, EMAILS[:4]) == {"r0@example.com": "failed", "r1@example.com": "sent",
                                          "r2@example.com": "failed", "r3@example.com": "sent"}
    assert totals.failed == 2 and not totals.aborted


def test_an_idempotent_provider_gets_the_others_under_the_same_batch_id(ledger):
    """The outbox writes file by file: those written before the bad recipient are rewritten, never doubled."""
    provider = ScriptedProvider(RecipientError("r1@example.com", "bad"), RecipientError("r2@example.com", "bad"),
                                idempotent=True)
    provider.max_batch = 4
    totals = run(ledger, provider, EMAILS[:4])
    assert [who for _, who in provider.calls] == [EMAILS[:4], ["r0@example.com", "r2@example.com", "r3@example.com"],
                                                  ["r0@example.com", "r3@example.com"]]
    assert len({batch for batch, _ in provider.calls}) == 1
    assert states(ledger, EMAILS[:4]) == {"r0@example.com": "sent", "r1@example.com": "failed",
                                          "r2@example.com": "failed", "r3@example.com": "sent"}
    assert totals.failed == 2 and not totals.aborted


def test_a_recipient_error_on_an_in_doubt_batch_makes_that_recipient_unknown(ledger):
    """An earlier try of that very batch went unanswered: it may have reached them before their data changed."""
    provider = ScriptedProvider(ProviderError("no answer", retryable=True),
                                RecipientError("r1@example.com", "bad"), idempotent=True)
    totals = run(ledger, provider, EMAILS[:2])
    assert len({batch for batch, _ in provider.calls}) == 1 and len(provider.calls) == 3
    assert states(ledger) == {"r0@example.com": "sent", "r1@example.com": "unknown"}
    assert not totals.aborted
    assert ledger.rows(ISSUE)[0].reason == ("bad; an earlier try of this batch may have reached them: it may or "
                                            "may not have been sent")


def test_a_recipient_error_after_a_request_makes_the_batch_unknown_without_idempotency(ledger):
    class AfterTheCall(BrokenBuilder):
        def transmit(self, request, session):
            session.requests_made += 1  # as if the request had been made
            raise RecipientError("r1@example.com", "bad")

    totals = run(ledger, AfterTheCall("parse"), EMAILS[:2])
    assert set(states(ledger).values()) == {"unknown"} and not totals.aborted
    assert "may or may not have been sent" in ledger.rows(ISSUE)[0].reason


def test_a_recipient_error_naming_someone_outside_the_batch_is_a_bug(ledger):
    totals = run(ledger, ScriptedProvider(RecipientError("stranger@example.com", "bad")), EMAILS[:2])
    assert set(states(ledger).values()) == {"unknown"} and "unexpected RecipientError" in str(totals.error)


def test_recipient_failed_marks_a_pending_recipient_failed_before_any_batch(ledger):
    reports = []
    dispatcher = Dispatcher(ledger, ScriptedProvider(), ISSUE, "me", on_batch=reports.append)
    dispatcher.recipient_failed(RecipientError("R3@example.com", "the subject would contain a line break"))
    assert states(ledger, ["r3@example.com"]) == {"r3@example.com": "failed"}
    assert dispatcher.totals.failed == 1
    assert reports[0].batch_id == "" and reports[0].states == {"failed": 1}
    assert reports[0].note == "R3@example.com: the subject would contain a line break"


def test_batches_carry_slot_values_and_the_template_when_given(ledger):
    seen = []

    def capture(batch):
        seen.append((batch.slot_values, batch.template))
        return [Outcome(m.to, "sent") for m in batch.messages]

    provider = ScriptedProvider(capture)
    dispatcher = Dispatcher(ledger, provider, ISSUE, "me", concurrency=1, backoff=FAST, template={"html": "T"})
    dispatcher.start()
    dispatcher.submit(Work([message("r0@example.com"), message("r1@example.com")], [["Ada"], ["Bob"]]))
    dispatcher.finish()
    assert seen == [((["Ada"], ["Bob"]), {"html": "T"})]


# -- pacing -------------------------------------------------------------------------------
def test_token_bucket_holds_the_rate():
    clock = SleepClock()
    bucket = TokenBucket(10, burst=1, clock=clock, sleep=clock.sleep)
    for _ in range(11):
        bucket.acquire()
    assert clock.now == pytest.approx(1.0)  # 1 token at once, then 10 per second


def test_token_bucket_pause_delays_everyone_and_zero_rate_is_unlimited():
    clock = SleepClock()
    bucket = TokenBucket(0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        bucket.acquire()
    assert clock.now == 0
    bucket.pause(5)
    bucket.pause(1)  # never shortens
    assert bucket.acquire() == pytest.approx(5)


@pytest.mark.parametrize("attempt, rand, expected", [(1, 0.0, 0.5), (1, 1.0, 1.0), (3, 1.0, 4.0), (10, 1.0, 60.0),
                                                     (10, 0.0, 30.0)])
def test_backoff_is_exponential_with_jitter_and_capped(attempt, rand, expected):
    assert Backoff(base=1, cap=60).delay(attempt, rand=lambda: rand) == pytest.approx(expected)


def test_backoff_honours_retry_after():
    assert Backoff().delay(1, retry_after=7, rand=lambda: 0.0) == pytest.approx(7.05)
    assert Backoff().delay(1, retry_after=7, rand=lambda: 1.0) == pytest.approx(7.1)


# -- the failure decision, without threads -----------------------------------------------------
POLICY = Backoff(tries=3, max_wait=60)


def decide(err, *, in_doubt=False, idempotent=False, attempt=1):
    return decide_failure(err, in_doubt=in_doubt, idempotent=idempotent, attempt=attempt, policy=POLICY)


@pytest.mark.parametrize("idempotent", [False, True])
def test_not_accepted_goes_back_to_pending_under_a_new_batch_id(idempotent):
    assert decide(NotAccepted("HTTP 503", status=503, retryable=True), idempotent=idempotent) == Verdict("retry", "new")


def test_not_accepted_after_an_unanswered_try_is_still_in_doubt():
    err = NotAccepted("HTTP 429", status=429, retryable=True)
    assert decide(err, in_doubt=True) == Verdict("unknown")
    assert decide(err, in_doubt=True, idempotent=True) == Verdict("", "same")


@pytest.mark.parametrize("err", [NoAnswer("no answer within 30 s"), NoAnswer("HTTP 504", status=504),
                                 ProviderError("a bare retryable error", retryable=True)])
def test_no_answer_is_unknown_unless_the_same_key_makes_another_try_safe(err):
    assert decide(err) == Verdict("unknown")
    assert decide(err, idempotent=True) == Verdict("", "same")
    assert decide(err, idempotent=True, attempt=3) == Verdict("unknown")  # no tries left


def test_a_retry_after_longer_than_the_policy_waits_stops_the_run():
    err = NotAccepted("HTTP 429", status=429, retryable=True, retry_after=61)
    assert decide(err) == Verdict("retry", stop="wait")
    assert decide(err, in_doubt=True, idempotent=True) == Verdict("", stop="wait")  # kept for the same key


def test_a_refused_key_stops_and_leaves_an_in_doubt_batch_as_it_is():
    err = AuthError("refused the API key (HTTP 401)", status=401)
    assert decide(err) == Verdict("retry", stop="auth")
    assert decide(err, in_doubt=True) == Verdict("", stop="auth")


def test_a_refusal_of_the_whole_request_or_a_url_that_cannot_work_stops_with_nobody_failed():
    assert decide(ProviderError("HTTP 422: sender not verified", status=422)) == Verdict("retry", stop="refused")
    assert decide(NotAccepted("the request could not be made")) == Verdict("retry", stop="refused")
    assert decide(ProviderError("HTTP 422", status=422), in_doubt=True) == Verdict("unknown")


def test_the_policy_counts_tries_and_waits():
    assert [POLICY.tries_left(n) for n in (1, 2, 3)] == [True, True, False]
    assert not POLICY.too_long(60) and POLICY.too_long(60.5) and not POLICY.too_long(None)


def test_a_workers_share_of_the_rate_shrinks_its_burst_and_a_larger_share_restores_it():
    clock = SleepClock()
    bucket = TokenBucket(10, burst=4, clock=clock, sleep=clock.sleep)
    bucket.set_rate(10 / 4)  # one of four workers: 2.5 calls/s, so at most 2.5 at once, not the whole 4
    waits = [bucket.acquire() for _ in range(3)]
    assert waits == [0.0, 0.0, pytest.approx(0.2)]  # two at once, the third after (1 - 0.5) / 2.5 s
    bucket.set_rate(0.5)
    assert bucket.burst == 1.0  # never below one call
    bucket.set_rate(10)  # alone again: the whole burst back, its tokens earned at the rate, not handed out
    assert bucket.burst == 4 and bucket.acquire() == pytest.approx(0.1)
