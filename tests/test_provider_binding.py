"""The plan knows where it was sent (docs/sending.md, "Provider binding and --restart").

Through the CLI, against the fake providers over real sockets: a run through another provider
than the plan's refuses with exit 1, names both and the way out, and leaves the ledger exactly
as it was; ``send --restart`` forgets an outbox trial and refuses once a real provider sent any.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakeproviders import FakeProviders
from helpers import issue_status
from helpers import ledger_tables as dump

KEY = "binding-key-Qx7"
SECRET = {"NEWSLETTER_SECRET": "binding-signing-secret"}
ISSUE = "2026-11-30-weekly"
pytestmark = pytest.mark.usefixtures("ledger_backend")  # every test on SQLite and on PostgreSQL
SUBSCRIBED = ["ada@example.com", "grace@example.org", "linus@example.net", "margaret@example.com"]


@pytest.fixture(scope="module")
def fake():
    with FakeProviders(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_fake(fake):
    fake.reset()


def via(name: str, fake: FakeProviders, **extra: str) -> dict[str, str]:
    """The environment that sends through ``name`` at the fake (outbox: just the secret)."""
    if name == "outbox":
        return {**SECRET, **extra}
    return {"NEWSLETTER_PROVIDER_NAME": name, "NEWSLETTER_PROVIDER_API_BASE": fake.url,
            "NEWSLETTER_PROVIDER_DOMAIN": fake.domain, "NEWSLETTER_API_KEY": KEY,
            "NEWSLETTER_PROVIDER_RATE_LIMIT": "1000", **SECRET, **extra}


def outbox_files(workspace: Path) -> list[str]:
    folder = workspace / "outbox" / ISSUE
    return sorted(p.name.split("--")[0] for p in folder.glob("*.eml")) if folder.exists() else []


def real_copies(fake: FakeProviders) -> list[str]:
    return sorted(a.to.lower() for a in fake.delivered())


def status(run, env=None) -> dict:
    return issue_status(run, ISSUE, env)


# -- the trial eats the real send ----------------------------------------------------------------
def test_a_trial_through_the_outbox_then_postmark_refuses_and_names_the_way_out(run, workspace, fake):
    assert run("send", ISSUE, "--yes", env=via("outbox", fake)).exit_code == 0
    assert outbox_files(workspace) == SUBSCRIBED
    before = dump(workspace)

    for args in (("send", ISSUE, "--yes"), ("send", ISSUE, "--dry-run"), ("reconcile", ISSUE)):
        result = run(*args, env=via("postmark", fake))
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith(
            f"Error: issue {ISSUE} was first sent through outbox; this run would send through postmark "
            f"(stream broadcast). Nothing was sent or changed (to forget the outbox trial and send the issue to "
            f"everyone through postmark: `newsletter send {ISSUE} --restart`; or switch back: unset "
            f"NEWSLETTER_PROVIDER_NAME (it says postmark) with [provider] name = \"outbox\" in newsletter.toml, "
            f"or set NEWSLETTER_PROVIDER_NAME=outbox)"), args
        assert "already sent" not in result.output
        assert dump(workspace) == before
    assert fake.delivered() == [] and fake.requests_seen == []  # refused before even the preflight


def test_restart_forgets_the_outbox_trial_and_sends_everyone_through_postmark_once(run, workspace, fake):
    assert run("suppressions", "add", "linus@example.net", "--reason", "asked by mail").exit_code == 0
    assert run("send", ISSUE, "--yes", env=via("outbox", fake)).exit_code == 0
    suppressions = dump(workspace)["suppressions"]

    result = run("send", ISSUE, "--restart", "--yes", env=via("postmark", fake))
    assert result.exit_code == 0, result.output
    assert "Restart:    the outbox trial's plan (3 sent) is forgotten when the send starts; its .eml files stay in outbox/" in result.stdout
    assert "Recipients: 3 (first run" in result.stdout
    assert real_copies(fake) == ["ada@example.com", "grace@example.org", "margaret@example.com"]
    assert dump(workspace)["suppressions"] == suppressions  # never touched
    assert dump(workspace)["leases"] == []
    assert outbox_files(workspace) == ["ada@example.com", "grace@example.org", "margaret@example.com"]  # stay
    assert status(run) == {"issue": ISSUE, "total": 3, "pending": 0, "sending": 0, "sent": 3, "failed": 0,
                           "unknown": 0, "skipped": 0, "provider": "postmark:broadcast"}
    # The plan is Postmark's now: a second --restart is refused, and nobody gets a second copy.
    again = run("send", ISSUE, "--restart", "--yes", env=via("postmark", fake))
    assert again.exit_code == 1
    assert real_copies(fake) == ["ada@example.com", "grace@example.org", "margaret@example.com"]


def test_restart_without_yes_and_without_a_terminal_drops_nothing(run, workspace, fake):
    assert run("send", ISSUE, "--yes", env=via("outbox", fake)).exit_code == 0
    before = dump(workspace)
    result = run("send", ISSUE, "--restart", env=via("postmark", fake))
    assert result.exit_code == 1
    assert "not sending without confirmation, and there is no terminal to ask on" in result.stderr
    assert dump(workspace) == before and fake.delivered() == []


def test_restart_asks_once_on_a_terminal_and_no_keeps_the_trial(run, workspace, fake, monkeypatch):
    monkeypatch.setattr("newsletter.cli.send._interactive", lambda: True)
    assert run("send", ISSUE, "--yes", env=via("outbox", fake)).exit_code == 0
    before = dump(workspace)
    declined = run("send", ISSUE, "--restart", env=via("postmark", fake), input="n\n")
    assert declined.exit_code == 0 and "Not sent." in declined.output  # answering no is no error (issue 10)
    assert (f"Forget the outbox trial of {ISSUE} and send 4 email(s) through postmark (stream broadcast) now?"
            in declined.output)
    assert dump(workspace) == before and fake.delivered() == []
    accepted = run("send", ISSUE, "--restart", env=via("postmark", fake), input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert real_copies(fake) == SUBSCRIBED


def test_restart_of_a_trial_may_change_the_segment(run, workspace, fake):
    assert run("send", ISSUE, "--yes", env=via("outbox", fake)).exit_code == 0
    refused = run("send", ISSUE, "--yes", "--segment", "founders", env=via("outbox", fake))
    assert refused.exit_code == 1 and "was planned for segment" in refused.stderr
    result = run("send", ISSUE, "--yes", "--restart", "--segment", "founders", env=via("postmark", fake))
    assert result.exit_code == 0, result.output
    assert real_copies(fake) == ["ada@example.com", "margaret@example.com"]


# -- a restart never makes a second real copy possible -------------------------------------------
@pytest.mark.parametrize("now", ["postmark", "outbox"])
def test_restart_after_a_real_send_is_refused_with_the_counts(run, workspace, fake, now):
    assert run("send", ISSUE, "--yes", "--limit", "2", env=via("postmark", fake)).exit_code == 4
    before = dump(workspace)
    result = run("send", ISSUE, "--restart", "--yes", env=via(now, fake))
    assert result.exit_code == 1
    resume = f"resume it: `newsletter send {ISSUE}`" if now == "postmark" else "resume it through postmark (stream broadcast)"
    assert result.stderr == (
        f"Error: issue {ISSUE} went through postmark (stream broadcast), not the outbox (2 pending, 2 sent): "
        f"--restart only forgets a trial sent through the outbox, or a plan nobody of which was tried, and would "
        f"give the readers it reached a second copy. Nothing was changed ({resume})\n")
    assert dump(workspace) == before
    assert len(real_copies(fake)) == 2 and outbox_files(workspace) == []


def test_a_plan_that_reached_nobody_can_be_restarted_through_another_provider(run, workspace, fake):
    # SendGrid refused the key before anybody was sent: the plan was bound to it, and no way led elsewhere.
    first = run("send", ISSUE, "--yes", env=via("sendgrid", fake, NEWSLETTER_API_KEY="wrong-key"))
    assert first.exit_code == 1 and status(run)["pending"] == 4
    refused = run("send", ISSUE, "--yes", env=via("postmark", fake))
    assert refused.exit_code == 1
    assert (f"to forget that plan (it reached nobody) and send the issue to everyone through postmark: "
            f"`newsletter send {ISSUE} --restart`") in refused.stderr
    result = run("send", ISSUE, "--yes", "--restart", env=via("postmark", fake))
    assert result.exit_code == 0, result.stderr
    assert "Restart:    the plan bound to sendgrid, which reached nobody (4 pending), is forgotten" in result.stdout
    assert len(real_copies(fake)) == 4 and status(run)["sent"] == 4
    assert run("send", ISSUE, "--yes", "--restart", env=via("sendgrid", fake)).exit_code == 1  # now a real send


# -- a lost override finishes the job in the wrong place -----------------------------------------
def test_dispatch_without_the_override_refuses_to_finish_a_postmark_send_in_the_outbox(run, workspace, fake):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=via("postmark", fake)).exit_code == 4
    before = dump(workspace)
    result = run("dispatch", env=via("outbox", fake))  # NEWSLETTER_PROVIDER_NAME is gone: the toml says outbox
    assert result.exit_code == 1
    assert (f"Error: issue {ISSUE} was first sent through postmark (stream broadcast); this run would send "
            f"through outbox. Nothing was sent or changed (switch back: [provider] name = \"postmark\" in "
            f"newsletter.toml (or export NEWSLETTER_PROVIDER_NAME=postmark))") in result.stderr
    assert "--restart" not in result.stderr
    assert dump(workspace) == before and outbox_files(workspace) == []
    assert run("dispatch", env=via("postmark", fake)).exit_code == 0  # the way out works
    assert real_copies(fake) == SUBSCRIBED


def switched_midway(run, workspace, fake, issue: str, name: str, **override: str) -> str:
    """Send one reader of ``issue`` through ``name``, then the rest with the ``override`` settings: what the
    refused run (exit 1) says, once it is known to have changed nothing in the ledger."""
    assert run("send", issue, "--yes", "--limit", "1", env=via(name, fake)).exit_code == 4
    before = dump(workspace)
    result = run("send", issue, "--yes", env=via(name, fake, **override))
    assert result.exit_code == 1
    assert dump(workspace) == before
    return result.stderr


def test_another_mailgun_domain_or_postmark_stream_is_another_provider(run, workspace, fake):
    refused = switched_midway(run, workspace, fake, ISSUE, "mailgun", NEWSLETTER_PROVIDER_DOMAIN="news.example.com")
    assert ("was first sent through mailgun (domain mg.example.com); this run would send through mailgun "
            "(domain news.example.com)") in refused
    assert ("unset NEWSLETTER_PROVIDER_DOMAIN (it says news.example.com) with [provider] domain = "
            "\"mg.example.com\" in newsletter.toml, or set NEWSLETTER_PROVIDER_DOMAIN=mg.example.com") in refused
    assert run("send", ISSUE, "--yes", env=via("mailgun", fake)).exit_code == 0
    assert real_copies(fake) == SUBSCRIBED

    fake.reset()
    other = ISSUE.replace("11-30", "12-07")
    (workspace / "issues" / f"{other}.md").write_text((workspace / "issues" / f"{ISSUE}.md").read_text())
    refused = switched_midway(run, workspace, fake, other, "postmark", NEWSLETTER_PROVIDER_MESSAGE_STREAM="news")
    assert ("was first sent through postmark (stream broadcast); this run would send through postmark "
            "(stream news)") in refused
    assert len(fake.delivered()) == 1


def test_status_shows_the_provider(run, workspace, fake):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=via("postmark", fake)).exit_code == 4
    assert status(run)["provider"] == "postmark:broadcast"
    assert "provider: postmark (stream broadcast)" in run("status", ISSUE).stdout.splitlines()
    table = run("status").stdout.splitlines()
    assert table[0].split()[-1] == "provider" and table[1].split()[-1] == "postmark:broadcast"
    assert json.loads(run("status", "--json").stdout)[0]["provider"] == "postmark:broadcast"



def test_restart_after_a_killed_run_takes_its_place(run, workspace, fake):
    """A run SIGKILLed after the outbox trial left its lease (SQLite) or its registration (PostgreSQL, where a
    registration used to refuse `--restart` forever): `--restart` goes ahead, and everyone gets one copy."""
    assert run("send", ISSUE, "--yes", env=via("outbox", fake)).exit_code == 0
    url = os.environ.get("NEWSLETTER_LEDGER_URL") or str(workspace / ".newsletter" / "ledger.sqlite3")
    code = (f"from newsletter.ledger import open_url; "
            f"open_url({url!r}).acquire_lease({ISSUE!r}, 'killed', stale_after=60)")
    subprocess.run([sys.executable, "-c", code], check=True)  # takes the issue, then dies without leaving
    result = run("send", ISSUE, "--restart", "--yes", env=via("postmark", fake))
    assert result.exit_code == 0, result.output
    assert real_copies(fake) == ["ada@example.com", "grace@example.org", "linus@example.net",
                                 "margaret@example.com"]
