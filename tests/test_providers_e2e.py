"""End to end: the real CLI against the local fake providers, through real sockets.

``newsletter send`` runs as a subprocess (so it can be SIGKILLed mid-batch),
``newsletter test`` and ``newsletter reconcile`` through the CLI runner. The fake
records every message it accepted as its recipient would see it, which is what
"zero duplicates, zero skipped" is checked against.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import BOTH_LEDGERS, ledger_env, write_readers
import requests
from fakeproviders import SES_ACCESS_KEY, FakeProviders

from newsletter import config
from newsletter.compile.pipeline import build_issue, personalizer
from newsletter.ledger import open_ledger
from newsletter.ledger import postgres as ledger_postgres
from newsletter.ledger import sqlite as ledger_sqlite
from newsletter.providers import open_provider
from newsletter.providers.base import Batch
from newsletter.sending.reconcile import reconcile_issue

PROVIDERS = ["postmark", "sendgrid", "mailgun", "resend", "ses", "brevo"]
# Providers that can never say whether an in-doubt batch went out, and the words `reconcile` says it with.
CANNOT_RECONCILE = {"sendgrid": "Email Activity API", "ses": "no idempotency key and no log search"}
KEY = "e2e-key-Zq81"
SECRET = "e2e-signing-secret"
ISSUE = "2026-11-30-weekly"
NEWSLETTER = str(Path(sys.executable).with_name("newsletter"))


@pytest.fixture
def fake():
    with FakeProviders(api_key=KEY) as server:
        yield server


def provider_env(name: str, fake: FakeProviders, **extra: str) -> dict[str, str]:
    aws = {"AWS_ACCESS_KEY_ID": SES_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": KEY, "AWS_REGION": "eu-west-1"}
    return {"NEWSLETTER_PROVIDER_NAME": name, "NEWSLETTER_PROVIDER_API_BASE": fake.url,
            "NEWSLETTER_PROVIDER_DOMAIN": fake.domain, "NEWSLETTER_API_KEY": KEY, "NEWSLETTER_SECRET": SECRET,
            "NEWSLETTER_PROVIDER_RATE_LIMIT": "1000", **(aws if name == "ses" else {}), **ledger_env(), **extra}


def newsletter(workspace: Path, env: dict[str, str], *args: str, **kw) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "AWS_"))} | env
    return subprocess.Popen([NEWSLETTER, *args], cwd=workspace, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def ledger_counts(workspace: Path, env: dict[str, str]) -> dict:
    code, out, err = finish(newsletter(workspace, env, "status", ISSUE, "--json"))
    assert code == 0, err
    return json.loads(out)


# -- newsletter send, through each provider -------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", PROVIDERS)
def test_send_delivers_each_subscriber_once_personalised(workspace, fake, name):
    addresses = write_readers(workspace, 12)
    env = provider_env(name, fake, NEWSLETTER_PROVIDER_BATCH_SIZE="5")
    code, out, err = finish(newsletter(workspace, env, "send", ISSUE, "--yes"))
    assert code == 0, err
    delivered = fake.delivered(name)
    assert sorted(a.to for a in delivered) == addresses and fake.duplicates() == {}
    assert fake.send_calls == 3  # 5 + 5 + 2
    for message in delivered:
        number = message.to[6:9]
        assert f"Hi Reader {number}," in message.text and f"Hi Reader {number}," in message.html
    assert ledger_counts(workspace, env)["sent"] == 12
    assert KEY not in out + err


def test_a_stream_postmark_does_not_know_stops_before_the_plan(workspace, fake):
    """Asked before anything is planned, Postmark says the stream does not exist: nothing sent, nobody failed.
    (A stream that goes between that question and a batch, ErrorCode 1235 per message, stops the run
    with everyone pending: tests/test_providers_postmark.py.)"""
    write_readers(workspace, 6)
    env = provider_env("postmark", fake, NEWSLETTER_PROVIDER_MESSAGE_STREAM="newsletters",
                       NEWSLETTER_PROVIDER_BATCH_SIZE="2", NEWSLETTER_PROVIDER_CONCURRENCY="1")
    code, out, err = finish(newsletter(workspace, env, "send", ISSUE, "--yes"))
    assert code == 1, err
    assert "Postmark has no message stream 'newsletters' on this server" in err
    assert fake.send_calls == 0 and ledger_counts(workspace, env)["total"] == 0
    # fixed, the next run sends everyone
    code, out, err = finish(newsletter(workspace, {**env, "NEWSLETTER_PROVIDER_MESSAGE_STREAM": "broadcast"},
                                       "send", ISSUE, "--yes"))
    assert code == 0, err
    assert ledger_counts(workspace, env)["sent"] == 6 and fake.duplicates() == {}


@pytest.mark.slow
@pytest.mark.parametrize("name", PROVIDERS)
def test_sigkill_mid_batch_then_resume_sends_nobody_twice_and_skips_nobody(workspace, fake, name):
    addresses = write_readers(workspace, 10)
    env = provider_env(name, fake, NEWSLETTER_PROVIDER_BATCH_SIZE="2", NEWSLETTER_PROVIDER_CONCURRENCY="1")
    held = fake.inject("hold", after=2)  # the third batch is accepted, then the answer never comes
    first = newsletter(workspace, env, "send", ISSUE, "--yes")
    try:
        assert held.reached.wait(30), "the sender never reached the third batch"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        held.release.set()
        if first.poll() is None:
            first.kill()
    first.communicate()
    in_doubt = {a.to for a in fake.delivered(name)} - set(addresses[:4])
    assert len(in_doubt) == 2  # the killed batch was accepted by the provider

    code, out, err = finish(newsletter(workspace, env, "send", ISSUE, "--yes"))
    assert fake.duplicates() == {}, "somebody got two copies"
    assert sorted(a.to for a in fake.delivered(name)) == addresses, "somebody was skipped"
    counts = ledger_counts(workspace, env)
    if name == "resend":  # the same idempotency key: Resend answers the original ids, sends nothing twice
        assert code == 0, err
        assert counts["sent"] == 10 and counts["unknown"] == 0
        return
    assert code == 3, err  # done, but some recipients are in doubt
    assert counts["sent"] == 8 and counts["unknown"] == 2

    result = finish(newsletter(workspace, env, "reconcile", ISSUE))
    after = ledger_counts(workspace, env)
    if name in CANNOT_RECONCILE:
        assert result[0] == 3 and CANNOT_RECONCILE[name] in result[1]
        assert after["unknown"] == 2
    else:  # Postmark's message search / Mailgun's events find the accepted batch
        assert result[0] == 0, result[2]
        assert after["sent"] == 10 and after["unknown"] == 0
    assert fake.duplicates() == {}


# -- in doubt for a day: Resend forgets its keys after 24 h ----------------------------------------
@pytest.fixture
def ledger_clock(monkeypatch):
    """The ledger's time function, moved by hand: ``ledger_clock["now"] = datetime``; None is real time."""
    clock = {"now": None}
    for module in (ledger_sqlite, ledger_postgres):  # the same seam in both ledgers
        monkeypatch.setattr(module, "_now", lambda real=module._now: clock["now"].isoformat(timespec="seconds")
                            if clock["now"] else real())
    return clock


