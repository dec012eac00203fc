"""``newsletter suppressions sync``: each provider's own suppression list, read to the end, into the ledger.

The documented answers (tests/fixtures/<provider>/suppressions*.json, copied
from each provider's API reference) pin the request and the mapping; the
local fake serves long, paged lists through real sockets to the real CLI.
"""

from __future__ import annotations

import json

import pytest
import responses
from fakeproviders import SES_ACCESS_KEY, FakeProviders
from helpers import BOTH_LEDGERS, SleepClock, canned, make_adapter, workspace_ledger
from responses.matchers import query_param_matcher

from newsletter.errors import AuthError, ProviderError
from newsletter.sending.lookups import TRIES as READ_TRIES
from newsletter.sending.ratelimit import Backoff
from newsletter.sending.suppression_sync import sync_suppressions

KEY = "sync-key-Wq52"
ORIGIN = "https://api.test"
PROVIDERS = ["postmark", "sendgrid", "mailgun", "resend", "ses", "brevo"]


def adapter(name: str, **flags):
    return make_adapter(name, KEY, api_base=ORIGIN, domain="mg.example.com",
                        **{k.removeprefix("provider."): v for k, v in flags.items()})


@pytest.fixture
def ledger(tmp_path, ledger_backend):
    """A fresh ledger: a SQLite file, then a PostgreSQL database."""
    with workspace_ledger(tmp_path) as opened:
        yield opened





def sync(provider, ledger, *, clock: SleepClock | None = None, **kw):
    clock = clock or SleepClock()
    return sync_suppressions(provider, ledger, sleep=clock.sleep, clock=clock, **kw)


# -- each provider's documented answer --------------------------------------------------------------
@responses.activate
def test_postmark_reads_the_streams_dump_and_maps_reason_and_origin(ledger):
    responses.get(f"{ORIGIN}/message-streams/broadcast/suppressions/dump", json=canned("postmark", "suppressions.json"))
    report = sync(adapter("postmark"), ledger)
    [call] = responses.calls
    assert call.request.headers["X-Postmark-Server-Token"] == KEY
    assert call.request.headers["Accept"] == "application/json"
    assert report.kinds == {"unsubscribed": 1, "bounced": 1, "complained": 1} and report.added == 3
    reasons = {s.email: (s.reason, s.source) for s in ledger.suppressions()}
    assert reasons == {
        "address@wildbit.com": ("unsubscribed at postmark (ManualSuppression (Recipient))", "postmark"),
        "bounce.address@wildbit.com": ("bounced at postmark (HardBounce (Recipient))", "postmark"),
        "spam.complaint.address@wildbit.com": ("complained at postmark (SpamComplaint (Recipient))", "postmark")}


@responses.activate
def test_postmark_manual_suppressions_by_the_account_are_blocks_not_unsubscribes(ledger):
    responses.get(f"{ORIGIN}/message-streams/newsletters/suppressions/dump", json={"Suppressions": [
        {"EmailAddress": "held@example.com", "SuppressionReason": "ManualSuppression", "Origin": "Customer",
         "CreatedAt": "2026-11-20T08:58:33-05:00"}]})
    report = sync(adapter("postmark", **{"provider.message_stream": "newsletters"}), ledger)
    assert report.kinds == {"blocked": 1}


