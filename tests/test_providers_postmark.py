"""Postmark adapter: the exact request, and its answers as documented (tests/fixtures/postmark/)."""

from __future__ import annotations

import json

import pytest
import requests
import responses
from helpers import canned, make_adapter, refusal, send, sent_request
from fakeproviders import sample_batch

from newsletter.errors import AuthError, ConfigError, ProviderError
from newsletter.providers.postmark import PostmarkProvider

KEY = "pm-server-token-123"
URL = "https://api.postmarkapp.com/email/batch"


def fixture(name: str):
    return canned("postmark", name)


def postmark(**provider) -> PostmarkProvider:
    return make_adapter("postmark", KEY, **provider)


def receivers(count: int):
    return sample_batch(addresses=[f"receiver{n}@example.com" for n in range(1, count + 1)])


@responses.activate
def test_the_request_is_postmarks_batch_array_on_the_broadcast_stream():
    responses.add(responses.POST, URL, json=fixture("batch-200.json"))
    batch = receivers(2)
    request = sent_request(postmark(), batch)
    assert request.headers["X-Postmark-Server-Token"] == KEY
    assert request.headers["Accept"] == "application/json"
    first = batch.messages[0]
    body = json.loads(request.body)
    assert body[0] == {
        "From": "Field Notes <notes@example.com>", "To": "receiver1@example.com", "Subject": first.subject,
        "HtmlBody": first.html, "TextBody": first.text, "MessageStream": "broadcast",
        "Tag": "2026-11-30-weekly", "Metadata": {"issue": "2026-11-30-weekly", "batch": "b0001"},
        "Headers": [],  # the broadcast stream adds List-Unsubscribe itself
        "TrackOpens": False, "TrackLinks": "None", "ReplyTo": "editor@example.com",
    }
    assert [m["To"] for m in body] == ["receiver1@example.com", "receiver2@example.com"]