def dead_run_batch(workspace: Path, env: dict[str, str], fake: FakeProviders, addresses: list[str],
                   batch_id: str, *, accepted: bool = True) -> None:
    """What a SIGKILL leaves behind: the batch claimed in the ledger and (``accepted``) by the provider, unrecorded."""
    settings = config.load(workspace / "newsletter.toml", env)
    built = build_issue(settings, ISSUE)
    personal = personalizer(settings, built.compiled, secret=SECRET.encode())
    by_address = {s.email: s for s in built.subscribers}
    pairs = [personal.message_with_values(by_address[a]) for a in addresses]
    template = {"subject": built.compiled.subject, "html": built.compiled.html, "text": built.compiled.text}
    batch = Batch(ISSUE, batch_id, tuple(m for m, _ in pairs), tuple(v for _, v in pairs), template)
    with open_ledger(settings) as ledger:
        ledger.acquire_lease(ISSUE, "dead-run", stale_after=60)
        assert ledger.claim(ISSUE, batch_id, addresses, "dead-run") == set(addresses)
        ledger.release_lease(ISSUE, "dead-run")
    if not accepted:  # killed between the claim and the call
        return
    with requests.Session() as session:
        assert {o.state for o in open_provider(settings).send_batch(batch, session)} == {"sent"}


