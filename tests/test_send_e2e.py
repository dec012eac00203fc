"""`newsletter send` as a real process: SIGKILLed at random moments, resumed, and raced against itself."""

from __future__ import annotations

import email
import email.policy
import json
import random
import subprocess
import sys
import time
from collections import Counter

import pytest
from sendkill import ISSUE, kill_and_resume, outbox_deliveries, run_send, send_env, start_send, write_list

pytestmark = pytest.mark.slow


@pytest.fixture
def env():
    # 5 recipients a batch at 20 batches/s: 600 subscribers take ~6 s, so every kill lands mid-send.
    return send_env(NEWSLETTER_PROVIDER_RATE_LIMIT="20", NEWSLETTER_PROVIDER_BATCH_SIZE="5",
                    NEWSLETTER_SECRET="e2e-secret")


def status(workspace, env):
    out = subprocess.run([sys.executable, "-c", "from newsletter.cli import main; main()", "status", ISSUE, "--json"],
                         cwd=workspace, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def sending(workspace, env):
    """A `send` process, returned once its first message is in the outbox (or after 30 s)."""
    process = start_send(workspace, env)
    deadline = time.monotonic() + 30
    while not outbox_deliveries(workspace) and time.monotonic() < deadline:
        time.sleep(0.05)
    return process


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_random_moments_then_resume_delivers_exactly_once(workspace, env, seed):
    eligible = write_list(workspace / "subscribers" / "subscribers.csv", 600, seed=seed)
    rng = random.Random(seed)
    history = kill_and_resume(workspace, env, rng=rng, kills=5)

    final = history[-1]
    assert final.returncode == 0, final.stderr
    assert sum(run.returncode is None for run in history) >= 3, "the kills should land while sending"
    delivered = outbox_deliveries(workspace)
    assert delivered == Counter({address: 1 for address in eligible}), \
        f"duplicates: {[a for a, n in delivered.items() if n > 1]}, missing: {set(eligible) - set(delivered)}"
    counts = status(workspace, env)
    assert counts == {"issue": ISSUE, "total": len(eligible), "pending": 0, "sending": 0, "sent": len(eligible),
                      "failed": 0, "unknown": 0, "skipped": 0, "provider": "outbox"}

    sample = next((workspace / "outbox" / ISSUE).glob("reader0001@example.com--*.eml"))
    mail = email.message_from_bytes(sample.read_bytes(), policy=email.policy.default)
    assert mail["To"] == "Reader 1 <reader0001@example.com>"
    assert "unsubscribe?t=" in mail["List-Unsubscribe"]
    assert "Hi Reader 1," in mail.get_body(("plain",)).get_content()


def test_a_killed_run_really_stops_midway(workspace, env):
    """Guards the test above: a kill after a second leaves a partial outbox and rows to resume."""
    eligible = write_list(workspace / "subscribers" / "subscribers.csv", 300)
    process = sending(workspace, env)
    process.kill()
    process.wait()
    partial = sum(outbox_deliveries(workspace).values())
    assert 0 < partial < len(eligible)
    counts = status(workspace, env)
    assert counts["pending"] + counts["sending"] > 0
    run = run_send(workspace, env)
    assert run.returncode == 0, run.stderr
    assert outbox_deliveries(workspace) == Counter({address: 1 for address in eligible})


def test_two_concurrent_sends_one_sends_the_other_exits_75(workspace, env):
    eligible = write_list(workspace / "subscribers" / "subscribers.csv", 150)
    first, second = start_send(workspace, env), start_send(workspace, env)
    results = [(p.wait(timeout=120), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 75], results
    loser = next(r for r in results if r[0] == 75)
    assert "another run is sending issue 2026-11-30-weekly" in loser[2]
    assert "batch " not in loser[2]  # it sent nothing
    assert outbox_deliveries(workspace) == Counter({address: 1 for address in eligible})


def test_sigterm_stops_cleanly_with_exit_4_and_resumes(workspace, env):
    eligible = write_list(workspace / "subscribers" / "subscribers.csv", 300)
    process = sending(workspace, env)
    process.terminate()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 4, err
    assert "Run `newsletter send 2026-11-30-weekly` again to resume" in out
    counts = status(workspace, env)
    assert counts["sending"] == 0  # batches in flight were recorded before stopping
    assert run_send(workspace, env).returncode == 0
    assert outbox_deliveries(workspace) == Counter({address: 1 for address in eligible})