@responses.activate
def test_another_stream_carries_our_list_unsubscribe_and_tracking_and_test_token():
    responses.add(responses.POST, URL, json=fixture("batch-200.json"))
    request = sent_request(postmark(message_stream="newsletters", track_opens=True, track_clicks=True, test_mode=True), receivers(2))
    assert request.headers["X-Postmark-Server-Token"] == "POSTMARK_API_TEST"
    item = json.loads(request.body)[0]
    assert item["MessageStream"] == "newsletters" and item["TrackOpens"] is True
    assert item["TrackLinks"] == "HtmlAndText"
    assert item["Headers"] == [{"Name": "List-Unsubscribe", "Value": "<https://example.com/unsubscribe?t=token0>, "
                                "<mailto:unsubscribe@example.com?subject=unsubscribe>"},
                               {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"}]


@responses.activate
def test_api_base_overrides_the_origin():
    responses.add(responses.POST, "http://127.0.0.1:9/email/batch", json=fixture("batch-200.json"))
    assert [o.state for o in send(postmark(api_base="http://127.0.0.1:9/"), receivers(2))] == ["sent", "sent"]


@responses.activate
def test_documented_success_maps_each_message_id():
    responses.add(responses.POST, URL, json=fixture("batch-200.json"))
    outcomes = send(postmark(), receivers(2))
    assert [(o.state, o.provider_id) for o in outcomes] == [
        ("sent", "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"), ("sent", "e2ecbbfc-fe12-463d-b933-9fe22915106d")]


@responses.activate
def test_error_codes_inside_a_200_are_per_recipient_failures():
    responses.add(responses.POST, URL, json=fixture("batch-partial.json"))
    outcomes = send(postmark(), receivers(4))
    assert [o.state for o in outcomes] == ["sent", "failed", "failed", "sent"]
    inactive, invalid = outcomes[1], outcomes[2]
    assert inactive.suppress and "406" in inactive.reason and "inactive" in inactive.reason
    assert not invalid.suppress and "Invalid 'To' address" in invalid.reason
    assert outcomes[3].provider_id == "8f0bc2a5-cb3c-4d1c-8a9e-3d5e1c0b6a11"  # "delivery may be delayed" is sent


@responses.activate
def test_an_unknown_stream_in_every_message_stops_the_run_and_fails_nobody():
    responses.add(responses.POST, URL, json=fixture("batch-stream-not-found.json"))
    err = refusal(postmark(), receivers(2))
    assert not err.retryable and not isinstance(err, AuthError)
    assert "ErrorCode 1235" in err.message and "'MessageStream' provided does not exist" in err.message
    assert "message_stream" in err.hint


@responses.activate
@pytest.mark.parametrize("code, text, hint", [
    (300, "Invalid 'From' address: 'notes@example'.", "fix what Postmark says"),  # a 300 that is ours, not theirs
    (401, "Sender signature not confirmed", "Sender Signature"),
    (405, "Not allowed to send: you have run out of credits.", "credits"),
])
def test_account_and_request_codes_inside_a_200_mark_nobody_failed(code, text, hint):
    responses.add(responses.POST, URL, json=[{"ErrorCode": code, "Message": text}] * 3)
    refused = refusal(postmark(), receivers(3))
    assert not refused.retryable and text in refused.message and hint in refused.hint


@responses.activate
def test_a_refusal_beside_a_recipient_failure_still_stops_the_run():
    answer = fixture("batch-partial.json")[1:3] + [{"ErrorCode": 412, "Message": "Account is pending approval."}]
    responses.add(responses.POST, URL, json=answer)
    with pytest.raises(ProviderError, match="ErrorCode 412"):
        send(postmark(), receivers(3))


@responses.activate
def test_refused_beside_accepted_messages_go_back_to_pending_never_failed():
    responses.add(responses.POST, URL, json=fixture("batch-pending-approval.json"))
    outcomes = send(postmark(), receivers(2))
    assert [o.state for o in outcomes] == ["sent", "retry"]  # raising would send receiver1 a second copy
    assert "postmark 412" in outcomes[1].reason and "pending approval" in outcomes[1].reason


@responses.activate
def test_a_200_array_of_the_wrong_length_is_unknown():
    responses.add(responses.POST, URL, json=fixture("batch-200.json")[:1])
    assert [o.state for o in send(postmark(), receivers(2))] == ["unknown", "unknown"]


@responses.activate
def test_a_422_for_the_whole_request_is_a_definite_refusal():
    responses.add(responses.POST, URL, json=fixture("error-422.json"), status=422)
    refused = refusal(postmark(), receivers(2))
    assert not refused.retryable and "not a Sender Signature" in refused.message


@responses.activate
@pytest.mark.parametrize("status, answer, said", [
    (413, {"ErrorCode": 0, "Message": "Request too large"}, ": Request too large"),
    (400, {"ErrorCode": 402, "Message": "Invalid JSON"}, ": Invalid JSON"),
    (404, "<html>Not Found</html>", ""),  # a wrong api_base path
])
def test_any_other_4xx_is_a_refusal_of_the_batch_never_in_doubt(status, answer, said):
    """A 4xx says the request was not taken: nothing to reconcile, and the run stops as for a 422."""
    kwargs = {"json": answer} if isinstance(answer, dict) else {"body": answer}
    responses.add(responses.POST, URL, status=status, **kwargs)
    refused = refusal(postmark(), receivers(2))
    assert not refused.retryable and refused.status == status
    assert refused.message == f"postmark refused the batch (HTTP {status}){said}"
    assert refused.hint.startswith("nothing in this batch was sent")


@responses.activate
def test_401_aborts_without_showing_the_token():
    responses.add(responses.POST, URL, json=fixture("error-401.json"), status=401)
    refused = refusal(postmark(), receivers(1), AuthError)
    assert KEY not in str(refused) + refused.body


def test_a_stream_id_with_odd_characters_is_refused():
    with pytest.raises(ConfigError, match="not a Postmark stream id"):
        postmark(message_stream="Broad cast")


@responses.activate
@pytest.mark.parametrize("age, missing", [(300.0, "retry"), (5 * 86400.0, "retry"), (10.0, "unknown"),
                                          (10 * 86400.0, "unknown"), (50 * 86400.0, "unknown")])
def test_reconcile_searches_by_tag_and_batch_metadata(age, missing):
    responses.add(responses.GET, "https://api.postmarkapp.com/messages/outbound",
                  json=fixture("outbound-search.json"))
    with requests.Session() as session:
        outcomes = postmark().reconcile(receivers(2), session, age=age)
    query = responses.calls[0].request.params
    assert query == {"count": "500", "offset": "0", "tag": "2026-11-30-weekly", "metadata_batch": "b0001",
                     "messagestream": "broadcast"}
    assert responses.calls[0].request.headers["X-Postmark-Server-Token"] == KEY
    assert (outcomes[0].state, outcomes[0].provider_id) == ("sent", "0ac29aee-e1cd-480d-b08d-4f48548ff48d")
    assert outcomes[1].state == missing  # absence proves "never accepted" only inside the search window


@responses.activate
def test_a_redirect_is_never_followed_with_the_token():
    responses.add(responses.POST, URL, status=307, headers={"Location": "https://elsewhere.example/email/batch"})
    responses.add(responses.POST, "https://elsewhere.example/email/batch", json=fixture("batch-200.json"))
    refused = refusal(postmark(), sample_batch(2))
    assert not refused.retryable and "a redirect to 'https://elsewhere.example/email/batch'" in refused.message
    assert [call.request.url for call in responses.calls] == [URL]


@pytest.mark.parametrize("headers, expected", [
    ({"Retry-After": "12"}, 12.0),
    ({"Retry-After": "soon"}, None),  # unreadable: the caller's backoff decides
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"}, 0.0),  # a date past, in UTC without a zone
    ({"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}, "future"),
    ({"X-RateLimit-Reset": "not a number"}, None),
    ({}, None),
])
def test_retry_after_reads_what_it_can_and_never_raises(headers, expected):
    from newsletter.providers.answers import retry_after

    got = retry_after(headers)
    assert got > 1e9 if expected == "future" else got == expected