@pytest.mark.parametrize("hours, forgotten", [(22, False), (25, True)])
@BOTH_LEDGERS
def test_resend_retries_a_dead_runs_batch_only_while_it_remembers_the_key(run, workspace, fake, ledger_clock,
                                                                          hours, forgotten):
    addresses = write_readers(workspace, 6)
    env = provider_env("resend", fake, NEWSLETTER_PROVIDER_BATCH_SIZE="2")
    assert run("send", ISSUE, "--yes", "--limit", "2", env=env).exit_code == 4
    ledger_clock["now"] = datetime.now(timezone.utc) - timedelta(hours=hours)
    dead_run_batch(workspace, env, fake, addresses[2:4], "deadbatch")
    ledger_clock["now"] = None
    if forgotten:
        fake.forget_idempotency_keys()  # a day went by: replaying the batch would send it again
    result = run("send", ISSUE, "--yes", env=env)
    assert fake.duplicates() == {}, "somebody got two copies"
    assert sorted(a.to for a in fake.delivered("resend")) == addresses
    counts = json.loads(run("status", ISSUE, "--json").stdout)
    if forgotten:
        assert result.exit_code == 3, result.stderr
        assert "marked unknown, not re-sent (first claimed more than 23 h ago, past the time resend keeps its " \
            "idempotency keys)" in result.stdout
        assert counts["sent"] == 4 and counts["unknown"] == 2
    else:
        assert result.exit_code == 0, result.stderr
        assert "retried with the same idempotency key" in result.stdout
        assert counts["sent"] == 6 and counts["unknown"] == 0


# -- newsletter reconcile: what a provider proves was never accepted goes back to pending -----------
@pytest.mark.parametrize("name, age", [("postmark", timedelta(minutes=5)), ("mailgun", timedelta(hours=2))])
@BOTH_LEDGERS
def test_reconcile_moves_never_accepted_rows_back_to_pending(workspace, fake, name, age, monkeypatch):
    addresses = write_readers(workspace, 4)
    env = provider_env(name, fake)
    settings = config.load(workspace / "newsletter.toml", env)
    built = build_issue(settings, ISSUE)
    with open_ledger(settings) as ledger:
        ledger.create_plan(ISSUE, content_hash="h", subject="s", segment="", emails=addresses)
        ledger.acquire_lease(ISSUE, "me", stale_after=60)
        assert ledger.claim(ISSUE, "lostbatch", addresses[:2], "me")
        ledger.mark_unknown(ISSUE, ["lostbatch"], "test: the answer never came")
        provider = open_provider(settings)
        personal = personalizer(settings, built.compiled, secret=SECRET.encode())
        too_soon = reconcile_issue(ISSUE, built.subscribers, provider, ledger, personal)
        assert too_soon.still_unknown == 2 and too_soon.reasons  # absence proves nothing yet
        later = datetime.now(timezone.utc) + age
        report = reconcile_issue(ISSUE, built.subscribers, provider, ledger, personal, now=later)
        assert report.resolved["retry"] == 2 and report.still_unknown == 0
        assert {r.email for r in ledger.rows(ISSUE, ("pending",))} == set(addresses)


