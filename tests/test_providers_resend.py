"""Resend adapter: the exact batch request with its idempotency key, and its documented answers."""

from __future__ import annotations

import json

import pytest
import requests
import responses
from helpers import canned, make_adapter, refusal, send, sent_request
from fakeproviders import sample_batch

from newsletter.errors import AuthError, ConfigError, ProviderError
from newsletter.providers.resend import ResendProvider

KEY = "re_secret_321"
URL = "https://api.resend.com/emails/batch"


def fixture(name: str):
    return canned("resend", name)


def resend(**provider) -> ResendProvider:
    return make_adapter("resend", KEY, **provider)


def ab():
    return sample_batch(addresses=["b@example.com", "a@example.com"])  # deliberately not in address order


@responses.activate
def test_the_request_carries_the_idempotency_key_and_asks_for_permissive_validation():
    responses.add(responses.POST, URL, json=fixture("batch-200.json"))
    batch = ab()
    request = sent_request(resend(), batch)
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Idempotency-Key"] == "2026-11-30-weekly/b0001"
    assert request.headers["x-batch-validation"] == "permissive"
    body = json.loads(request.body)
    a = batch.messages[1]
    assert body[0] == {
        "from": "Field Notes <notes@example.com>", "to": ["Reader 1 <a@example.com>"], "subject": a.subject,
        "html": a.html, "text": a.text, "headers": dict(a.headers), "reply_to": "editor@example.com",
        "tags": [{"name": "issue", "value": "2026-11-30-weekly"}, {"name": "batch", "value": "b0001"}]}
    assert [e["to"] for e in body] == [["Reader 1 <a@example.com>"], ["Reader 0 <b@example.com>"]]


@responses.activate
def test_ids_map_to_recipients_in_the_order_they_were_sent():
    responses.add(responses.POST, URL, json=fixture("batch-200.json"))
    outcomes = {o.email: o.provider_id for o in send(resend(), ab())}
    assert outcomes == {"a@example.com": "ae2014de-c168-4c61-8267-70d2662a1ce1",
                        "b@example.com": "faccb7a5-8a28-4e9a-ac64-8da1cc3bc1cb"}


@responses.activate
def test_permissive_errors_fail_only_their_index():
    responses.add(responses.POST, URL, json=fixture("batch-permissive.json"))
    outcomes = send(resend(), sample_batch(3))
    assert [(o.state, o.provider_id) for o in outcomes] == [
        ("sent", "ae2014de-c168-4c61-8267-70d2662a1ce1"), ("failed", ""),
        ("sent", "faccb7a5-8a28-4e9a-ac64-8da1cc3bc1cb")]
    assert "must be a `string`" in outcomes[1].reason


@responses.activate
def test_permissive_errors_about_the_sender_for_every_email_stop_the_run_and_fail_nobody():
    responses.add(responses.POST, URL, json=fixture("batch-permissive-domain.json"))
    refused = refusal(resend(), ab())
    assert not refused.retryable and "domain is not verified" in refused.message
    assert refused.message.count("domain is not verified") == 1


@responses.activate
def test_a_permissive_error_not_about_to_beside_accepted_emails_goes_back_to_pending():
    answer = {"data": [{"id": "ae2014de-c168-4c61-8267-70d2662a1ce1"}],
              "errors": [{"index": 1, "message": "The `subject` field must be a `string`."}]}
    responses.add(responses.POST, URL, json=answer)
    outcomes = {o.email: o for o in send(resend(), ab())}
    assert outcomes["a@example.com"].state == "sent"  # raising would have sent a@ a second copy
    assert outcomes["b@example.com"].state == "retry" and "`subject`" in outcomes["b@example.com"].reason


@responses.activate
def test_a_422_naming_a_recipients_address_in_another_field_fails_nobody():
    text = "Invalid `reply_to` field. a@example.com is not allowed."
    responses.add(responses.POST, URL, status=422, json={"statusCode": 422, "name": "validation_error",
                                                         "message": text})
    with pytest.raises(ProviderError, match="reply_to"):
        send(resend(), ab())


@responses.activate
def test_a_403_for_an_unverified_domain_says_so_and_points_at_the_domain():
    responses.add(responses.POST, URL, status=403, json=fixture("403-domain.json"))
    refused = refusal(resend(), ab(), AuthError)
    assert "domain is not verified" in refused.message and "resend.com/domains" in refused.hint
    assert "refused to send from this sender or domain" in refused.message


@responses.activate
def test_ids_that_do_not_match_the_batch_are_unknown():
    responses.add(responses.POST, URL, json=fixture("batch-200.json"))
    assert {o.state for o in send(resend(), sample_batch(3))} == {"unknown"}


@responses.activate
def test_a_key_reused_with_another_payload_leaves_the_batch_unknown():
    responses.add(responses.POST, URL, status=409, json=fixture("409-idempotency.json"))
    outcomes = send(resend(), ab())
    assert {o.state for o in outcomes} == {"unknown"} and "invalid_idempotent_request" in outcomes[0].reason


@responses.activate
def test_a_concurrent_request_with_the_key_is_in_doubt_and_retried():
    responses.add(responses.POST, URL, status=409, json=fixture("409-concurrent.json"))
    refused = refusal(resend(), ab())
    assert refused.retryable and refused.status is None  # same key again, never a new batch


@responses.activate
def test_a_422_about_the_sender_refuses_the_batch():
    responses.add(responses.POST, URL, status=422, json=fixture("422-validation.json"))
    refused = refusal(resend(), ab())
    assert not refused.retryable and "Invalid `from` field" in refused.message


@responses.activate
def test_403_aborts_and_429_waits_for_retry_after():
    responses.add(responses.POST, URL, status=403, json=fixture("403-invalid-key.json"))
    with pytest.raises(AuthError) as caught:
        send(resend(), ab())
    assert KEY not in str(caught.value)
    assert "refused the API key (HTTP 403): API key is invalid" in caught.value.message
    assert "NEWSLETTER_API_KEY" in caught.value.hint
    responses.replace(responses.POST, URL, status=429, json=fixture("429-rate-limit.json"),
                      headers={"retry-after": "1"})
    with pytest.raises(ProviderError) as caught:
        send(resend(), ab())
    assert caught.value.retryable and caught.value.retry_after == 1.0


@pytest.mark.parametrize("switch", ["track_opens", "track_clicks", "test_mode"])
def test_switches_resend_cannot_honour_are_refused_up_front(switch):
    with pytest.raises(ConfigError, match=switch):
        resend(**{switch: True})


@responses.activate
def test_reconcile_replays_the_batch_with_its_original_key():
    responses.add(responses.POST, URL, json=fixture("batch-200.json"))
    with requests.Session() as session:
        outcomes = resend().reconcile(ab(), session, age=3600.0)
    assert responses.calls[0].request.headers["Idempotency-Key"] == "2026-11-30-weekly/b0001"
    assert {o.state for o in outcomes} == {"sent"}


@responses.activate
def test_reconcile_never_replays_after_the_key_expired():
    with requests.Session() as session:
        outcomes = resend().reconcile(ab(), session, age=25 * 3600.0)
    assert {o.state for o in outcomes} == {"unknown"} and len(responses.calls) == 0
