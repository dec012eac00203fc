"""`newsletter send` then `newsletter report ISSUE --json` through real sockets, for each provider whose API
gives per-issue figures: the fake (tests/fakeproviders.py) counts what it accepted under the issue's tag and
what the readers did with it, and the report must say exactly that."""

from __future__ import annotations

import json
from datetime import date

import pytest
import requests
from fakeproviders import FakeProviders, sample_batch
from helpers import make_adapter, send, write_readers

ISSUE = "2026-11-30-weekly"
KEY = "report-fake-key-Qa52"


@pytest.fixture
def fake():
    with FakeProviders(api_key=KEY) as server:  # a fresh one a test: the stats count all it accepted
        yield server


def env_for(name: str, fake: FakeProviders) -> dict[str, str]:
    return {"NEWSLETTER_PROVIDER_NAME": name, "NEWSLETTER_PROVIDER_API_BASE": fake.url,
            "NEWSLETTER_PROVIDER_DOMAIN": fake.domain, "NEWSLETTER_API_KEY": KEY,
            "NEWSLETTER_PROVIDER_RATE_LIMIT": "1000", "NEWSLETTER_SECRET": "report-secret"}


@pytest.mark.parametrize("name", ["postmark", "sendgrid", "mailgun"])
def test_send_then_report_gives_the_figures_of_what_the_provider_received(run, workspace, fake, name):
    readers = write_readers(workspace, 7)
    env = env_for(name, fake)
    sent = run("send", ISSUE, "--yes", env=env)
    assert sent.exit_code == 0, sent.output + sent.stderr
    assert sorted(a.to for a in fake.delivered(name)) == readers and fake.duplicates() == {}
    fake.engage(name, readers[0], "bounce")
    for reader in readers[1:5]:
        fake.engage(name, reader, "open")
    fake.engage(name, readers[1], "open")  # a second open: in the opens, not in the unique opens
    fake.engage(name, readers[1], "click", url="https://example.com/story")
    fake.engage(name, readers[1], "click", url="https://example.com/story")
    fake.engage(name, readers[2], "click", url="https://example.com/about")
    fake.engage(name, readers[3], "complaint")

    result = run("report", ISSUE, "--json", env=env)
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["sent"] == 7
    provider = report["provider"]
    assert provider["name"] == name and provider["note"] == ""
    figures = provider["figures"]
    assert (figures["processed"], figures["delivered"], figures["bounced"], figures["complained"]) == (7, 6, 1, 1)
    assert (figures["opens"], figures["unique_opens"], figures["clicks"], figures["unique_clicks"]) == (5, 4, 3, 2)
    today = fake.delivered(name)[0].day
    assert figures["opens_by_day"] == [{"day": today, "unique_opens": 4}]
    assert figures["clicks_by_day"] == [{"day": today, "unique_clicks": 2}]
    assert provider["rates"]["open"] == pytest.approx(4 / 6)  # over delivered, not over sent
    if name == "postmark":  # the only one of the three whose links are read (its click search)
        assert figures["top_links"] == [{"url": "https://example.com/story", "clicks": 2},
                                        {"url": "https://example.com/about", "clicks": 1}]
    else:
        assert figures["top_links"] == []


@pytest.mark.parametrize("name", ["postmark", "sendgrid", "mailgun"])
def test_the_fake_counts_only_the_issues_tag(fake, name):
    """Guards the test above: the figures come from the messages under the issue's tag and the readers'
    engagements with those, not from everything the fake accepted."""
    adapter = make_adapter(name, KEY, api_base=fake.url, domain=fake.domain)
    send(adapter, sample_batch(3, issue_id="issue-one", addresses=[f"one{n}@example.com" for n in range(3)]))
    send(adapter, sample_batch(2, issue_id="issue-two", addresses=["one0@example.com", "two1@example.com"]))
    fake.engage(name, "one1@example.com", "open")
    fake.engage(name, "one0@example.com", "open")  # the last message to one0: issue-two's
    fake.engage(name, "two1@example.com", "bounce")
    since = date.fromisoformat(fake.delivered(name)[0].day)
    with requests.Session() as session:
        one, two = (adapter.issue_stats(session, issue, since) for issue in ("issue-one", "issue-two"))
    assert (one.processed, one.delivered, one.bounced, one.opens, one.unique_opens) == (3, 3, 0, 1, 1)
    assert (two.processed, two.delivered, two.bounced, two.opens, two.unique_opens) == (2, 1, 1, 1, 1)


def test_the_table_asks_the_provider_once_an_hour_not_once_a_run(run, workspace, fake):
    write_readers(workspace, 3)
    env = env_for("sendgrid", fake)
    assert run("send", ISSUE, "--yes", env=env).exit_code == 0

    def stats_calls(*args):
        before = len(fake.requests_seen)
        result = run("report", *args, env=env)
        assert result.exit_code == 0, result.output + result.stderr
        return sum(1 for _, path in fake.requests_seen[before:] if path == "/v3/categories/stats"), result.stdout

    assert stats_calls()[0] == 1
    asked, table = stats_calls()
    assert asked == 0 and "kept from a run less than an hour ago" in table
    assert stats_calls("--refresh")[0] == 1
    asked, _ = stats_calls(ISSUE, "--json")  # in detail: the kept totals do not answer that
    assert asked == 1
    assert stats_calls(ISSUE)[0] == 0 and json.loads(run("report", ISSUE, "--json", env=env).stdout)[
        "provider"]["cached"] is True