@pytest.mark.parametrize("name, claimed, marked", [
    # the first send is past the window (key forgotten, logs purged), though the rows changed lately
    ("resend", timedelta(hours=25), timedelta(hours=2)),
    ("postmark", timedelta(days=41), timedelta(hours=2)),
    ("mailgun", timedelta(days=3), timedelta(hours=2)),
    # the last try may be too recent for the logs to show it, though the batch was claimed long ago
    ("postmark", timedelta(hours=2), timedelta(seconds=10)),
    ("mailgun", timedelta(hours=2), timedelta(minutes=10)),
])
@BOTH_LEDGERS
def test_reconcile_judges_each_window_on_its_safe_side(workspace, fake, ledger_clock, name, claimed, marked):
    """Closing edges (a key or a log expiring) count from the first claim; opening ones (logs catching up)
    from the last change. Either way round, absence would prove nothing, and Resend would send again."""
    addresses = write_readers(workspace, 4)
    env = provider_env(name, fake)
    settings = config.load(workspace / "newsletter.toml", env)
    built = build_issue(settings, ISSUE)
    now = datetime.now(timezone.utc)
    with open_ledger(settings) as ledger:
        ledger_clock["now"] = now - claimed
        ledger.create_plan(ISSUE, content_hash="h", subject="s", segment="", emails=addresses)
        ledger.acquire_lease(ISSUE, "me", stale_after=60)
        assert ledger.claim(ISSUE, "lostbatch", addresses[:2], "me")
        ledger_clock["now"] = now - marked
        ledger.mark_unknown(ISSUE, ["lostbatch"], "test: the answer never came")
        ledger_clock["now"] = None
        fake.forget_idempotency_keys()
        personal = personalizer(settings, built.compiled, secret=SECRET.encode())
        report = reconcile_issue(ISSUE, built.subscribers, open_provider(settings), ledger, personal, now=now)
        assert report.still_unknown == 2 and report.reasons
        assert {r.email for r in ledger.rows(ISSUE, ("unknown",))} == set(addresses[:2])
    assert fake.delivered() == []  # Resend was not asked to replay a batch whose key it has forgotten


@BOTH_LEDGERS
def test_reconcile_with_nothing_in_doubt_says_so(run, fake):
    result = run("reconcile", ISSUE, env=provider_env("postmark", fake))
    assert result.exit_code == 0 and "nothing to reconcile" in result.output


# -- newsletter send with recipients in doubt: offer to reconcile, or say how -------------------------
def unknown_rows(workspace: Path, fake: FakeProviders, ledger_clock, name: str,
                 ago: timedelta = timedelta(minutes=5)) -> tuple[list[str], dict]:
    """An issue with 2 sent, 2 pending and 3 `unknown` (2 the provider accepted, 1 it never saw), ``ago`` old."""
    addresses = write_readers(workspace, 7)
    env = provider_env(name, fake, NEWSLETTER_PROVIDER_BATCH_SIZE="2")
    code, _, err = finish(newsletter(workspace, env, "send", ISSUE, "--yes", "--limit", "2"))
    assert code == 4, err
    now = datetime.now(timezone.utc)
    ledger_clock["now"] = now - ago - timedelta(minutes=1)
    dead_run_batch(workspace, env, fake, addresses[2:4], "deadbatch")
    dead_run_batch(workspace, env, fake, addresses[4:5], "lostbatch", accepted=False)
    ledger_clock["now"] = now - ago
    with open_ledger(config.load(workspace / "newsletter.toml", env)) as ledger:
        assert ledger.mark_unknown(ISSUE, ["deadbatch", "lostbatch"], "test: a run died mid-batch") == 3
    ledger_clock["now"] = None
    return addresses, env


def searches(fake: FakeProviders) -> int:
    return sum(1 for method, path in fake.requests_seen if method == "GET" and path == "/messages/outbound")


@BOTH_LEDGERS
def test_send_on_a_terminal_offers_to_reconcile_then_sends_what_was_never_accepted(
        run, workspace, fake, ledger_clock, monkeypatch):
    addresses, env = unknown_rows(workspace, fake, ledger_clock, "postmark")
    monkeypatch.setattr("newsletter.cli.send._interactive", lambda: True)
    result = run("send", ISSUE, env=env, input="y\ny\n")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "3 recipients are in doubt; ask postmark now? [Y/n]" in out
    assert "Resolved: 2 sent, 1 back to pending, 0 failed; 0 still unknown." in out
    assert "Send 3 email(s) now? [y/N]" in out  # the one postmark never saw, and the 2 pending
    assert out.index("ask postmark now?") < out.index("Resolved:") < out.index("Send 3 email(s) now?")
    assert "newsletter reconcile" not in out  # nothing left in doubt
    assert fake.duplicates() == {} and sorted(a.to for a in fake.delivered("postmark")) == addresses
    assert json.loads(run("status", ISSUE, "--json").stdout)["sent"] == 7


