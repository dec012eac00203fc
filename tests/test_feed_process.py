"""A large template-once send feeds its workers from a second process (newsletter/sending/feedprocess.py):
the real CLI, SIGKILLed and resumed, against the local fake SendGrid through real sockets. The feed only
reads; what it would write (skips, a reader's failure) the sending process writes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakeproviders import FakeProviders
from sendkill import send_env

from newsletter.errors import FeedFailed, SubscriberError
from newsletter.ledger.sqlite import SQLiteLedger
from newsletter.sending import feedprocess

KEY = "feed-key-Qx20"
ISSUE = "2026-11-30-weekly"
# The CLI with the feed's threshold set (the first argument) and a word on stderr when it forks the feed.
_CLI = ("import sys; from newsletter.sending import feedprocess as f; f.MIN_READERS = int(sys.argv.pop(1)); "
        "real = f.FeedProcess.start.__func__\n"
        "def told(cls, *a):\n    feed = real(cls, *a)\n"
        "    if feed: print('feed: own process', file=sys.stderr, flush=True)\n    return feed\n"
        "f.FeedProcess.start = classmethod(told)\nfrom newsletter.cli import main; main()")


@pytest.fixture
def fake():
    with FakeProviders(api_key=KEY) as server:
        yield server


def start(workspace: Path, fake: FakeProviders, *args: str, threshold: int = 1, batch_size: str = "5",
          concurrency: str = "1", rate: str = "1000") -> subprocess.Popen:
    env = send_env(NEWSLETTER_PROVIDER_NAME="sendgrid", NEWSLETTER_PROVIDER_API_BASE=fake.url,
                   NEWSLETTER_PROVIDER_DOMAIN=fake.domain, NEWSLETTER_API_KEY=KEY, NEWSLETTER_SECRET="feed-secret",
                   NEWSLETTER_PROVIDER_RATE_LIMIT=rate, NEWSLETTER_PROVIDER_BATCH_SIZE=batch_size,
                   NEWSLETTER_PROVIDER_CONCURRENCY=concurrency)
    return subprocess.Popen([sys.executable, "-c", _CLI, str(threshold), *args], cwd=workspace, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write_list(workspace: Path, count: int, *, unsubscribed: tuple[int, ...] = ()) -> list[str]:
    """``count`` readers; reader 5's city breaks the subject (which names the city). Their addresses."""
    addresses = [f"reader{n:04d}@example.com" for n in range(count)]
    with open(workspace / "subscribers" / "subscribers.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name", "status", "tags", "city"])
        for n, address in enumerate(addresses):
            writer.writerow([address, f"Reader {n}", "unsubscribed" if n in unsubscribed else "subscribed",
                             "weekly", "Boston\u2028MA" if n == 5 else "Lyon"])
    return addresses


