"""Brevo adapter: one message version per reader, the exact request, its documented answers, reconcile
from the transactional events and the blocked contacts."""

from __future__ import annotations

import dataclasses
import json

import pytest
import requests
import responses
from fakeproviders import FakeProviders, sample_batch
from helpers import canned, make_adapter, refusal, send

from newsletter.errors import AuthError, ConfigError, ProviderError
from newsletter.providers.brevo import BrevoProvider

KEY = "xkeysib-secret-4711"
URL = "https://api.brevo.com/v3/smtp/email"


def brevo(**provider) -> BrevoProvider:
    return make_adapter("brevo", KEY, **provider)


def answer(name: str, status: int) -> None:
    responses.add(responses.POST, URL, json=canned("brevo", name), status=status)


def test_the_request_has_one_version_per_reader_with_their_own_subject_bodies_and_headers():
    batch = sample_batch(2)
    request = brevo().build_request(batch)
    assert request.url == URL and request.headers["api-key"] == KEY
    body = json.loads(request.data)
    assert body["sender"] == {"email": "notes@example.com", "name": "Field Notes"}
    assert body["replyTo"] == {"email": "editor@example.com"}
    assert body["tags"] == ["2026-11-30-weekly", "batch-b0001"]
    assert body["headers"] == {"X-Newsletter-Issue": "2026-11-30-weekly", "X-Newsletter-Batch": "b0001"}
    # the request's own subject and bodies are there only so versions may override them: nobody's own
    assert body["subject"] == "News for " and "Reader" not in body["htmlContent"] + body["textContent"]
    assert len(body["messageVersions"]) == 2
    for version, message in zip(body["messageVersions"], batch.messages):
        assert version == {"to": [{"email": message.to, "name": message.to_name}], "subject": message.subject,
                           "htmlContent": message.html, "textContent": message.text,
                           "headers": dict(message.headers)}


def test_bodies_filled_from_the_template_are_what_json_would_send():
    provider = brevo()
    batch = sample_batch(4)
    lean = dataclasses.replace(batch, messages=tuple(dataclasses.replace(m, html="", text="") for m in batch.messages))
    untemplated = dataclasses.replace(batch, template=None, slot_values=())
    sent = provider.build_request(lean).data
    assert sent == provider.build_request(batch).data
    assert json.loads(sent)["messageVersions"] == json.loads(provider.build_request(untemplated).data)[
        "messageVersions"]
    assert sent == json.dumps(json.loads(sent)).encode()  # json.dumps's own bytes, as requests would send


def test_test_mode_is_brevos_sandbox_header():
    body = json.loads(brevo(test_mode=True).build_request(sample_batch(1)).data)
    assert body["headers"]["X-Sib-Sandbox"] == "drop"


@pytest.mark.parametrize("key", ["track_opens", "track_clicks"])
def test_tracking_switches_are_refused(key):
    with pytest.raises(ConfigError, match=key):
        brevo(**{key: True})


def test_long_names_are_cut_to_brevos_70_characters():
    batch = sample_batch(1)
    batch = dataclasses.replace(batch, messages=(dataclasses.replace(batch.messages[0], to_name="N" * 90),))
    version = json.loads(brevo().build_request(batch).data)["messageVersions"][0]
    assert version["to"] == [{"email": "reader0@example.com", "name": "N" * 70}]


@responses.activate
def test_201_marks_each_version_sent_with_its_message_id():
    answer("201.json", 201)
    outcomes = send(brevo(), sample_batch(3))
    ids = canned("brevo", "201.json")["messageIds"]
    assert [(o.state, o.provider_id) for o in outcomes] == [("sent", i) for i in ids]


@responses.activate
def test_a_refused_address_fails_the_implausible_reader_and_sends_the_others_again():
    answer("400-invalid-email.json", 400)
    batch = sample_batch(addresses=["a@example.com", "not-an-address@", "c@example.com"])
    assert [o.state for o in send(brevo(), batch)] == ["retry", "failed", "retry"]


@responses.activate
def test_a_refused_address_brevo_does_not_name_stops_the_run_when_none_looks_wrong():
    answer("400-invalid-email.json", 400)
    refused = refusal(brevo(), sample_batch(3))
    assert not refused.retryable and "batch_size = 1" in refused.hint


@responses.activate
def test_a_refused_address_alone_in_its_batch_is_that_readers():
    answer("400-invalid-email.json", 400)
    [outcome] = send(brevo(), sample_batch(1))
    assert outcome.state == "failed" and "email is not valid in to" in outcome.reason