def test_send_on_a_terminal_declined_leaves_them_in_doubt_and_says_how(run, workspace, fake, ledger_clock,
                                                                        monkeypatch):
    _, env = unknown_rows(workspace, fake, ledger_clock, "postmark")
    monkeypatch.setattr("newsletter.cli.send._interactive", lambda: True)
    result = run("send", ISSUE, env=env, input="n\ny\n")
    assert result.exit_code == 3, result.stderr
    assert "3 recipients are in doubt; ask postmark now? [Y/n]" in result.stdout and searches(fake) == 0
    assert result.stdout.rstrip().endswith("3 recipients are in doubt; to ask postmark whether it accepted them, "
                                           f"run: newsletter reconcile {ISSUE}")
    assert fake.duplicates() == {}


@BOTH_LEDGERS
def test_send_under_yes_never_asks_and_prints_the_exact_command(run, workspace, fake, ledger_clock):
    # an hour old: mailgun's events are conclusive from 30 minutes after a send
    addresses, env = unknown_rows(workspace, fake, ledger_clock, "mailgun", timedelta(hours=1))
    result = run("send", ISSUE, "--yes", env=env)
    assert result.exit_code == 3, result.stderr
    assert "now? [Y/n]" not in result.stdout and searches(fake) == 0
    [line] = [x for x in result.stdout.splitlines() if "in doubt;" in x]
    assert line == ("3 recipients are in doubt; to ask mailgun whether it accepted them, "
                    f"run: newsletter reconcile {ISSUE}")
    program, *command = line.rpartition("run: ")[2].split()
    assert program == "newsletter" and run(*command, env=env).exit_code == 0  # the printed command works
    assert run("send", ISSUE, "--yes", env=env).exit_code == 0
    assert fake.duplicates() == {} and sorted(a.to for a in fake.delivered("mailgun")) == addresses


def test_send_with_a_provider_that_cannot_answer_says_so_and_points_at_resend_unknown(
        run, workspace, fake, ledger_clock, monkeypatch):
    _, env = unknown_rows(workspace, fake, ledger_clock, "sendgrid")
    expected = ("3 recipients are in doubt, and sendgrid cannot tell whether it accepted them; check its "
                "dashboard, and if they never went out, send them again (they may get a second copy): "
                f"newsletter send {ISSUE} --resend-unknown\n")
    result = run("send", ISSUE, "--yes", "--json", env=env)
    assert result.exit_code == 3 and json.loads(result.stdout)["unknown"] == 3
    assert result.stderr.endswith(expected)  # stdout carries only the JSON
    monkeypatch.setattr("newsletter.cli.send._interactive", lambda: True)
    result = run("send", ISSUE, env=env, input="y\n")  # only the send is asked about
    assert result.exit_code == 3 and "now? [Y/n]" not in result.stdout and expected in result.stdout
    assert fake.duplicates() == {}


# -- newsletter test: proofs ------------------------------------------------------------------------
@pytest.mark.parametrize("name", PROVIDERS)
def test_proofs_are_prefixed_personalised_and_never_in_the_ledger(run, workspace, fake, name):
    result = run("test", ISSUE, "--to", "editor@example.com", "--to", "Proof.Reader@example.org",
                 env=provider_env(name, fake))
    assert result.exit_code == 0, result.output
    delivered = fake.delivered(name)
    assert sorted(a.to for a in delivered) == ["Proof.Reader@example.org", "editor@example.com"]
    for message in delivered:
        assert message.subject.startswith("[TEST] Field Notes #48")
        assert "Hi Ada Lovelace," in message.text  # the first subscribed subscriber
    assert not (workspace / ".newsletter" / "ledger.sqlite3").exists()
    assert "editor@example.com: sent" in result.output


def test_proof_as_a_named_subscriber(run, fake):
    result = run("test", ISSUE, "--to", "editor@example.com", "--as", "grace@example.org",
                 env=provider_env("mailgun", fake))
    assert result.exit_code == 0, result.output
    [message] = fake.delivered("mailgun")
    assert "Hi Grace Hopper," in message.html and message.subject.startswith("[TEST] ")


def test_proof_to_a_bad_address_is_refused_before_sending(run, fake):
    result = run("test", ISSUE, "--to", "editor@example.com", "--to", "not an address",
                 env=provider_env("postmark", fake))
    assert result.exit_code == 2 and "'not an address' is not an email address" in result.output
    assert fake.send_calls == 0


