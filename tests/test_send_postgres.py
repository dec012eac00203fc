"""`newsletter send` as a real process with the ledger on a real PostgreSQL server (docs/team.md)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter

import pytest
from sendkill import ISSUE, kill_and_resume, outbox_deliveries, run_send, send_env, write_list

pytestmark = pytest.mark.slow
_CLI = "from newsletter.cli import main; main()"


def cli(workspace, env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CLI, *args], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=120)


def test_send_twice_on_postgres_sends_each_reader_once_and_status_agrees(workspace, pg_url):
    env = send_env(NEWSLETTER_LEDGER_URL=pg_url, NEWSLETTER_SECRET="e2e-secret")
    eligible = write_list(workspace / "subscribers" / "subscribers.csv", 120)
    first = run_send(workspace, env)
    assert first.returncode == 0, first.stderr
    assert outbox_deliveries(workspace) == Counter({address: 1 for address in eligible})
    second = run_send(workspace, env)
    assert second.returncode == 0, second.stderr
    assert outbox_deliveries(workspace) == Counter({address: 1 for address in eligible})  # nobody twice
    status = cli(workspace, env, "status", ISSUE, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {"issue": ISSUE, "total": len(eligible), "pending": 0, "sending": 0,
                                         "sent": len(eligible), "failed": 0, "unknown": 0, "skipped": 0,
                                         "provider": "outbox", "workers": []}
    assert not (workspace / ".newsletter" / "ledger.sqlite3").exists()  # the SQLite ledger was never used
    info = cli(workspace, env, "ledger", "info")
    assert "backend:       postgresql" in info.stdout and f"deliveries:    {len(eligible)}\n" in info.stdout


def test_sigkill_at_random_moments_on_postgres_then_resume_delivers_exactly_once(workspace, pg_url):
    # 5 recipients a batch at 20 batches/s: 300 subscribers take ~3 s, so the kills land mid-send.
    env = send_env(NEWSLETTER_LEDGER_URL=pg_url, NEWSLETTER_SECRET="e2e-secret",
                   NEWSLETTER_PROVIDER_RATE_LIMIT="20", NEWSLETTER_PROVIDER_BATCH_SIZE="5")
    eligible = write_list(workspace / "subscribers" / "subscribers.csv", 300, seed=3)
    history = kill_and_resume(workspace, env, rng=random.Random(3), kills=3)
    assert history[-1].returncode == 0, history[-1].stderr
    assert sum(run.returncode is None for run in history) >= 2, "the kills should land while sending"
    delivered = outbox_deliveries(workspace)
    assert delivered == Counter({address: 1 for address in eligible}), \
        f"duplicates: {[a for a, n in delivered.items() if n > 1]}, missing: {set(eligible) - set(delivered)}"