def subject_with_city(workspace: Path) -> None:
    issue = workspace / "issues" / f"{ISSUE}.md"
    issue.write_text(issue.read_text().replace('subject: "Field Notes #48:',
                                               'subject: "Field Notes for {{ subscriber.city }}:'))


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int) -> bool:
    """Ended (or a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_killed_send_fed_from_its_own_process_resumes_with_nobody_twice_and_the_feeds_writes_kept(
        workspace, fake):
    subject_with_city(workspace)
    # More batches than the hand-over holds: when the sender is killed its feed is still walking.
    addresses = write_list(workspace, 3000)
    held = fake.inject("hold", after=2)  # the third batch is accepted, its answer never comes
    first = start(workspace, fake, "send", ISSUE, "--yes")
    try:
        assert held.reached.wait(30), "the sender never reached the third batch"
        feeds = children(first.pid)
        assert len(feeds) == 1, feeds  # the feed's process
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        deadline = time.monotonic() + 10
        while not gone(feeds[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(feeds[0]), "the feed's process outlived the killed sender"
    finally:
        held.release.set()
        if first.poll() is None:
            first.kill()
    told = first.communicate()[1]
    assert "feed: own process" in told
    # the feed's process found reader 5's subject broken; the sending process recorded it
    assert "the subject for reader0005@example.com would contain a line break" in told

    write_list(workspace, 3000, unsubscribed=(30,))  # planned, not yet sent: the walk skips them now
    second = start(workspace, fake, "send", ISSUE, "--yes")
    out, err = second.communicate(timeout=60)
    assert second.returncode == 3, err  # done; the held batch is in doubt, reader 5 failed
    assert "feed: own process" in err
    assert fake.duplicates() == {}, "somebody got two copies"
    assert sorted(a.to for a in fake.delivered("sendgrid")) == [a for n, a in enumerate(addresses)
                                                                if n not in (5, 30)]
    status = subprocess.run([sys.executable, "-c", "from newsletter.cli import main; main()", "status", ISSUE,
                             "--json"], cwd=workspace, capture_output=True, text=True, env=send_env())
    counts = json.loads(status.stdout)
    assert (counts["failed"], counts["skipped"], counts["unknown"], counts["sent"]) == (1, 1, 5, 2993), counts
    with SQLiteLedger(workspace / ".newsletter" / "ledger.sqlite3", readonly=True) as ledger:
        [skipped] = ledger.rows(ISSUE, ("skipped",))
    assert (skipped.email, skipped.reason) == ("reader0030@example.com", "status is unsubscribed")  # the walk's


def test_a_small_list_keeps_its_feed_in_the_sending_process(workspace, fake):
    write_list(workspace, 12)
    process = start(workspace, fake, "send", ISSUE, "--yes", threshold=feedprocess.MIN_READERS)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "feed: own process" not in err and len(fake.delivered("sendgrid")) == 12


def run_like(*, backend="sqlite", limit=None, substitutes=True, pending=10_000):
    ledger = SimpleNamespace(backend=backend, counts=lambda issue: {"pending": pending}, quiescent=nullcontext)
    return SimpleNamespace(ledger=ledger, options=SimpleNamespace(limit=limit), issue_id=ISSUE,
                           provider=SimpleNamespace(substitutes=substitutes))


def test_only_a_large_template_once_send_on_sqlite_without_a_limit_forks_its_feed():
    assert feedprocess.wanted(run_like())
    assert not feedprocess.wanted(run_like(pending=feedprocess.MIN_READERS - 1))
    assert not feedprocess.wanted(run_like(backend="postgresql"))  # its reservations are written as it walks
    assert not feedprocess.wanted(run_like(limit=100))
    assert not feedprocess.wanted(run_like(substitutes=False))  # a body per reader: too much to hand over


def test_a_feed_that_dies_without_a_word_stops_the_run_saying_so(monkeypatch):
    monkeypatch.setattr(feedprocess, "_walk", lambda *args: os._exit(3))
    feed = feedprocess.FeedProcess.start(run_like(), "holder")
    try:
        with pytest.raises(FeedFailed, match="exit code 3"):
            feed.hand_over(SimpleNamespace(aborted=False))
    finally:
        feed.stop()


def test_the_feeds_own_error_is_raised_again_with_its_class():
    err = feedprocess._rebuilt(("SubscriberError", "the list changed while it was read", "subscribers.csv", 7,
                                "run it again"))
    assert isinstance(err, SubscriberError) and (err.path, err.line, err.hint) == ("subscribers.csv", 7, "run it again")
    bug = feedprocess._rebuilt(("KeyError", "'x'", None, None, None))
    assert isinstance(bug, FeedFailed) and "KeyError: 'x'" in bug.message and "newsletter send" in bug.hint


def test_sigterm_to_the_sender_and_its_feed_stops_gently_and_ends_the_feed(workspace, fake):
    """cron or systemd stopping the run signals the whole process group: the feed ignores it, the sender
    lets the batch in flight finish and be recorded, then ends its feed."""
    addresses = write_list(workspace, 3000)
    held = fake.inject("hold", after=2)
    process = start(workspace, fake, "send", ISSUE, "--yes")
    try:
        assert held.reached.wait(30), "the sender never reached the third batch"
        [feed] = children(process.pid)
        for pid in (process.pid, feed):
            os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        held.release.set()  # the batch in flight ends: accepted, its answer dropped
        out, err = process.communicate(timeout=60)
    finally:
        held.release.set()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 4, err  # stopped, pending left
    deadline = time.monotonic() + 10
    while not gone(feed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(feed), "the feed's process outlived its sender"
    assert fake.duplicates() == {}
    with SQLiteLedger(workspace / ".newsletter" / "ledger.sqlite3", readonly=True) as ledger:
        counts = ledger.counts(ISSUE)
    # recorded before the run ended: the batch in flight as the provider left it (no answer: unknown)
    assert (counts["sent"], counts["unknown"], counts["sending"], counts["pending"]) == (10, 5, 0, len(addresses) - 15)


@pytest.mark.slow
def test_random_kills_through_the_feed_process_send_nobody_twice_and_leave_nobody_unaccounted(workspace, fake):
    """SIGKILL the sender at random moments, four times, then resume until done: nobody gets two copies, and
    every reader is either sent (and received by the provider) or in doubt after a kill."""
    import random

    subject_with_city(workspace)
    addresses = write_list(workspace, 3000)
    rng, killed = random.Random(16), 0
    for _ in range(4):
        # 20 calls a second: a whole send takes about 3 s, so each kill lands mid-send
        process = start(workspace, fake, "send", ISSUE, "--yes", batch_size="50", concurrency="4", rate="20")
        try:
            process.communicate(timeout=rng.uniform(0.3, 1.5))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            killed += "feed: own process" in process.communicate()[1]
    assert killed >= 3  # killed mid-send, the feed's process at work
    for _ in range(10):
        final = start(workspace, fake, "send", ISSUE, "--yes", batch_size="50", concurrency="4")
        out, err = final.communicate(timeout=120)
        if final.returncode != 4:
            break
    assert final.returncode in (0, 3), err  # done (3: some in doubt)
    assert fake.duplicates() == {}, "somebody got two copies"
    received = {a.to for a in fake.delivered("sendgrid")}
    with SQLiteLedger(workspace / ".newsletter" / "ledger.sqlite3", readonly=True) as ledger:
        states = {row.email: row.state for row in ledger.rows(ISSUE, ("sent", "unknown", "pending", "failed"))}
    assert {e for e, state in states.items() if state == "sent"} <= received
    assert received <= set(addresses) - {"reader0005@example.com"}
    assert set(states) == set(addresses) and set(states.values()) <= {"sent", "unknown", "failed"}
    assert {e for e, state in states.items() if state == "failed"} == {"reader0005@example.com"}