@pytest.mark.parametrize("name, words", [("400-credits.json", "no email credits"),
                                         ("400-sender.json", "verify the From address")])
@pytest.mark.parametrize("size", [1, 2])
@responses.activate
def test_refusals_of_the_account_or_sender_stop_the_run(name, words, size):
    answer(name, 400)
    with pytest.raises(ProviderError) as caught:  # even alone in its batch, the reader is not to blame
        send(brevo(), sample_batch(size))
    assert not caught.value.retryable and words in caught.value.hint
    assert canned("brevo", name)["message"] in caught.value.message


@responses.activate
def test_401_aborts_with_brevos_words_and_never_the_key():
    answer("401.json", 401)
    refused = refusal(brevo(), sample_batch(1), AuthError)
    assert "Key not found" in refused.message and KEY not in str(refused) + refused.body


@responses.activate
def test_429_waits_as_long_as_its_rate_limit_headers_say():
    canned_429 = canned("brevo", "429-headers.json")
    responses.add(responses.POST, URL, json=canned_429["body"], status=429, headers=canned_429["headers"])
    refused = refusal(brevo(), sample_batch(1))
    assert refused.retryable and refused.retry_after == 7


@responses.activate
def test_a_201_without_one_id_per_version_is_unknown():
    responses.add(responses.POST, URL, json={"messageId": "<one@smtp-relay.mailin.fr>"}, status=201)
    assert [o.state for o in send(brevo(), sample_batch(2))] == ["unknown", "unknown"]


# -- reconcile and suppressions ------------------------------------------------------------------------
@responses.activate
def test_reconcile_finds_what_brevo_took_and_leaves_the_rest_unknown():
    responses.add(responses.GET, "https://api.brevo.com/v3/smtp/statistics/events", json=canned("brevo", "events.json"))
    with requests.Session() as session:
        outcomes = brevo().reconcile(sample_batch(3), session, age=3600)
    assert [o.state for o in outcomes] == ["sent", "unknown", "sent"]
    assert outcomes[0].provider_id == "<202611300900.12345678901@smtp-relay.mailin.fr>"
    assert "proves nothing" in outcomes[1].reason
    query = responses.calls[0].request.url
    assert "tags=batch-b0001" in query and "event=requests" in query and "days=2" in query


@responses.activate
def test_the_blocked_contacts_are_read_with_their_reasons():
    responses.add(responses.GET, "https://api.brevo.com/v3/smtp/blockedContacts",
                  json=canned("brevo", "blocked-contacts.json"))
    with requests.Session() as session:
        found = list(brevo().suppression_list(session))
    assert [(s.email, s.kind) for s in found] == [("gone@example.com", "bounced"), ("angry@example.org", "complained"),
                                                  ("abc@xyz.com", "blocked")]
    assert found[0].detail == "hardBounce: Hard bounce"


def test_the_blocked_contacts_are_read_page_by_page_to_the_end():
    with FakeProviders(api_key=KEY) as fake:
        for n in range(250):
            fake.suppress("brevo", f"gone{n}@example.com", ("bounce", "complaint", "unsubscribe", "block")[n % 4])
        with requests.Session() as session:
            found = list(brevo(api_base=fake.url).suppression_list(session))
        assert len({s.email for s in found}) == 250
        assert {s.kind for s in found} == {"bounced", "complained", "unsubscribed", "blocked"}
        assert sum(1 for _, path in fake.requests_seen if path == "/smtp/blockedContacts") == 3


def test_nobody_blocked_is_an_empty_list():
    with FakeProviders(api_key=KEY) as fake, requests.Session() as session:
        assert list(brevo(api_base=fake.url).suppression_list(session)) == []


def test_in_test_mode_the_fake_validates_and_delivers_nothing():
    with FakeProviders(api_key=KEY) as fake:
        outcomes = send(brevo(api_base=fake.url, test_mode=True), sample_batch(2))
        assert [o.state for o in outcomes] == ["sent", "sent"]
        assert fake.delivered() == [] and [a.test for a in fake.accepted] == [True, True]


def test_no_credits_in_the_fake_stops_the_run():
    with FakeProviders(api_key=KEY) as fake:
        fake.brevo_credits = False
        with pytest.raises(ProviderError, match="not_enough_credits"):
            send(brevo(api_base=fake.url), sample_batch(2))
        assert fake.accepted == []
