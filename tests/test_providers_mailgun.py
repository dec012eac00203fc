"""Mailgun adapter: multipart batch sending with recipient variables, and its documented answers.

Mailgun publishes no OpenAPI file we could use; these follow its documentation
(messages API, batch sending, events API) as noted in tests/fixtures/mailgun/SOURCES.txt.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import requests
import responses
from helpers import canned, make_adapter, refusal, send, sent_request
from fakeproviders import _multipart, sample_batch

from newsletter import config
from newsletter.errors import AuthError, ConfigError, ProviderError
from newsletter.providers.mailgun import MailgunProvider

FIXTURES = Path(__file__).parent / "fixtures" / "mailgun"
KEY = "key-mailgun-789"
URL = "https://api.mailgun.net/v3/mg.example.com/messages"
EVENTS = "https://api.mailgun.net/v3/mg.example.com/events"


def fixture(name: str):
    return canned("mailgun", name)


def mailgun(**provider) -> MailgunProvider:
    return make_adapter("mailgun", KEY, **{"domain": "mg.example.com", **provider})


def fields(request) -> dict[str, list[str]]:
    return _multipart(request.headers["Content-Type"], request.body)


@responses.activate
def test_the_request_is_one_template_with_recipient_variables():
    responses.add(responses.POST, URL, json=fixture("200.json"))
    batch = sample_batch(2)
    request = sent_request(mailgun(), batch)
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    sent = fields(request)
    assert sent["from"] == ["Field Notes <notes@example.com>"]
    assert sent["to"] == ["Reader 0 <reader0@example.com>", "Reader 1 <reader1@example.com>"]
    assert sent["subject"] == ["%recipient.subject%"]
    assert sent["html"] == ['<p>Hi %recipient.h0% &amp; co</p><a href="%recipient.h1%">Unsubscribe</a>']
    assert sent["text"] == ["Hi %recipient.t0% & co\n\nUnsubscribe: %recipient.t1%\n"]
    assert sent["o:tag"] == ["2026-11-30-weekly"]  # one stable tag: a domain's distinct tags are limited
    assert sent["o:tracking-opens"] == ["no"] and sent["o:tracking-clicks"] == ["no"] and "o:testmode" not in sent
    assert sent["v:newsletter-batch"] == ["b0001"] and sent["h:Reply-To"] == ["editor@example.com"]
    assert sent["v:newsletter-issue"] == ["2026-11-30-weekly"]
    assert sent["h:List-Unsubscribe"] == ["%recipient.hdr0%"]  # differs per recipient
    assert sent["h:List-Unsubscribe-Post"] == ["List-Unsubscribe=One-Click"]  # the same for all
    variables = json.loads(sent["recipient-variables"][0])
    assert variables["reader1@example.com"] == {
        "h0": "Reader &lt;1&gt; &amp; &#34;friends&#34;", "h1": "https://example.com/unsubscribe?t=token1",
        "t0": 'Reader <1> & "friends"', "t1": "https://example.com/unsubscribe?t=token1",
        "subject": 'News for Reader <1> & "friends"',
        "hdr0": "<https://example.com/unsubscribe?t=token1>, <mailto:unsubscribe@example.com?subject=unsubscribe>"}


@responses.activate
def test_test_mode_and_tracking_switches():
    responses.add(responses.POST, URL, json=fixture("200.json"))
    sent = fields(sent_request(mailgun(test_mode=True, track_opens=True, track_clicks=True), sample_batch(1)))
    assert sent["o:testmode"] == ["yes"] and sent["o:tracking-opens"] == ["yes"]
    assert sent["o:tracking-clicks"] == ["yes"]


@responses.activate
def test_the_documented_200_gives_every_recipient_the_calls_id():
    responses.add(responses.POST, URL, json=fixture("200.json"))
    outcomes = send(mailgun(), sample_batch(3))
    assert {(o.state, o.provider_id) for o in outcomes} == {("sent", "<20160306015544.116301.25145@mg.example.com>")}


@responses.activate
def test_a_200_that_is_the_magnificent_api_page_is_unknown():
    responses.add(responses.POST, URL, body=(FIXTURES / "magnificent.html").read_text(), status=200)
    assert [o.state for o in send(mailgun(), sample_batch(2))] == ["unknown", "unknown"]


@responses.activate
def test_a_malformed_address_fails_alone_and_the_others_go_again():
    responses.add(responses.POST, URL, status=400, json=fixture("400-invalid-to.json"))
    outcomes = send(mailgun(), sample_batch(addresses=["a@example.com", "b@example", "c@example.com"]))
    assert [o.state for o in outcomes] == ["retry", "failed", "retry"]
    assert "'to' parameter is not a valid address" in outcomes[1].reason


@responses.activate
def test_a_refused_to_that_names_no_address_fails_a_lone_recipient():
    responses.add(responses.POST, URL, status=400, json=fixture("400-invalid-to.json"))
    [outcome] = send(mailgun(), sample_batch(addresses=["odd.but.valid@example.com"]))
    assert outcome.state == "failed"


@responses.activate
def test_a_refused_to_we_cannot_place_in_a_batch_stops_the_run_and_fails_nobody():
    responses.add(responses.POST, URL, status=400, json=fixture("400-invalid-to.json"))
    refused = refusal(mailgun(), sample_batch(3))  # every address looks valid to us
    assert not refused.retryable and "BATCH_SIZE=1" in refused.hint


@responses.activate
def test_a_400_about_the_request_that_mentions_recipients_fails_nobody():
    responses.add(responses.POST, URL, status=400, json=fixture("400-recipient-variables.json"))
    refused = refusal(mailgun(), sample_batch(addresses=["a@example.com", "b@example", "c@example.com"]))
    assert not refused.retryable and "'recipient-variables' parameter is not a valid JSON" in refused.message


@responses.activate
def test_a_403_from_a_sandbox_domain_says_so_and_points_at_the_domain():
    responses.add(responses.POST, URL, status=403, json=fixture("403-sandbox.json"))
    refused = refusal(mailgun(), sample_batch(1), AuthError)
    assert "is not allowed to send: Free accounts are for test purposes only" in refused.message
    assert "authorized recipients" in refused.hint and "[provider] domain" in refused.hint


@responses.activate
def test_an_unknown_domain_says_where_to_look():
    responses.add(responses.POST, URL, status=404, json=fixture("404-domain.json"))
    refused = refusal(mailgun(), sample_batch(1))
    assert "Domain not found" in refused.message and "api.eu.mailgun.net" in refused.hint


@responses.activate
def test_401_aborts_without_showing_the_key():
    responses.add(responses.POST, URL, status=401, body="Forbidden")
    refused = refusal(mailgun(), sample_batch(1), AuthError)
    assert KEY not in str(refused) and base64.b64encode(f"api:{KEY}".encode()).decode() not in str(refused)
    assert "refused the API key (HTTP 401): Forbidden" in refused.message


@responses.activate
def test_the_key_and_its_basic_token_are_scrubbed_from_an_echoing_answer():
    token = base64.b64encode(f"api:{KEY}".encode()).decode()
    responses.add(responses.POST, URL, status=401, body=f"Forbidden: Basic {token} (key {KEY})")
    refused = refusal(mailgun(), sample_batch(1), AuthError)
    assert KEY not in str(refused) + refused.body and token not in str(refused) + refused.body


@pytest.mark.parametrize("domain", ["", "example.com/v3"])
def test_the_sending_domain_is_required(domain):
    with pytest.raises(ConfigError, match="domain"):
        mailgun(domain=domain)


def test_options_over_16_kb_are_refused_before_sending():
    batch = sample_batch(1)
    big = type(batch.messages[0])(**{**batch.messages[0].__dict__, "headers": {"X-Big": "y" * 17_000}})
    with pytest.raises(ProviderError, match="16 kB"):
        mailgun().build_request(type(batch)(batch.issue_id, batch.batch_id, (big,), batch.slot_values, batch.template))


@responses.activate
@pytest.mark.parametrize("age, missing", [(7200.0, "retry"), (60.0, "unknown")])
def test_reconcile_reads_the_issues_accepted_events_and_keeps_the_batchs(age, missing):
    responses.add(responses.GET, EVENTS, json=fixture("events-accepted.json"))
    responses.add(responses.GET, fixture("events-accepted.json")["paging"]["next"],
                  json={"items": [], "paging": {}})
    with requests.Session() as session:
        outcomes = mailgun().reconcile(sample_batch(addresses=["receiver1@example.com", "receiver2@example.com"]),
                                       session, age=age)
    query = responses.calls[0].request.params
    assert {k: query[k] for k in ("event", "tags", "limit", "ascending")} == {
        "event": "accepted", "tags": "2026-11-30-weekly", "limit": "300", "ascending": "yes"}
    assert len(responses.calls) == 2  # followed paging.next until an empty page
    assert (outcomes[0].state, outcomes[0].provider_id) == ("sent", "20130822232216.13966.79700@mg.example.com")
    # receiver2 was accepted in batch b0002 of the same issue, not in this one (b0001)
    assert outcomes[1].state == missing


@responses.activate
def test_reconcile_asks_only_for_the_window_of_the_batchs_tries():
    responses.add(responses.GET, EVENTS, json={"items": [], "paging": {}})
    with requests.Session() as session:
        mailgun().reconcile(sample_batch(1), session, age=7200.0, since_last_try=3600.0)
    query, now = responses.calls[0].request.params, time.time()
    assert abs(float(query["begin"]) - (now - 7200 - 3600)) < 5  # the first claim, less a margin
    assert abs(float(query["end"]) - (now - 3600 + 3600)) < 5  # the last try, plus a margin


@responses.activate
def test_reconcile_that_cannot_read_every_page_concludes_nothing(monkeypatch):
    monkeypatch.setattr("newsletter.providers.mailgun.EVENTS_PAGES", 2)
    page = fixture("events-accepted.json")
    responses.add(responses.GET, EVENTS, json=page)
    responses.add(responses.GET, page["paging"]["next"], json=page)
    with requests.Session() as session, pytest.raises(ProviderError, match="cannot tell"):
        mailgun().reconcile(sample_batch(addresses=["receiver9@example.com"]), session, age=7200.0)


@responses.activate
def test_reconcile_never_follows_paging_to_another_host():
    responses.add(responses.GET, "http://127.0.0.1:9/v3/mg.example.com/events", json=fixture("events-accepted.json"))
    with requests.Session() as session, pytest.raises(ProviderError, match="another host"):
        mailgun(api_base="http://127.0.0.1:9").reconcile(sample_batch(1), session, age=7200.0)
    assert len(responses.calls) == 1


# -- [unsubscribe] url = "provider": Mailgun's %unsubscribe_url% ------------------------------------
VARIABLE = "%unsubscribe_url%"
TRACKING = "https://api.mailgun.net/v3/domains/mg.example.com/tracking"


def managed_mailgun() -> MailgunProvider:
    flags = {"provider.name": "mailgun", "provider.domain": "mg.example.com", "unsubscribe.url": "provider"}
    return MailgunProvider(config.resolve({}, {}, flags, source=None), KEY)


def tracking(active, html_footer: str = "", text_footer: str = "") -> dict:
    return {"tracking": {"open": {"active": False, "place_at_the_top": False}, "click": {"active": False},
                         "unsubscribe": {"active": active, "html_footer": html_footer, "text_footer": text_footer},
                         "web_scheme": "https"}}


@responses.activate
def test_a_managed_request_carries_mailguns_variable_in_the_bodies_and_no_list_unsubscribe_of_ours():
    responses.add(responses.POST, URL, json=fixture("200.json"))
    sent = fields(sent_request(managed_mailgun(), sample_batch(2, unsubscribe=VARIABLE)))
    assert sent["html"] == [f'<p>Hi %recipient.h0% &amp; co</p><a href="{VARIABLE}">Unsubscribe</a>']
    assert sent["text"] == [f"Hi %recipient.t0% & co\n\nUnsubscribe: {VARIABLE}\n"]
    assert not [name for name in sent if name.lower().startswith("h:list-unsubscribe")]
    variables = json.loads(sent["recipient-variables"][0])
    assert all(set(mine) == {"h0", "t0", "subject"} for mine in variables.values())


@responses.activate
def test_preflight_lets_a_domain_that_tracks_unsubscribes_send():
    responses.get(TRACKING, json=tracking(True))
    with requests.Session() as session:
        assert managed_mailgun().preflight(session) == []
    assert responses.calls[0].request.headers["Authorization"].startswith("Basic ")


@responses.activate
@pytest.mark.parametrize("active", [False, "false"])
def test_preflight_refuses_a_domain_that_does_not_track_unsubscribes(active):
    responses.get(TRACKING, json=tracking(active))
    with requests.Session() as session, pytest.raises(ConfigError) as caught:
        managed_mailgun().preflight(session)
    text = caught.value.render()
    assert "Mailgun's domain mg.example.com does not track unsubscribes: nobody would get a working" in text
    assert "turn on unsubscribe tracking for the domain" in text and "give your own page" in text


@responses.activate
def test_preflight_warns_that_the_domains_footer_adds_a_second_link():
    responses.get(TRACKING, json=tracking(True, html_footer="<p><a href=\"%unsubscribe_url%\">Unsubscribe</a></p>"))
    with requests.Session() as session:
        [warning] = managed_mailgun().preflight(session)
    assert "two unsubscribe links" in warning and "empty the footers" in warning


@responses.activate
def test_preflight_with_a_sending_key_says_which_key_it_needs():
    responses.get(TRACKING, status=401, body="Forbidden")
    with requests.Session() as session, pytest.raises(AuthError) as caught:
        managed_mailgun().preflight(session)
    assert "needs to read whether domain mg.example.com tracks unsubscribes" in caught.value.message
    assert "private API key" in caught.value.render() and KEY not in caught.value.render()


@responses.activate
@pytest.mark.parametrize("answer", [{"status": 503, "json": {"message": "down"}}, {"json": {"tracking": {}}}])
def test_preflight_that_cannot_tell_sends_nothing(answer):
    responses.get(TRACKING, **answer)
    with requests.Session() as session, pytest.raises(ProviderError) as caught:
        managed_mailgun().preflight(session)
    assert caught.value.retryable and "nothing" in caught.value.render()


@responses.activate
def test_preflight_asks_nothing_when_the_newsletter_has_its_own_page():
    with requests.Session() as session:
        assert mailgun().preflight(session) == []
    assert len(responses.calls) == 0