@responses.activate
def test_sendgrid_reads_four_lists_leaves_out_blocks_and_pages_by_offset(ledger):
    bounces = canned("sendgrid", "suppression_bounces.json")
    many = [{"created": 1763626500, "email": f"gone{n:04d}@example.com", "reason": "550", "status": "5.1.1"}
            for n in range(500)]
    responses.get(f"{ORIGIN}/v3/suppression/bounces", json=many,
                  match=[query_param_matcher({"limit": "500", "offset": "0"})])
    responses.get(f"{ORIGIN}/v3/suppression/bounces", json=bounces,
                  match=[query_param_matcher({"limit": "500", "offset": "500"})])
    responses.get(f"{ORIGIN}/v3/suppression/invalid_emails", json=canned("sendgrid", "suppression_invalid_emails.json"))
    responses.get(f"{ORIGIN}/v3/suppression/spam_reports", json=canned("sendgrid", "suppression_spam_reports.json"))
    responses.get(f"{ORIGIN}/v3/suppression/unsubscribes", json=canned("sendgrid", "suppression_unsubscribes.json"))
    report = sync(adapter("sendgrid"), ledger)
    paths = [call.request.path_url.split("?")[0] for call in responses.calls]
    assert paths == ["/v3/suppression/bounces"] * 2 + ["/v3/suppression/invalid_emails",
                                                       "/v3/suppression/spam_reports", "/v3/suppression/unsubscribes"]
    assert all(call.request.headers["Authorization"] == f"Bearer {KEY}" for call in responses.calls)
    assert report.kinds == {"bounced": 500 + len(bounces) + 1, "complained": 1, "unsubscribed": 2}
    assert report.added == report.fetched == 500 + len(bounces) + 4
    assert ledger.is_suppressed("example@example.com")  # the docs' bounce


@responses.activate
def test_mailgun_follows_each_lists_next_page_until_it_is_empty(ledger):
    base = f"{ORIGIN}/v3/mg.example.com"
    for name in ("bounces", "complaints", "unsubscribes"):
        page = canned("mailgun", f"{name}.json")
        responses.get(f"{base}/{name}", json=page, match=[query_param_matcher({"limit": "1000"})])
        responses.get(f"{base}/{name}", json={"items": [], "paging": page["paging"]}, match=[query_param_matcher(
            {"page": "next", "address": page["items"][-1]["address"], "limit": "1000"})])
    report = sync(adapter("mailgun"), ledger)
    assert len(responses.calls) == 6
    assert all(call.request.headers["Authorization"].startswith("Basic ") for call in responses.calls)
    assert report.kinds == {"bounced": 2, "complained": 1, "unsubscribed": 1}
    reason = {s.email: s.reason for s in ledger.suppressions()}["alice@example.com"]
    assert reason == "bounced at mailgun (bounces: 550 No such mailbox)"
    assert {s.email: s.issue_id for s in ledger.suppressions()}["dave@example.com"] == ""  # tags ["*"]: every mail


@responses.activate
def test_a_mailgun_unsubscribe_from_one_tag_records_that_issue(ledger):
    base = f"{ORIGIN}/v3/mg.example.com"
    unsubscribes = canned("mailgun", "unsubscribes.json")
    unsubscribes["items"] = [{**unsubscribes["items"][0], "tags": ["2026-11-30-weekly"]},
                             {"address": "erin@example.com", "tags": ["a", "b"], "created_at": "x"}]
    for name, page in (("bounces", {"items": []}), ("complaints", {"items": []}), ("unsubscribes", unsubscribes)):
        responses.get(f"{base}/{name}", json=page, match=[query_param_matcher({"limit": "1000"})])
    responses.get(f"{base}/unsubscribes", json={"items": []}, match=[query_param_matcher(
        {"page": "next", "address": "dave@example.com", "limit": "1000"})])
    sync(adapter("mailgun"), ledger)
    issues = {s.email: s.issue_id for s in ledger.suppressions()}
    assert issues == {"dave@example.com": "2026-11-30-weekly", "erin@example.com": ""}  # two tags: no one issue


@responses.activate
def test_mailgun_never_follows_paging_to_another_host(ledger):
    responses.get(f"{ORIGIN}/v3/mg.example.com/bounces", json={
        "items": [{"address": "a@example.com", "code": "550", "error": "x", "created_at": "Thu, 20 Nov 2026"}],
        "paging": {"next": "https://elsewhere.example/v3/mg.example.com/bounces?page=next"}})
    with pytest.raises(ProviderError, match="another host"):
        sync(adapter("mailgun"), ledger)
    assert ledger.suppressions() == []


