"""SendGrid adapter: one template + substitutions, the exact request, and its documented answers."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import requests
import responses
from helpers import canned, make_adapter, refusal, send, sent_request
from fakeproviders import sample_batch

from newsletter import config
from newsletter.errors import AuthError, ProviderError, RecipientError
from newsletter.providers.sendgrid import SendGridProvider

KEY = "SG.secret-key-456"
URL = "https://api.sendgrid.com/v3/mail/send"


def fixture(name: str):
    return canned("sendgrid", name)


def sendgrid(**provider) -> SendGridProvider:
    return make_adapter("sendgrid", KEY, **provider)


def accepted():
    answer = fixture("202-headers.json")
    responses.add(responses.POST, URL, status=202, body="", headers=answer["headers"])


@responses.activate
def test_the_request_sends_the_template_once_with_substitutions_per_recipient():
    accepted()
    batch = sample_batch(2)
    request = sent_request(sendgrid(), batch)
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    body = json.loads(request.body)
    assert body["content"] == [
        {"type": "text/plain", "value": "Hi -zqt0- & co\n\nUnsubscribe: -zqt1-\n"},
        {"type": "text/html", "value": '<p>Hi -zqh0- &amp; co</p><a href="-zqh1-">Unsubscribe</a>'}]
    assert body["personalizations"][0] == {
        "to": [{"email": "reader0@example.com", "name": "Reader 0"}],
        "subject": 'News for Reader <0> & "friends"',
        "custom_args": {"issue": "2026-11-30-weekly", "batch": "b0001"},
        "headers": {"List-Unsubscribe": "<https://example.com/unsubscribe?t=token0>, "
                                        "<mailto:unsubscribe@example.com?subject=unsubscribe>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        "substitutions": {"-zqh0-": "Reader &lt;0&gt; &amp; &#34;friends&#34;",
                          "-zqh1-": "https://example.com/unsubscribe?t=token0",
                          "-zqt0-": 'Reader <0> & "friends"', "-zqt1-": "https://example.com/unsubscribe?t=token0"},
    }
    assert body["from"] == {"email": "notes@example.com", "name": "Field Notes"}
    assert body["reply_to"] == {"email": "editor@example.com"}
    assert body["categories"] == ["2026-11-30-weekly"]
    assert body["tracking_settings"] == {"click_tracking": {"enable": False, "enable_text": False},
                                         "open_tracking": {"enable": False}}
    assert "mail_settings" not in body
    # what each recipient receives is exactly their personalised message
    for person, message in zip(body["personalizations"], batch.messages):
        html = body["content"][1]["value"]
        for key, value in person["substitutions"].items():
            html = html.replace(key, value)
        assert html == message.html


@responses.activate
def test_202_means_every_recipient_was_accepted_with_the_message_id():
    accepted()
    outcomes = send(sendgrid(), sample_batch(3))
    assert {(o.state, o.provider_id) for o in outcomes} == {("sent", "Nn4KbE0QQBaHpjsOyPR5jg")}


@responses.activate
def test_sandbox_mode_is_requested_and_its_empty_200_counts_as_accepted():
    responses.add(responses.POST, URL, status=200, body="")
    outcomes = send(sendgrid(test_mode=True, track_opens=True, track_clicks=True), sample_batch(1))
    body = json.loads(responses.calls[0].request.body)
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert body["tracking_settings"]["open_tracking"] == {"enable": True}
    assert [o.state for o in outcomes] == ["sent"]


@responses.activate
def test_a_200_outside_sandbox_mode_is_unknown():
    responses.add(responses.POST, URL, status=200, body="<html>proxy</html>")
    assert [o.state for o in send(sendgrid(), sample_batch(2))] == ["unknown", "unknown"]


@responses.activate
def test_a_400_naming_one_personalization_fails_it_and_sends_the_others_again():
    responses.add(responses.POST, URL, status=400, json=fixture("400-invalid-address.json"))
    outcomes = send(sendgrid(), sample_batch(3))
    assert [o.state for o in outcomes] == ["retry", "failed", "retry"]
    assert "Does not contain a valid address." in outcomes[1].reason


@responses.activate
def test_a_400_about_the_sender_is_a_definite_refusal_of_the_batch():
    responses.add(responses.POST, URL, status=400, json=fixture("400-sender.json"))
    refused = refusal(sendgrid(), sample_batch(2))
    assert not refused.retryable and "verified Sender Identity" in refused.message


@responses.activate
def test_an_error_every_personalization_shares_is_the_requests_not_theirs():
    responses.add(responses.POST, URL, status=400, json=fixture("400-reserved-header.json"))
    refused = refusal(sendgrid(), sample_batch(2))
    assert not refused.retryable and "header is reserved" in refused.message
    assert refused.message.count("header is reserved") == 1  # said once, not once per recipient


@responses.activate
def test_an_error_on_one_personalizations_own_field_fails_only_that_recipient():
    responses.add(responses.POST, URL, status=400, json={"errors": [
        {"field": "personalizations.2.subject", "message": "The subject is too long."}]})
    outcomes = send(sendgrid(), sample_batch(3))
    assert [o.state for o in outcomes] == ["retry", "retry", "failed"] and "too long" in outcomes[2].reason


@responses.activate
def test_a_403_about_the_sender_says_so_and_points_at_sender_identity():
    responses.add(responses.POST, URL, status=403, json=fixture("403-sender.json"))
    err = refusal(sendgrid(), sample_batch(1), AuthError)
    assert err.status == 403 and "verified Sender Identity" in err.message
    assert "refused to send from this sender" in err.message and "Sender Identity" in err.hint
    assert "NEWSLETTER_API_KEY" not in err.hint


@responses.activate
def test_a_403_about_the_key_points_at_the_key():
    responses.add(responses.POST, URL, status=403, json={"errors": [{"field": None, "message": "access forbidden"}]})
    refused = refusal(sendgrid(), sample_batch(1), AuthError)
    assert "refused the API key (HTTP 403): access forbidden" in refused.message
    assert "NEWSLETTER_API_KEY" in refused.hint and "permission" in refused.hint


@responses.activate
def test_a_key_echoed_in_an_error_is_scrubbed():
    responses.add(responses.POST, URL, status=401, json={"errors": [{"field": None, "message": f"bad key {KEY}"}]})
    refused = refusal(sendgrid(), sample_batch(1), AuthError)
    assert KEY not in str(refused) + refused.body and "bad key [API key]" in refused.message


@responses.activate
def test_429_waits_until_x_ratelimit_reset():
    answer = fixture("429-headers.json")
    headers = {**answer["headers"], "X-RateLimit-Reset": str(int(time.time()) + 20)}
    responses.add(responses.POST, URL, status=429, json=answer["body"], headers=headers)
    refused = refusal(sendgrid(), sample_batch(1))
    assert refused.retryable and 17 <= refused.retry_after <= 21


@responses.activate
def test_401_aborts_without_showing_the_key():
    responses.add(responses.POST, URL, status=401, json=fixture("401.json"))
    refused = refusal(sendgrid(), sample_batch(1), AuthError)
    assert KEY not in str(refused) + refused.body


def with_values(batch, values):
    return dataclasses.replace(batch, slot_values=tuple(values))


def test_merge_values_over_the_substitution_limit_fail_that_recipient_alone():
    batch = sample_batch(3)
    huge = ("x" * 11_000, batch.slot_values[1][1])
    with pytest.raises(RecipientError, match="reader1@example.com.*10000-byte") as caught:
        sendgrid().build_request(with_values(batch, [batch.slot_values[0], huge, batch.slot_values[2]]))
    assert caught.value.email == "reader1@example.com"  # the others go back to pending, not the whole run


def test_merge_values_over_the_limit_for_most_of_a_batch_are_the_issues_doing():
    batch = sample_batch(3)
    huge = ("x" * 11_000, batch.slot_values[0][1])
    with pytest.raises(ProviderError, match="merge fields take more than") as caught:
        sendgrid().build_request(with_values(batch, [huge, huge, batch.slot_values[2]]))
    assert not caught.value.retryable


@responses.activate
def test_a_recipient_over_the_limit_is_never_sent():
    batch = sample_batch(1)
    with pytest.raises(RecipientError):
        send(sendgrid(), with_values(batch, [("x" * 11_000, batch.slot_values[0][1])]))
    assert len(responses.calls) == 0


def test_without_a_template_only_identical_bodies_can_share_a_request():
    batch = sample_batch(2)
    bare = type(batch)(batch.issue_id, batch.batch_id, batch.messages)
    with pytest.raises(ProviderError, match="template"):
        sendgrid().build_request(bare)
    same = type(batch)(batch.issue_id, batch.batch_id, (batch.messages[0],) * 2)
    body = json.loads(sendgrid().build_request(same).data)
    assert body["content"][1]["value"] == batch.messages[0].html
    assert "substitutions" not in body["personalizations"][0]


def test_sendgrid_says_plainly_that_it_cannot_reconcile():
    assert sendgrid().reconcile(sample_batch(1), requests.Session(), age=3600) is None
    assert "Email Activity API" in sendgrid().reconcile_note


# -- [unsubscribe] url = "provider": an unsubscribe group ------------------------------------------
GROUP = 4242
TAG = "<%asm_group_unsubscribe_raw_url%>"


def managed_sendgrid(**provider) -> SendGridProvider:
    flags = {"provider.name": "sendgrid", "unsubscribe.url": "provider", "provider.asm_group_id": GROUP,
             **{f"provider.{k}": v for k, v in provider.items()}}
    return SendGridProvider(config.resolve({}, {}, flags, source=None), KEY)


def test_a_managed_request_names_the_group_and_puts_its_tag_in_the_body_not_in_substitutions():
    body = json.loads(managed_sendgrid().build_request(sample_batch(2, unsubscribe=TAG)).data)
    assert body["asm"] == {"group_id": GROUP, "groups_to_display": [GROUP]}
    assert body["content"] == [
        {"type": "text/plain", "value": f"Hi -zqt0- & co\n\nUnsubscribe: {TAG}\n"},
        {"type": "text/html", "value": f'<p>Hi -zqh0- &amp; co</p><a href="{TAG}">Unsubscribe</a>'}]
    for person in body["personalizations"]:
        assert set(person["substitutions"]) == {"-zqh0-", "-zqt0-"}  # no escaped copy of the tag to substitute
        assert "headers" not in person  # SendGrid adds List-Unsubscribe for the group


def test_a_proof_copy_without_the_template_gets_the_tag_unescaped():
    batch = dataclasses.replace(sample_batch(1, unsubscribe=TAG), template=None, slot_values=())
    assert "&lt;%asm" in batch.messages[0].html  # as rendered: the link HTML-escaped
    html = json.loads(managed_sendgrid().build_request(batch).data)["content"][1]["value"]
    assert f'href="{TAG}"' in html and "&lt;%asm" not in html


def test_without_the_provider_setting_the_group_is_not_sent():
    body = json.loads(sendgrid(asm_group_id=GROUP).build_request(sample_batch(1)).data)
    assert "asm" not in body and "List-Unsubscribe" in body["personalizations"][0]["headers"]


@responses.activate
def test_sync_reads_the_unsubscribe_group_after_the_account_lists():
    for name in ("bounces", "invalid_emails", "spam_reports", "unsubscribes"):
        responses.get(f"https://api.sendgrid.com/v3/suppression/{name}", json=[])
    responses.get(f"https://api.sendgrid.com/v3/asm/groups/{GROUP}/suppressions",
                  json=["left@example.com", "gone@example.com"])
    with requests.Session() as session:
        found = list(managed_sendgrid().suppression_list(session))
    assert [(s.email, s.kind, s.detail) for s in found] == [
        ("left@example.com", "unsubscribed", f"unsubscribe group {GROUP}"),
        ("gone@example.com", "unsubscribed", f"unsubscribe group {GROUP}")]
    assert responses.calls[-1].request.headers["Authorization"] == f"Bearer {KEY}"


@responses.activate
def test_sync_without_a_group_reads_no_group():
    for name in ("bounces", "invalid_emails", "spam_reports", "unsubscribes"):
        responses.get(f"https://api.sendgrid.com/v3/suppression/{name}", json=[])
    with requests.Session() as session:
        assert list(sendgrid().suppression_list(session)) == []
    assert len(responses.calls) == 4


@responses.activate
def test_a_group_answer_that_is_not_a_list_of_addresses_is_not_read_as_one():
    for name in ("bounces", "invalid_emails", "spam_reports", "unsubscribes"):
        responses.get(f"https://api.sendgrid.com/v3/suppression/{name}", json=[])
    responses.get(f"https://api.sendgrid.com/v3/asm/groups/{GROUP}/suppressions", json=[{"email": "a@example.com"}])
    with requests.Session() as session, pytest.raises(ProviderError, match="other than a list of addresses"):
        list(managed_sendgrid().suppression_list(session))
