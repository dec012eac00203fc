"""`newsletter send` then `newsletter report ISSUE --json` through real sockets, for each provider whose API
gives per-issue figures: the fake (tests/fakeproviders.py) counts what it accepted under the issue's tag and
what the readers did with it, and the report must say exactly that."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import date

import pytest
import requests
from fakeproviders import FakeProviders, sample_batch
from helpers import make_adapter, send, write_readers

from newsletter.ledger.sqlite import SQLiteLedger

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
    fake.engage(name, readers[2], "click", url="https://example.com/about", platform="Mobile")
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
    if name in ("postmark", "mailgun"):  # Postmark's click search, Mailgun's clicked events
        assert figures["top_links"] == [{"url": "https://example.com/story", "clicks": 2},
                                        {"url": "https://example.com/about", "clicks": 1}]
    else:  # SendGrid's category stats have no per-link figures
        assert figures["top_links"] == []
    assert figures["click_platforms"] == ([{"platform": "Desktop", "clicks": 2}, {"platform": "Mobile", "clicks": 1}]
                                          if name == "postmark" else [])
    assert figures["machine_opens"] is None  # no provider's per-tag figures count them


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


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_env(request) -> dict[str, str]:
    """The workspace's SQLite file, or a fresh PostgreSQL database (tests/pgserver.py)."""
    return {} if request.param == "sqlite" else {"NEWSLETTER_LEDGER_URL": request.getfixturevalue("pg_url")}


def test_the_table_asks_the_provider_once_an_hour_not_once_a_run(run, workspace, fake, ledger_env):
    write_readers(workspace, 3)
    env = {**env_for("sendgrid", fake), **ledger_env}
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


SVG = "{http://www.w3.org/2000/svg}"


def test_the_page_draws_the_trend_across_issues_from_what_the_provider_counted(run, workspace, fake):
    """Two issues sent through the fake; the page of the second has one bar per issue (recipients sent, oldest
    first) and a point per issue and rate, at heights in proportion to the figures the JSON gives."""
    readers = write_readers(workspace, 6)
    later = "2026-12-07-weekly"
    text = (workspace / "issues" / f"{ISSUE}.md").read_text()
    (workspace / "issues" / f"{later}.md").write_text(text.replace("date: 2026-11-30", "date: 2026-12-07"))
    env = env_for("mailgun", fake)
    assert run("send", ISSUE, "--yes", env=env).exit_code == 0
    for reader in readers[:3]:
        fake.engage("mailgun", reader, "open")
    fake.engage("mailgun", readers[0], "click", url="https://example.com/story")
    (workspace / "subscribers" / "subscribers.csv").write_text(
        "email,name\n" + "".join(f"{r},R\n" for r in readers[:4]))  # the later issue goes to fewer readers
    assert run("send", later, "--yes", env=env).exit_code == 0
    fake.engage("mailgun", readers[1], "open")  # now the last message to readers[1]: the later issue's

    page = workspace / "report.html"
    result = run("report", later, "--html", str(page), env=env)
    assert result.exit_code == 0, result.output + result.stderr
    rates = {issue: json.loads(run("report", issue, "--json", env=env).stdout)["provider"]["rates"]
             for issue in (ISSUE, later)}
    assert rates[ISSUE]["open"] == pytest.approx(3 / 6) and rates[later]["open"] == pytest.approx(1 / 4)
    html = page.read_text()
    svg = ET.fromstring(html[html.index("<svg", html.index('class="trend"')):
                             html.index("</svg>", html.index('class="trend"')) + 6])
    bars = svg.findall(f".//{SVG}g[@class='bars']/{SVG}rect")
    assert [(b.get("data-label"), int(b.get("data-value"))) for b in bars] == [(ISSUE, 6), (later, 4)]
    assert float(bars[1].get("height")) == pytest.approx(float(bars[0].get("height")) * 4 / 6, abs=0.01)
    points = {(c.get("data-series"), c.get("data-label")): c for c in svg.findall(f".//{SVG}circle")}
    assert set(points) == {(s, i) for s in ("open", "click") for i in (ISSUE, later)}
    floor = max(float(b.get("y")) + float(b.get("height")) for b in bars)  # the chart's baseline
    highest = max(rates[i][s] for s, i in points)
    for (series, issue), point in points.items():
        assert float(point.get("data-value")) == pytest.approx(rates[issue][series])
        height = floor - float(point.get("cy"))
        assert height == pytest.approx(float(bars[0].get("height")) * rates[issue][series] / highest, abs=0.01)


def test_a_key_that_cannot_read_the_figures_still_prints_the_ledger_part_and_keeps_nothing(run, workspace, fake):
    write_readers(workspace, 3)
    env = env_for("sendgrid", fake)
    assert run("send", ISSUE, "--yes", env=env).exit_code == 0
    fake.inject_read(status=403)  # the categories stats, refused to a Mail Send-only key
    refused = run("report", ISSUE, env=env)
    assert refused.exit_code == 1
    assert "3 sent" in refused.stdout and "stats.read" in refused.stderr and KEY not in refused.output
    again = run("report", ISSUE, "--json", env=env)  # nothing was kept: the provider is asked again
    assert again.exit_code == 0 and json.loads(again.stdout)["provider"]["cached"] is False


def test_an_issue_sent_through_another_provider_is_not_asked_about(run, workspace, fake):
    # Sent through the outbox, reported with postmark configured: postmark's zeros were shown and kept an hour.
    write_readers(workspace, 3)
    assert run("send", ISSUE, "--yes", env={"NEWSLETTER_SECRET": "report-secret"}).exit_code == 0
    result = run("report", ISSUE, "--json", env=env_for("postmark", fake))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "provider" not in report and report["sent"] == 3  # the ledger's part only
    with SQLiteLedger(workspace / ".newsletter" / "ledger.sqlite3") as db:
        assert db.cached_figures("postmark", [ISSUE]) == {}