@responses.activate
def test_resend_pages_with_the_last_id_as_cursor(ledger):
    page = canned("resend", "suppressions.json")
    second = {"object": "list", "has_more": False, "data": [
        {"id": "2d6c3a1e-4e8f-4b52-9f0e-2b8f1c6a7d10", "email": "complainer@example.com", "origin": "complaint",
         "source_id": None, "created_at": "2026-11-20 08:15:00.000+00"}]}
    responses.get(f"{ORIGIN}/suppressions", json={**page, "has_more": True},
                  match=[query_param_matcher({"limit": "100"})])
    responses.get(f"{ORIGIN}/suppressions", json=second, match=[query_param_matcher(
        {"limit": "100", "after": page["data"][-1]["id"]})])
    report = sync(adapter("resend"), ledger)
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"
    assert report.kinds == {"blocked": 1, "complained": 1}  # the docs' example is a manual one


@responses.activate
def test_resend_stops_when_the_cursor_does_not_move(ledger):
    page = {**canned("resend", "suppressions.json"), "has_more": True}
    responses.get(f"{ORIGIN}/suppressions", json=page)
    with pytest.raises(ProviderError, match="did not move past its cursor"):
        sync(adapter("resend"), ledger)
    assert ledger.suppressions() == []


# -- what the sync keeps, and what it refuses ----------------------------------------------------------
@responses.activate
def test_existing_suppressions_keep_their_reason_and_addresses_are_stored_as_the_list_keeps_them(ledger):
    ledger.add_suppression("bounce.address@wildbit.com", "asked by phone", source="manual")
    responses.get(f"{ORIGIN}/message-streams/broadcast/suppressions/dump", json={"Suppressions": [
        {"EmailAddress": "Bounce.Address@WILDBIT.com", "SuppressionReason": "HardBounce", "Origin": "Recipient"},
        {"EmailAddress": "reader@xn--bcher-kva.example", "SuppressionReason": "HardBounce", "Origin": "Recipient"},
        {"EmailAddress": "not-an-address", "SuppressionReason": "HardBounce", "Origin": "Recipient"}]})
    report = sync(adapter("postmark"), ledger)
    assert (report.fetched, report.added, report.already, report.unreadable) == (2, 1, 1, ["not-an-address"])
    kept = {s.email: (s.reason, s.source) for s in ledger.suppressions()}
    assert kept["bounce.address@wildbit.com"] == ("asked by phone", "manual")
    assert ledger.is_suppressed("reader@bücher.example")  # the list's form of an IDNA domain


@responses.activate
def test_dry_run_counts_what_would_be_added_and_writes_nothing(ledger):
    ledger.add_suppression("address@wildbit.com", "earlier")
    responses.get(f"{ORIGIN}/message-streams/broadcast/suppressions/dump", json=canned("postmark", "suppressions.json"))
    report = sync(adapter("postmark"), ledger, dry_run=True)
    assert (report.fetched, report.added) == (3, 2)
    assert [s.email for s in ledger.suppressions()] == ["address@wildbit.com"]


