"""`newsletter report`: the ledger part under a fake clock, each provider's documented stats answer with the
exact request, and the CLI end to end (text, --json, --html with its SVG parsed)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import responses
from helpers import BOTH_LEDGERS, LedgerClock, SleepClock, canned, make_adapter, workspace_ledger
from responses.matchers import query_param_matcher

from newsletter.ledger.base import CachedFigures
from newsletter.models import Outcome
from newsletter.report import every_minute, ledger_figures, provider_figures

ISSUE = "2026-11-30-weekly"
KEY = "report-key-Zr81"
ORIGIN = "https://api.test"


@pytest.fixture
def ledger(tmp_path):
    """A fresh ledger: SQLite, or PostgreSQL where the test asks for ``ledger_backend``."""
    with workspace_ledger(tmp_path) as db:
        yield db


def send(ledger, issue, batch, outcomes):
    ledger.claim(issue, batch, [o.email for o in outcomes], "me")
    ledger.record(issue, batch, outcomes, source="postmark")


def sent(*emails):
    return [Outcome(e, "sent", provider_id=f"id-{e}") for e in emails]


@BOTH_LEDGERS
def test_the_ledger_part_counts_states_reasons_minutes_and_suppressions_after_the_issue(ledger, monkeypatch):
    clock = LedgerClock(monkeypatch)
    emails = [f"r{n}@example.com" for n in range(8)]
    ledger.acquire_lease(ISSUE, "me", stale_after=60)
    ledger.create_plan(ISSUE, content_hash="h", subject="Hi", segment="", emails=emails)
    ledger.add_suppressions([("r7@example.com", "unsubscribed at postmark")], "postmark")  # before: not this issue's
    clock.at("2026-11-30T09:01:10")
    send(ledger, ISSUE, "b1", sent("r0@example.com", "r1@example.com", "r2@example.com"))
    clock.at("2026-11-30T09:01:50")
    send(ledger, ISSUE, "b2", sent("r3@example.com") + [Outcome("r4@example.com", "failed", reason="bad address")])
    clock.at("2026-11-30T09:04:05")  # a pause of two minutes (a 429), then the last batch
    send(ledger, ISSUE, "b3", sent("r5@example.com") + [Outcome("r6@example.com", "failed", reason="mailbox full")])
    ledger.skip(ISSUE, [("r7@example.com", "suppressed")])
    clock.at("2026-12-01T08:00:00")
    ledger.add_suppressions([("r0@example.com", "unsubscribed at postmark (ManualSuppression (Recipient))"),
                             ("r1@example.com", "complained at postmark (SpamComplaint (Recipient))")], "postmark")
    ledger.add_suppressions([("r2@example.com", "added by hand")], "manual")
    ledger.add_suppressions([("r4@example.com", "unsubscribed at postmark")], "postmark")  # never sent: not counted
    clock.at("2026-12-07T09:00:00")
    ledger.create_plan("2026-12-07-weekly", content_hash="h", subject="Next", segment="", emails=["r3@example.com"])
    clock.at("2026-12-08T09:00:00")  # after the next issue was planned: that one's, not this one's
    ledger.add_suppressions([("r3@example.com", "unsubscribed at postmark")], "postmark")

    figures = ledger_figures(ledger, ledger.issue(ISSUE))
    assert figures.counts == {"pending": 0, "sending": 0, "sent": 5, "failed": 2, "unknown": 0, "skipped": 1}
    assert figures.failed_reasons == {"bad address": 1, "mailbox full": 1}
    assert figures.timeline == [("2026-11-30T09:01", 4), ("2026-11-30T09:02", 0), ("2026-11-30T09:03", 0),
                                ("2026-11-30T09:04", 1)]
    assert figures.suppressions == {("manual", "other", "time"): 1, ("postmark", "complained", "time"): 1,
                                    ("postmark", "unsubscribed", "time"): 1}
    summaries = ledger.summaries(5)
    assert [s.issue.issue_id for s in summaries] == ["2026-12-07-weekly", ISSUE]  # newest first
    assert summaries[0].counts["pending"] == 1 and summaries[1].counts["failed"] == 2
    assert [s.issue.issue_id for s in ledger.summaries(1)] == ["2026-12-07-weekly"]


def test_every_minute_fills_the_gaps_between_the_first_and_the_last():
    assert every_minute([("2026-11-30T23:59", 2), ("2026-12-01T00:02", 1)]) == [
        ("2026-11-30T23:59", 2), ("2026-12-01T00:00", 0), ("2026-12-01T00:01", 0), ("2026-12-01T00:02", 1)]
    assert every_minute([]) == []


# -- each provider's documented answer, with the exact request ------------------------------------------
def adapter(name: str):
    return make_adapter(name, KEY, api_base=ORIGIN, domain="mg.example.com")


def read(provider, ledger, monkeypatch, *, detail=True, clock=None):
    LedgerClock(monkeypatch)
    ledger.create_plan(ISSUE, content_hash="h", subject="Hi", segment="", emails=["a@example.com"])
    clock = clock or SleepClock()
    return provider_figures(provider, [ledger.issue(ISSUE)], detail=detail, cache=ledger, sleep=clock.sleep,
                            clock=clock)[ISSUE]


@responses.activate
def test_postmark_reads_the_stats_api_by_tag_and_stream_and_counts_links_from_the_click_search(ledger, monkeypatch):
    stats = {"tag": ISSUE, "fromdate": "2026-11-30", "messagestream": "broadcast"}
    headers = {"X-Postmark-Server-Token": KEY}
    for path, name in (("/stats/outbound", "stats-outbound.json"), ("/stats/outbound/opens", "stats-opens.json"),
                       ("/stats/outbound/clicks", "stats-clicks.json"),
                       ("/stats/outbound/clicks/platforms", "stats-clicks-platforms.json")):
        responses.get(ORIGIN + path, json=canned("postmark", name), match=[query_param_matcher(stats),
                      responses.matchers.header_matcher(headers)])
    responses.get(ORIGIN + "/messages/outbound/clicks", json=canned("postmark", "clicks-search.json"),
                  match=[query_param_matcher({"count": "500", "offset": "0", "tag": ISSUE,
                                              "messagestream": "broadcast"})])
    figures = read(adapter("postmark"), ledger, monkeypatch)
    s = figures.stats
    assert (s.processed, s.bounced, s.delivered, s.complained) == (615, 64, 551, 10)
    assert (s.opens, s.unique_opens, s.clicks, s.unique_clicks) == (166, 26, 72, 30)
    assert s.opens_by_day == (("2026-11-30", 4), ("2026-12-01", 22))
    assert s.clicks_by_day == (("2026-11-30", 21), ("2026-12-01", 9))
    assert s.top_links == (("https://example.com/story", 2), ("https://example.com/about", 1))
    assert s.click_platforms == (("Desktop", 42), ("Mobile", 25), ("Unknown", 5)) and s.machine_opens is None
    assert figures.rates()["open"] == pytest.approx(26 / 551)  # over delivered, not over sent


@responses.activate
def test_sendgrid_sums_the_category_stats_of_each_day(ledger, monkeypatch):
    responses.get(ORIGIN + "/v3/categories/stats", json=canned("sendgrid", "categories-stats.json"),
                  match=[query_param_matcher({"categories": ISSUE, "start_date": "2026-11-30",
                                              "aggregated_by": "day"}),
                         responses.matchers.header_matcher({"Authorization": f"Bearer {KEY}"})])
    s = read(adapter("sendgrid"), ledger, monkeypatch).stats
    assert (s.processed, s.delivered, s.bounced, s.complained, s.unsubscribed) == (100, 98, 2, 1, 2)
    assert (s.opens, s.unique_opens, s.clicks, s.unique_clicks) == (100, 49, 12, 8)
    assert s.opens_by_day == (("2026-11-30", 40), ("2026-12-01", 9)) and s.top_links == ()


@responses.activate
def test_a_sendgrid_key_without_the_stats_scope_is_named_with_the_scope_it_needs(ledger, monkeypatch):
    responses.get(ORIGIN + "/v3/categories/stats", json=canned("sendgrid", "403-scope.json"), status=403)
    figures = read(adapter("sendgrid"), ledger, monkeypatch)
    assert figures.stats is None
    assert "stats.read" in figures.note and "categories.stats.read" in figures.note and KEY not in figures.note


@responses.activate
def test_mailgun_asks_the_metrics_api_for_the_tag_on_its_domain(ledger, monkeypatch):
    def query(request):
        body = json.loads(request.body)
        assert body["filter"] == {"AND": [
            {"attribute": "domain", "comparator": "=", "values": [{"label": "mg.example.com", "value": "mg.example.com"}]},
            {"attribute": "tag", "comparator": "=", "values": [{"label": ISSUE, "value": ISSUE}]}]}
        assert body["start"] == "Mon, 30 Nov 2026 00:00:00 +0000" and body["resolution"] == "day"
        assert body["dimensions"] == ["time"] and "unique_opened_count" in body["metrics"]
        return 200, {}, json.dumps(canned("mailgun", "metrics.json"))

    responses.add_callback(responses.POST, ORIGIN + "/v1/analytics/metrics", callback=query)
    clicked = canned("mailgun", "events-clicked.json")
    responses.get(ORIGIN + "/v3/mg.example.com/events", json=clicked, match=[query_param_matcher(
        {"event": "clicked", "tags": ISSUE, "limit": "300", "ascending": "yes", "begin": "1795996800"})])
    responses.get(clicked["paging"]["next"], json={"items": [], "paging": clicked["paging"]})
    s = read(adapter("mailgun"), ledger, monkeypatch).stats
    assert (s.processed, s.delivered, s.bounced, s.complained, s.unsubscribed) == (50, 48, 2, 1, 1)
    assert (s.unique_opens, s.unique_clicks) == (24, 6)
    assert s.opens_by_day == (("2026-11-30", 20), ("2026-12-01", 4))
    assert s.top_links == (("https://example.com/story", 2), ("https://example.com/about", 1))
    assert len(responses.calls) == 3  # the metrics, then the clicked events to their empty page
    assert all(call.request.headers["Authorization"].startswith("Basic ") for call in responses.calls)


@responses.activate
def test_a_429_on_the_clicked_events_is_waited_out_as_mailgun_asks(ledger, monkeypatch):
    responses.post(ORIGIN + "/v1/analytics/metrics", json=canned("mailgun", "metrics.json"))
    clicked = canned("mailgun", "events-clicked.json")
    responses.get(ORIGIN + "/v3/mg.example.com/events", status=429, headers={"Retry-After": "7"},
                  json={"message": "Too many requests"})
    responses.get(ORIGIN + "/v3/mg.example.com/events", json=clicked)
    responses.get(clicked["paging"]["next"], json={"items": []})
    clock = SleepClock()
    assert read(adapter("mailgun"), ledger, monkeypatch, clock=clock).stats.top_links[0] == (
        "https://example.com/story", 2)
    assert 7 <= max(clock.waits) < 8 and len(responses.calls) == 4


@responses.activate
def test_mailgun_clicked_events_that_never_end_are_an_error_not_a_short_count(ledger, monkeypatch):
    responses.post(ORIGIN + "/v1/analytics/metrics", json=canned("mailgun", "metrics.json"))
    clicked = canned("mailgun", "events-clicked.json")
    responses.get(ORIGIN + "/v3/mg.example.com/events", json=clicked)
    responses.get(clicked["paging"]["next"], json=clicked)  # the next page links to itself, with items
    figures = read(adapter("mailgun"), ledger, monkeypatch)
    assert figures.stats is None and "did not come to an end" in figures.note
    assert len(responses.calls) == 3


@responses.activate
def test_a_metrics_query_that_meets_a_503_is_tried_again(ledger, monkeypatch):
    responses.post(ORIGIN + "/v1/analytics/metrics", status=503)
    responses.post(ORIGIN + "/v1/analytics/metrics", json=canned("mailgun", "metrics.json"))
    assert read(adapter("mailgun"), ledger, monkeypatch, detail=False).stats.delivered == 48
    assert len(responses.calls) == 2


@pytest.mark.parametrize("name, words", [("resend", "never by tag"), ("outbox", "nothing is delivered")])
def test_providers_without_per_issue_figures_say_why(ledger, monkeypatch, name, words):
    figures = read(adapter(name), ledger, monkeypatch)
    assert figures.stats is None and words in figures.note


# -- the figures kept in the ledger -------------------------------------------------------------------------
@responses.activate
def test_kept_figures_are_reused_for_an_hour_then_asked_again_and_refresh_always_asks(ledger, monkeypatch):
    responses.get(ORIGIN + "/v3/categories/stats", json=canned("sendgrid", "categories-stats.json"))
    LedgerClock(monkeypatch)
    ledger.create_plan(ISSUE, content_hash="h", subject="Hi", segment="", emails=["a@example.com"])
    provider, wall, record = adapter("sendgrid"), SleepClock(), [ledger.issue(ISSUE)]
    wall.now = 1_800_000_000.0

    def report(detail=False, refresh=False):
        found = provider_figures(provider, record, detail=detail, cache=ledger, refresh=refresh, now=wall,
                                 sleep=wall.sleep, clock=wall)[ISSUE]
        return found, len(responses.calls)

    first, asked = report()
    assert asked == 1 and not first.cached and first.fetched_at == wall.now and first.stats.delivered == 98
    wall.now += 3599
    again, asked = report()
    assert asked == 1 and again.cached and again.stats == first.stats and again.fetched_at == first.fetched_at
    _, asked = report(detail=True)  # kept totals do not answer a question in detail
    assert asked == 2
    wall.now += 1  # an hour after the first reading, but the detailed one is a second old
    assert report()[1] == 2
    wall.now += 3600
    old, asked = report()
    assert asked == 3 and not old.cached and old.fetched_at == wall.now
    assert report(refresh=True)[1] == 4
    assert ledger.cached_figures("sendgrid:", [ISSUE])[ISSUE].fetched_at == wall.now
    ledger.store_figures("sendgrid:", [CachedFigures(ISSUE, True, '{"processed": "many"', wall.now)])
    unreadable, asked = report()  # what cannot be read back is asked again, never shown
    assert asked == 5 and not unreadable.cached and unreadable.stats.processed == 100


@responses.activate
def test_a_failed_reading_is_not_kept(ledger, monkeypatch):
    responses.get(ORIGIN + "/v3/categories/stats", json=canned("sendgrid", "403-scope.json"), status=403)
    read(adapter("sendgrid"), ledger, monkeypatch)
    assert ledger.cached_figures("sendgrid:", [ISSUE]) == {}


# -- the CLI, end to end ------------------------------------------------------------------------------------
SECRET = {"NEWSLETTER_SECRET": "test-secret"}


@BOTH_LEDGERS
def test_report_after_an_outbox_send_prints_json_a_table_and_an_html_page(run, workspace):
    assert run("send", ISSUE, "--yes", env=SECRET).exit_code == 0
    result = run("report", ISSUE, "--json", env=SECRET)
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["sent"] == 4 and obj["planned"] == sum(obj[s] for s in ("pending", "sending", "sent", "failed",
                                                                         "unknown", "skipped"))
    assert sum(m["accepted"] for m in obj["timeline"]) == 4
    assert obj["provider"]["figures"] is None and "nothing is delivered" in obj["provider"]["note"]
    assert any("delivered" in note for note in obj["notes"]) and any("Apple" in note for note in obj["notes"])

    text = run("report", ISSUE, env=SECRET)
    assert text.exit_code == 0 and "4 sent" in text.stdout and "4 accepted" in text.stdout

    table = run("report", env=SECRET)
    assert table.exit_code == 0 and ISSUE in table.stdout and "over delivered" in table.stdout

    page = workspace / "report.html"
    assert run("report", ISSUE, "--html", str(page), env=SECRET).exit_code == 0
    html = page.read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    piped = run("report", ISSUE, "--html", "-", env=SECRET)  # standard output: the page alone, no file "-"
    assert piped.exit_code == 0 and piped.stdout == html and not (workspace / "-").exists()
    svg = html[html.index("<svg"):html.index("</svg>") + 6]
    bars = ET.fromstring(svg).findall(".//{http://www.w3.org/2000/svg}rect")
    assert [(b.get("data-label"), int(b.get("data-value"))) for b in bars] == [
        (m["minute"][11:], m["accepted"]) for m in obj["timeline"]]
    tallest = max(float(b.get("height")) for b in bars)
    for bar, minute in zip(bars, obj["timeline"]):
        assert float(bar.get("height")) == pytest.approx(tallest * minute["accepted"] / max(
            m["accepted"] for m in obj["timeline"]), abs=0.01)


@BOTH_LEDGERS
def test_report_of_an_issue_never_sent_is_an_error(run, workspace):
    result = run("report", ISSUE, env=SECRET)
    assert result.exit_code == 1 and "has not been sent yet" in result.stderr
    typo = run("report", "2026-11-30-weekyl", env=SECRET)  # neither a file nor in the ledger: no "send it"
    assert typo.exit_code == 1 and "no such issue '2026-11-30-weekyl'" in typo.stderr
    assert "did you mean '2026-11-30-weekly'" in typo.stderr and "has not been sent" not in typo.stderr


def test_the_chart_draws_each_bar_in_proportion():
    from newsletter.reportpage import CHART_HEIGHT, bar_chart

    svg = bar_chart("t", [("a", 1), ("b", 4), ("c", 0)], "x")
    bars = ET.fromstring(svg[svg.index("<svg"):svg.index("</svg>") + 6]).findall(
        ".//{http://www.w3.org/2000/svg}rect")
    assert [float(b.get("height")) for b in bars] == [CHART_HEIGHT / 4, CHART_HEIGHT, 0]
    assert [b.get("data-value") for b in bars] == ["1", "4", "0"]


def test_the_trend_chart_has_a_bar_per_issue_and_points_only_where_there_are_rates():
    from newsletter.reportpage import CHART_HEIGHT, trend_chart

    svg = trend_chart([("one", 200, 0.5, 0.1), ("two", 100, None, None), ("three", 50, 0.25, 0.05)])
    root = ET.fromstring(svg[svg.index("<svg"):svg.index("</svg>") + 6])
    bars = root.findall(".//{http://www.w3.org/2000/svg}rect")
    assert [(b.get("data-label"), float(b.get("height"))) for b in bars] == [
        ("one", CHART_HEIGHT), ("two", CHART_HEIGHT / 2), ("three", CHART_HEIGHT / 4)]
    points = [(c.get("data-series"), c.get("data-label"), float(c.get("cy")))
              for c in root.findall(".//{http://www.w3.org/2000/svg}circle")]
    assert points == [("open", "one", 0), ("open", "three", CHART_HEIGHT / 2),  # over the highest rate
                      ("click", "one", CHART_HEIGHT * 0.8), ("click", "three", CHART_HEIGHT * 0.9)]
    assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) == 2


def test_a_provider_that_cannot_answer_is_said_once_on_stderr_and_the_ledger_part_still_prints(run, workspace):
    """A refused key (or an API down): the report prints what the ledger knows, says in its place that the
    figures could not be read, and the reason once, as the one Error line (exit 1)."""
    from fakeproviders import FakeProviders

    with FakeProviders(api_key="right-key") as fake:
        env = {**SECRET, "NEWSLETTER_PROVIDER_NAME": "sendgrid", "NEWSLETTER_PROVIDER_API_BASE": fake.url,
               "NEWSLETTER_API_KEY": "right-key"}
        assert run("send", ISSUE, "--yes", env=env).exit_code == 0  # the ledger part
        result = run("report", ISSUE, env={**env, "NEWSLETTER_API_KEY": "wrong-Secret-987"})
    assert result.exit_code == 1
    assert f"{ISSUE}: " in result.stdout and "4 sent" in result.stdout
    assert "sendgrid: the figures could not be read (the error below says why)" in result.stdout
    assert result.stderr.count("Error: the provider's figures could not be read: ") == 1
    reason = result.stderr.split("could not be read: ", 1)[1].strip()
    assert reason and reason not in result.stdout  # said once
    assert "wrong-Secret-987" not in result.stdout + result.stderr
