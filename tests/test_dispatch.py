"""The send loop against a scripted in-test Provider: retries, backoff, Retry-After, auth abort, in-doubt batches."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from newsletter.config import resolve
from newsletter.dispatch import Dispatcher, Work
from newsletter.errors import AuthError, LedgerError, ProviderError
from newsletter.ledger import SQLiteLedger
from newsletter.models import Message, Outcome
from newsletter.providers.base import Batch, Provider
from newsletter.ratelimit import Backoff, TokenBucket

ISSUE = "weekly"
SETTINGS = resolve({}, {}, {}, source=None)
FAST = Backoff(base=0.001, cap=0.005)


class ScriptedProvider(Provider):
    """Answers each call with the next scripted step: "ok", an exception, or a function of the batch."""

    name = "scripted"
    max_batch = 2
    default_rate = 0.0
    needs_api_key = False

    def __init__(self, *steps, idempotent=False):
        super().__init__(SETTINGS)
        self.steps = list(steps)
        self.idempotent = idempotent
        self.calls: list[tuple[str, list[str]]] = []
        self.timed: list[tuple[str, list[str], float]] = []
        self._lock = threading.Lock()

    def send_batch(self, batch: Batch, session) -> list[Outcome]:
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
    provider = ScriptedProvider(ProviderError("HTTP 500", status=500, retryable=True))
    totals = run(ledger, provider, EMAILS[:2])
    (first, who1), (second, who2) = provider.calls
    assert who1 == who2 and first != second
    assert totals.sent == 2 and totals.retried == 2
    assert {r.attempts for r in ledger.rows(ISSUE, ("sent",))} == {2}


def test_a_429_with_retry_after_pauses_every_worker(ledger):
    answered = []

    def too_many(batch):
        answered.append(time.monotonic())
        raise ProviderError("HTTP 429", status=429, retryable=True, retry_after=0.3)

    provider = ScriptedProvider(too_many)
    totals = run(ledger, provider, EMAILS[:4])  # two batches, one worker
    assert totals.sent == 4
    (_, first), (_, second), (_, third) = [(b, e) for b, e, _ in provider.timed]
    assert second == EMAILS[2:4]  # the other batch, not the one that got the 429 ...
    assert provider.timed[1][2] - answered[0] >= 0.29  # ... also waited for Retry-After
    assert third == EMAILS[:2]


def test_transient_failures_stop_after_max_attempts_and_leave_recipients_pending(ledger):
    error = ProviderError("HTTP 503", status=503, retryable=True)
    provider = ScriptedProvider(*[error] * 20)
    totals = run(ledger, provider, EMAILS[:2], max_attempts=3)
    assert len(provider.calls) == 3
    assert states(ledger) == {"r0@example.com": "pending", "r1@example.com": "pending"}
    assert totals.exhausted == {"r0@example.com", "r1@example.com"}


def test_a_provider_that_keeps_failing_ends_the_run(ledger):
    provider = ScriptedProvider(*[ProviderError("HTTP 503", status=503, retryable=True)] * 100)
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
                                ProviderError("HTTP 429", status=429, retryable=True), idempotent=True)
    run(ledger, provider, EMAILS[:2])
    assert len({batch for batch, _ in provider.calls}) == 1 and len(provider.calls) == 3
    assert set(states(ledger).values()) == {"sent"}


def test_a_connection_that_was_never_made_is_retried_not_in_doubt(ledger):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connections are refused

    def refused(batch):
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        except requests.ConnectionError as err:
            raise ProviderError("connection failed", retryable=True) from err
        raise AssertionError("the port answered")

    provider = ScriptedProvider(refused)
    totals = run(ledger, provider, EMAILS[:2])
    assert len(provider.calls) == 2 and totals.sent == 2 and totals.unknown == 0


def test_a_definite_refusal_of_the_whole_request_stops_the_run_and_loses_nobody(ledger):
    """A 422 'From address not verified' would refuse every batch: stop, keep everyone pending."""
    provider = ScriptedProvider(ProviderError("HTTP 422: From address not verified", status=422))
    totals = run(ledger, provider, EMAILS[:6])
    assert len(provider.calls) == 1 and totals.failed == 0 and totals.sent == 0
    assert "From address not verified" in str(totals.error) and "run stopped" in str(totals.error)
    assert set(states(ledger, EMAILS[:6]).values()) == {"pending"}


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


def test_an_unexpected_error_stops_the_run_and_leaves_the_batch_in_doubt(ledger):
    provider = ScriptedProvider(RuntimeError("disk on fire"))
    totals = run(ledger, provider, EMAILS[:2])
    assert isinstance(totals.error, RuntimeError)
    assert set(states(ledger).values()) == {"sending"}  # resolved by the next run, never re-sent blindly
    assert ledger.in_doubt(ISSUE) == {provider.calls[0][0]: ["r0@example.com", "r1@example.com"]}


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
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_token_bucket_holds_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(10, burst=1, clock=clock, sleep=clock.sleep)
    for _ in range(11):
        bucket.acquire()
    assert clock.now == pytest.approx(1.0)  # 1 token at once, then 10 per second


def test_token_bucket_pause_delays_everyone_and_zero_rate_is_unlimited():
    clock = FakeClock()
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