def test_proof_with_a_wrong_key_says_so_without_the_key(run, fake):
    env = provider_env("sendgrid", fake, NEWSLETTER_API_KEY="wrong-Secret-987")
    result = run("test", ISSUE, "--to", "editor@example.com", env=env)
    assert result.exit_code == 1 and "sendgrid refused the API key (HTTP 401)" in result.stderr
    assert "wrong-Secret-987" not in result.output + result.stderr and fake.delivered() == []


def test_proof_in_postmark_test_mode_uses_the_test_token(run, fake):
    result = run("test", ISSUE, "--to", "editor@example.com",
                 env=provider_env("postmark", fake, NEWSLETTER_PROVIDER_TEST_MODE="true"))
    assert result.exit_code == 0 and "test mode" in result.output
    assert fake.delivered() == [] and [a.test for a in fake.accepted] == [True]


def test_proof_retries_a_429_then_succeeds(run, fake):
    fake.inject("status", status=429, retry_after=0)
    result = run("test", ISSUE, "--to", "editor@example.com", env=provider_env("resend", fake))
    assert result.exit_code == 0, result.output
    assert fake.send_calls == 2 and len(fake.delivered("resend")) == 1


def test_proof_does_not_wait_out_a_retry_after_longer_than_its_policy(run, fake):
    """Was: a proof waited min(Retry-After, 30 s) and tried again; under the one retry policy a proof waits
    at most 30 s, so a 429 asking for two hours stops it at once, saying so."""
    fake.inject("status", status=429, retry_after=7200)
    result = run("test", ISSUE, "--to", "editor@example.com", env=provider_env("resend", fake))
    assert result.exit_code == 1 and "HTTP 429" in result.stderr
    assert fake.send_calls == 1 and fake.delivered("resend") == []


# -- Amazon SES: what preflight learns of the account ---------------------------------------------------
def test_ses_in_the_sandbox_warns_then_only_verified_readers_receive(workspace, fake):
    addresses = write_readers(workspace, 4)
    fake.ses_account.update(ProductionAccessEnabled=False, SendQuota={"Max24HourSend": 200.0, "MaxSendRate": 50.0,
                                                                      "SentLast24Hours": 0.0})
    fake.ses_verified.add(addresses[2])
    env = provider_env("ses", fake)
    del env["NEWSLETTER_PROVIDER_RATE_LIMIT"]  # the account's MaxSendRate, read by preflight
    code, out, err = finish(newsletter(workspace, env, "send", ISSUE, "--yes"))
    assert "is in the sandbox: only verified addresses receive" in out + err
    assert code == 3, err  # the unverified failed
    assert [a.to for a in fake.delivered("ses")] == [addresses[2]]
    counts = ledger_counts(workspace, env)
    assert counts["sent"] == 1 and counts["failed"] == 3
    assert KEY not in out + err


def test_ses_without_credentials_stops_before_anything_is_planned(workspace, fake):
    write_readers(workspace, 2)
    env = {k: v for k, v in provider_env("ses", fake).items() if not k.startswith("AWS_ACCESS")}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": str(workspace / "none"), "AWS_CONFIG_FILE": str(workspace / "none")}
    code, out, err = finish(newsletter(workspace, env, "send", ISSUE, "--yes"))
    assert code != 0 and "needs AWS credentials" in err
    assert fake.send_calls == 0 and KEY not in out + err


def test_dispatch_of_a_refused_key_says_why_in_its_json_too(run, workspace, fake):
    """cron's `dispatch --json` names what stopped an issue, as it does for an issue that could not start."""
    text = (workspace / "issues" / f"{ISSUE}.md").read_text(encoding="utf-8")
    (workspace / "issues" / f"{ISSUE}.md").write_text(
        text.replace("date: 2026-11-30\n", "date: 2026-11-30\nsend_at: 2026-12-01T08:00:00Z\n", 1), encoding="utf-8")
    env = provider_env("sendgrid", fake, NEWSLETTER_API_KEY="wrong-Secret-987")
    result = run("dispatch", "--json", "--max-age", "1000d", env=env)
    assert result.exit_code == 1
    [record] = json.loads(result.stdout)
    assert record["issue"] == ISSUE and record["stopped"] and record["exit_code"] == 1
    assert record["error"].startswith("sendgrid refused the API key (HTTP 401)")
    assert "wrong-Secret-987" not in result.stdout + result.stderr and fake.delivered() == []