@responses.activate
def test_a_transient_error_asks_for_that_page_again_honouring_retry_after(ledger):
    responses.get(f"{ORIGIN}/v3/suppression/bounces", json=canned("sendgrid", "suppression_bounces.json"))
    responses.get(f"{ORIGIN}/v3/suppression/invalid_emails", json=[])
    spam = [responses.get(f"{ORIGIN}/v3/suppression/spam_reports", status=429, headers={"Retry-After": "7"},
                          json={"errors": [{"message": "too many requests"}]}),
            responses.get(f"{ORIGIN}/v3/suppression/spam_reports", status=500, json={"errors": [{"message": "oops"}]}),
            responses.get(f"{ORIGIN}/v3/suppression/spam_reports", json=[])]
    responses.get(f"{ORIGIN}/v3/suppression/unsubscribes", json=[])
    clock = SleepClock()
    report = sync(adapter("sendgrid"), ledger, clock=clock, backoff=Backoff(base=0.5))
    assert [r.call_count for r in spam] == [1, 1, 1]
    assert len(responses.calls) == 6  # the pages already read are not read again
    # Retry-After's 7 s, then a backoff of 0.5-1 s; the others are pacing at SendGrid's 10 requests/s
    long_waits = [w for w in clock.waits if w > 0.1 + 1e-9]
    assert len(long_waits) == 2 and 7 <= long_waits[0] <= 7.1 and 0.5 <= long_waits[1] <= 1
    # pacing: the 2nd and 3rd requests wait their turn, the 4th and 5th come after a long wait anyway
    assert [round(w, 6) for w in clock.waits if w not in long_waits] == [0.1, 0.1, 0.1]
    assert report.added == len(canned("sendgrid", "suppression_bounces.json"))


@pytest.mark.parametrize("answer, expected, tries", [
    ({"status": 503, "json": {"errors": [{"message": "down"}]}},
     "nothing was changed; run `newsletter suppressions sync` again later", READ_TRIES),
    ({"status": 429, "headers": {"Retry-After": "3600"}, "json": {"errors": [{"message": "slow down"}]}},
     "sendgrid asked to wait 1 h: run `newsletter suppressions sync` again after that", 1),
    ({"status": 200, "body": "<html>maintenance</html>"}, "answered something we cannot read", 1),
    ({"status": 400, "json": {"errors": [{"field": "limit", "message": "limit must be between 1 and 500"}]}},
     "HTTP 400: limit must be between 1 and 500 (nothing was changed; fix what sendgrid says", 1),
])
@responses.activate
def test_a_read_that_does_not_finish_changes_nothing_and_says_what_to_do(ledger, answer, expected, tries):
    responses.get(f"{ORIGIN}/v3/suppression/bounces", json=canned("sendgrid", "suppression_bounces.json"))
    responses.get(f"{ORIGIN}/v3/suppression/invalid_emails", **answer)
    with pytest.raises(ProviderError) as caught:
        sync(adapter("sendgrid"), ledger)
    assert expected in caught.value.render()
    assert ledger.suppressions() == []
    assert len([c for c in responses.calls if "invalid_emails" in c.request.url]) == tries


@responses.activate
def test_the_same_address_in_two_lists_or_two_cases_counts_once(ledger):
    ledger.add_suppression("user3@example.com", "earlier")
    responses.get(f"{ORIGIN}/v3/suppression/bounces", json=[{"created": 1, "email": "User3@Example.com"}])
    responses.get(f"{ORIGIN}/v3/suppression/invalid_emails", json=[])
    responses.get(f"{ORIGIN}/v3/suppression/spam_reports", json=[{"created": 1, "email": "user3@example.COM"},
                                                                 {"created": 1, "email": "new@example.com"}])
    responses.get(f"{ORIGIN}/v3/suppression/unsubscribes", json=canned("sendgrid", "suppression_unsubscribes.json"))
    dry = sync(adapter("sendgrid"), ledger, dry_run=True)
    # user3 three times (and in the ledger already), new@ once, and the fixture's user4@
    assert (dry.fetched, dry.added, dry.kinds) == (3, 2, {"bounced": 1, "complained": 1, "unsubscribed": 1})
    report = sync(adapter("sendgrid"), ledger)
    assert (report.fetched, report.added, report.already) == (3, 2, 1)
    assert len(ledger.suppressions()) == 3


@responses.activate
def test_mailgun_paging_that_never_ends_is_an_error_not_a_short_list(ledger):
    page = canned("mailgun", "bounces.json")
    responses.get(f"{ORIGIN}/v3/mg.example.com/bounces", json=page)  # the next link is ignored: always page 1
    with pytest.raises(ProviderError, match="did not come to an end after 2 pages"):
        sync(adapter("mailgun"), ledger)
    assert ledger.suppressions() == []


