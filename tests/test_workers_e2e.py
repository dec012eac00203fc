"""Four `newsletter send` workers on one issue of a PostgreSQL ledger, two of them SIGKILLed mid-run and
started again, against the fake Resend with 5% 500s, 5% 429s and 3% dropped answers (docs/team.md).

Every eligible reader gets exactly one message, and the ledger agrees with the fake: each ``sent`` row
carries the id the fake gave that reader's one message, and nothing is pending, in flight or in doubt.
Resend takes 100 emails a call and honours idempotency keys, so a batch whose answer was dropped, or
whose worker was killed, is sent again under the same key and the fake replays its first answer.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from fakeproviders import FakeProviders
from helpers import reserve_by_address
from sendkill import ISSUE, outbox_deliveries, run_send, send_env, start_send, write_list

from newsletter.ledger.postgres import PostgresLedger

pytestmark = pytest.mark.slow
KEY = "workers-key-Zq81"
READERS = 20_000
WORKERS = 4


def worker_env(fake: FakeProviders, pg_url: str) -> dict[str, str]:
    return send_env(NEWSLETTER_LEDGER_URL=pg_url, NEWSLETTER_SECRET="workers-secret",
                    NEWSLETTER_PROVIDER_NAME="resend", NEWSLETTER_PROVIDER_API_BASE=fake.url,
                    NEWSLETTER_API_KEY=KEY, NEWSLETTER_PROVIDER_RATE_LIMIT="1000")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_four_workers_two_killed_and_restarted_deliver_each_reader_exactly_once(workspace, pg_url):
    eligible = write_list(workspace / "subscribers" / "subscribers.csv", READERS, seed=13)
    with FakeProviders(api_key=KEY) as fake:
        fake.chaos([("status", 500, 0.05), ("status", 429, 0.05), ("drop", 0, 0.03)], seed=13)
        env = worker_env(fake, pg_url)
        migrate = subprocess.run([sys.executable, "-c", "from newsletter.cli import main; main()", "ledger",
                                  "migrate"], cwd=workspace, env=env, capture_output=True, text=True, timeout=60)
        assert migrate.returncode == 0, migrate.stderr  # docs/team.md: once, before the workers start
        workers = [start_send(workspace, env) for _ in range(WORKERS)]
        # Mid-run: some sent, most not, every worker past planning and sending.
        wait_for(lambda: len(fake.delivered()) >= 3_000 or any(w.poll() is not None for w in workers), 90,
                 "the workers to send")
        assert all(w.poll() is None for w in workers), [w.communicate() for w in workers if w.poll() is not None]
        for victim in workers[:2]:
            victim.send_signal(signal.SIGKILL)
            victim.communicate()
        killed_at = len(fake.delivered())
        assert killed_at < len(eligible) // 2, "the kills should land mid-run"
        workers = workers[2:] + [start_send(workspace, env) for _ in range(2)]
        with PostgresLedger(pg_url) as ledger:  # the killed ones' registrations are still there, or reaped
            assert 2 <= len(ledger.workers(ISSUE)) <= WORKERS + 2
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode in (0, 4), err[-3000:]  # 4: it finished while others were still sending
        final = run_send(workspace, env)  # whatever a worker left in flight when it finished
        assert final.returncode == 0, final.stderr[-3000:]
        delivered = fake.delivered("resend")
        assert fake.duplicates() == {}
        assert Counter(a.to for a in delivered) == Counter({address: 1 for address in eligible}), \
            f"missing: {len(set(eligible) - {a.to for a in delivered})}"
        with PostgresLedger(pg_url) as ledger:
            counts = ledger.counts(ISSUE)
            sent = {row.email: row.provider_id for row in ledger.rows(ISSUE, ("sent",))}
            assert ledger.workers(ISSUE) == []  # every worker left or was reaped
        assert counts == {"pending": 0, "sending": 0, "sent": len(eligible), "failed": 0, "unknown": 0,
                          "skipped": 0}
        assert sent == {a.to: a.message_id for a in delivered}  # the ledger agrees with the fake, id for id
        # The chaos was met (and so retried, or resolved in doubt), each kind of it, more than once.
        assert all(fake.chaos_met[fault] > 1 for fault in (("status", 500), ("status", 429), ("drop", 0))), \
            fake.chaos_met


def test_a_second_worker_on_sqlite_still_exits_75(workspace):
    # The single-holder lease stays on SQLite: the same two workers, one exits 75 (temporary failure).
    # 54 batches at 5 a second: the first run sends for about 11 s, the second starts within it.
    env = send_env(NEWSLETTER_SECRET="workers-secret", NEWSLETTER_PROVIDER_RATE_LIMIT="5",
                   NEWSLETTER_PROVIDER_BATCH_SIZE="5")
    write_list(workspace / "subscribers" / "subscribers.csv", 300)
    first = start_send(workspace, env)
    wait_for(lambda: (workspace / "outbox").exists() or first.poll() is not None, 60, "the first run to send")
    second = run_send(workspace, env)
    first.communicate(timeout=120)
    assert second.returncode == 75, second.stderr
    assert first.returncode == 0


def test_the_last_live_worker_reaps_a_worker_that_died_during_its_walk(workspace, pg_url):
    # A worker that dies while another walks the list: its reserved rows and its batch in flight are picked
    # up when the live one finishes its walk (no restart, no second run). Outbox: it honours the batch id.
    from test_workers import register_in_a_process_that_exits

    env = send_env(NEWSLETTER_LEDGER_URL=pg_url, NEWSLETTER_SECRET="workers-secret",
                   NEWSLETTER_PROVIDER_RATE_LIMIT="20", NEWSLETTER_PROVIDER_BATCH_SIZE="25")
    # 3,000 readers: the live worker reserves 1,000 at a time, so the last chunk is nobody's yet.
    eligible = write_list(workspace / "subscribers" / "subscribers.csv", 3000, seed=5)
    live = start_send(workspace, env)
    with PostgresLedger(pg_url) as ledger:
        wait_for(lambda: ledger.issue(ISSUE) is not None and ledger.counts(ISSUE)["sent"] >= 10, 60,
                 "the live worker to send")
        register_in_a_process_that_exits(pg_url, "died-mid-walk")
        tail = eligible[-20:]
        assert reserve_by_address(ledger, ISSUE, "died-mid-walk", tail) == set(tail)
        assert ledger.claim(ISSUE, "dead-batch", tail[:5], "died-mid-walk") == set(tail[:5])
        out, err = live.communicate(timeout=120)
        assert live.returncode == 0, err[-3000:]
        assert ledger.counts(ISSUE)["sent"] == len(eligible)
        assert ledger.workers(ISSUE) == []
    delivered = outbox_deliveries(workspace)
    assert delivered == Counter({address: 1 for address in eligible})