@responses.activate
def test_a_redirect_is_not_followed_with_the_key(ledger):
    responses.get(f"{ORIGIN}/message-streams/broadcast/suppressions/dump", status=302,
                  headers={"Location": "https://elsewhere.example/steal"})
    with pytest.raises(ProviderError, match="HTTP 302"):
        sync(adapter("postmark"), ledger)
    assert [c.request.url for c in responses.calls] == [f"{ORIGIN}/message-streams/broadcast/suppressions/dump"]


@responses.activate
def test_a_refused_key_stops_at_once_says_which_key_sync_needs_and_never_shows_it(ledger):
    responses.get(f"{ORIGIN}/suppressions", status=401, json={
        "statusCode": 401, "name": "restricted_api_key",
        "message": f"This API key {KEY} is restricted to only send emails"})
    with pytest.raises(AuthError) as caught:
        sync(adapter("resend"), ledger)
    assert len(responses.calls) == 1
    text = caught.value.render()
    assert KEY not in text and "[API key]" in text and "it needs a Full access key" in text


# -- the real CLI against the fake, through sockets -------------------------------------------------
@pytest.fixture
def fake():
    with FakeProviders(api_key=KEY) as server:
        yield server


def provider_env(name: str, fake: FakeProviders) -> dict[str, str]:
    aws = {"AWS_ACCESS_KEY_ID": SES_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": KEY, "AWS_REGION": "eu-west-1"}
    return {"NEWSLETTER_PROVIDER_NAME": name, "NEWSLETTER_PROVIDER_API_BASE": fake.url,
            "NEWSLETTER_PROVIDER_DOMAIN": fake.domain, "NEWSLETTER_API_KEY": KEY, "NEWSLETTER_SECRET": "sync-secret",
            "NEWSLETTER_PROVIDER_RATE_LIMIT": "1000", **(aws if name == "ses" else {})}


# Per provider: the kinds its list holds (as the fake records them) and how many, past one page.
LISTS = {"postmark": {"bounce": 700, "complaint": 3, "unsubscribe": 2},
         "sendgrid": {"bounce": 1203, "invalid": 2, "complaint": 501, "unsubscribe": 4, "block": 5},
         "mailgun": {"bounce": 2100, "complaint": 2, "unsubscribe": 1001},
         "resend": {"bounce": 250, "complaint": 3, "manual": 1},
         "ses": {"bounce": 2100, "complaint": 3},
         "brevo": {"bounce": 150, "complaint": 3, "unsubscribe": 2, "block": 1}}
EXPECTED = {"postmark": {"bounced": 700, "complained": 3, "unsubscribed": 2},
            "sendgrid": {"bounced": 1205, "complained": 501, "unsubscribed": 4},  # blocks are temporary: left out
            "mailgun": {"bounced": 2100, "complained": 2, "unsubscribed": 1001},
            "resend": {"bounced": 250, "complained": 3, "blocked": 1},
            "ses": {"bounced": 2100, "complained": 3},  # read at 1 request a second, whatever the send rate
            "brevo": {"bounced": 150, "complained": 3, "unsubscribed": 2, "blocked": 1}}


@pytest.mark.slow
@pytest.mark.parametrize("name", PROVIDERS)
def test_sync_reads_every_page_of_the_providers_list_once(run, fake, name):
    for kind, count in LISTS[name].items():
        for n in range(count):
            fake.suppress(name, f"{kind}{n:04d}@example.com", kind)
    env = provider_env(name, fake)
    result = run("suppressions", "sync", "--json", env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    total = sum(EXPECTED[name].values())
    assert report["kinds"] == EXPECTED[name] and report["added"] == report["fetched"] == total
    listed = json.loads(run("suppressions", "list", "--json", env=env).stdout)
    assert len(listed) == total and {row["source"] for row in listed} == {name}

    again = run("suppressions", "sync", env=env)
    assert again.exit_code == 0
    assert f"0 added to the ledger's suppressions, {total} already there" in again.output


@pytest.mark.slow
@BOTH_LEDGERS
def test_a_synced_bounce_is_left_out_of_the_next_send(run, workspace, fake):
    rows = ["email,name"] + [f"reader{n}@example.com,Reader {n}" for n in range(5)]
    (workspace / "subscribers" / "subscribers.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    fake.suppress("sendgrid", "Reader3@Example.com", "bounce")
    env = provider_env("sendgrid", fake)
    dry = run("suppressions", "sync", "--dry-run", env=env)
    assert "1 would be added" in dry.output and not (workspace / ".newsletter").exists()
    assert run("suppressions", "sync", env=env).exit_code == 0
    sent = run("send", "2026-11-30-weekly", "--yes", env=env)
    assert sent.exit_code == 0, sent.output
    assert sorted(a.to for a in fake.delivered()) == [f"reader{n}@example.com" for n in (0, 1, 2, 4)]


@pytest.mark.slow
def test_resends_two_requests_a_second_are_kept_and_its_429s_waited_out(run, fake):
    for n in range(250):  # three pages of 100
        fake.suppress("resend", f"gone{n:03d}@example.com", "bounce")
    paced = provider_env("resend", fake)
    del paced["NEWSLETTER_PROVIDER_RATE_LIMIT"]  # Resend's documented 2 requests a second
    result = run("suppressions", "sync", env=paced)
    assert result.exit_code == 0, result.output
    assert "250 added" in result.output
    gaps = [b - a for a, b in zip(fake.read_times, fake.read_times[1:])]
    assert len(gaps) >= 2 and min(gaps) > 0.4  # paced at 2 a second (give or take the sockets' jitter)
    assert fake.rate_limited <= 1  # at the very edge of Resend's window a 429 may still come, and is waited out

    fake.reset()
    for n in range(250):
        fake.suppress("resend", f"later{n:03d}@example.com", "complaint")
    hurried = run("suppressions", "sync", env=provider_env("resend", fake))  # 1000 a second: Resend says 429
    assert hurried.exit_code == 0, hurried.output
    assert "250 added" in hurried.output and fake.rate_limited >= 1 and min(
        b - a for a, b in zip(fake.read_times, fake.read_times[1:])) < 0.1


@BOTH_LEDGERS
def test_a_read_the_provider_will_not_answer_for_an_hour_exits_1_and_changes_nothing(run, fake):
    fake.suppress("sendgrid", "gone@example.com", "bounce")
    fake.inject_read(status=429, retry_after=3600, times=1)
    env = provider_env("sendgrid", fake)
    result = run("suppressions", "sync", env=env)
    assert result.exit_code == 1
    assert "sendgrid answered HTTP 429" in result.stderr
    assert "nothing was changed; sendgrid asked to wait 1 h: run `newsletter suppressions sync` again" in result.stderr
    assert json.loads(run("suppressions", "list", "--json", env=env).stdout) == []


@BOTH_LEDGERS
def test_a_wrong_key_exits_1_without_printing_it_and_changes_nothing(run, fake):
    fake.suppress("mailgun", "gone@example.com", "bounce")
    env = {**provider_env("mailgun", fake), "NEWSLETTER_API_KEY": "wrong-key-Hh73"}
    result = run("suppressions", "sync", env=env)
    assert result.exit_code == 1
    assert "refused the API key" in result.output and "wrong-key-Hh73" not in result.output
    assert json.loads(run("suppressions", "list", "--json", env=env).stdout) == []


def test_the_outbox_has_nothing_to_sync(run):
    result = run("suppressions", "sync")
    assert result.exit_code == 0
    assert "keeps no suppression list of its own" in result.output
