"""Amazon SES adapter: the exact SendBulkEmail request (checked against the service model's shapes), its
SigV4 signature (against AWS's published test vectors and botocore on a fixed clock), the documented answers,
preflight, credentials and the suppression list."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from pathlib import Path

import botocore.auth
import pytest
import requests
import responses
from fakeproviders import SES_ACCESS_KEY, FakeProviders, handlebars, sample_batch, sigv4_signature, sigv4_verdict
from helpers import canned, make_adapter, refusal, send

from newsletter.compile.slots import SlotTemplate
from newsletter.errors import AuthError, ConfigError, ProviderError, RecipientError
from newsletter.providers.ses import SesProvider

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY-ses"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE-session-token"
ENV = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "eu-west-1"}
URL = "https://email.eu-west-1.amazonaws.com/v2/email/outbound-bulk-emails"
MODEL = json.loads((Path(__file__).parent / "fixtures" / "specs" / "ses" / "sesv2-2019-09-27-service-2.json")
                   .read_text(encoding="utf-8"))


def ses(env: dict | None = None, **provider) -> SesProvider:
    return make_adapter("ses", None, env={**ENV, **(env or {})}, **provider)


def answer(name: str, status: int = 200, error_type: str = "") -> None:
    headers = {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"} \
        if error_type else {}
    responses.add(responses.POST, URL, json=canned("ses", name), status=status, headers=headers)


@pytest.fixture
def fixed_clock(monkeypatch):
    """botocore's signer at 2026-12-03 09:00:00 UTC."""
    when = datetime.datetime(2026, 12, 3, 9, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda remove_tzinfo=True: when)
    return when


# -- the request ---------------------------------------------------------------------------------------
def validate(shape_name: str, value, where: str = "") -> list[str]:
    """What in ``value`` breaks the service model's shape: unknown or missing members, types, lengths."""
    shape = MODEL["shapes"][shape_name]
    kind, problems = shape["type"], []
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{where}: not a structure"]
        problems += [f"{where}.{m}: required" for m in shape.get("required", []) if m not in value]
        for name, item in value.items():
            if name not in shape["members"]:
                problems.append(f"{where}.{name}: not a member of {shape_name}")
            else:
                problems += validate(shape["members"][name]["shape"], item, f"{where}.{name}")
    elif kind == "list":
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        if not shape.get("min", 0) <= len(value) <= shape.get("max", len(value)):
            problems.append(f"{where}: {len(value)} items")
        for n, item in enumerate(value):
            problems += validate(shape["member"]["shape"], item, f"{where}[{n}]")
    elif kind == "string":
        if not isinstance(value, str):
            return [f"{where}: not a string"]
        if not shape.get("min", 0) <= len(value) <= shape.get("max", len(value)):
            problems.append(f"{where}: length {len(value)}")
        if "pattern" in shape and not re.fullmatch(shape["pattern"], value):
            problems.append(f"{where}: does not match {shape['pattern']}")
        if "enum" in shape and value not in shape["enum"]:
            problems.append(f"{where}: not one of {shape['enum']}")
    elif kind == "boolean" and not isinstance(value, bool):
        problems.append(f"{where}: not a boolean")
    return problems


@pytest.mark.parametrize("settings", [{}, {"configuration_set": "newsletter-events"}])
def test_the_request_matches_the_service_models_shapes(settings):
    batch = sample_batch(SesProvider.max_batch)
    body = json.loads(ses(**settings).build_request(batch).data)
    assert validate("SendBulkEmailRequest", body) == []
    assert len(body["BulkEmailEntries"]) == 50  # the documented limit (the model has none)
    assert validate("SendBulkEmailRequest", {**body, "Surprise": 1}) == [".Surprise: not a member of "
                                                                         "SendBulkEmailRequest"]


def test_the_request_sends_the_template_once_and_each_readers_values(fixed_clock):
    batch = sample_batch(2)
    request = ses(configuration_set="newsletter-events").build_request(batch)
    assert request.url == URL
    body = json.loads(request.data)
    template = body["DefaultContent"]["Template"]
    assert template["TemplateContent"] == {
        "Subject": "{{{subject}}}",
        "Html": '<p>Hi {{{h0}}} &amp; co</p><a href="{{{h1}}}">Unsubscribe</a>',
        "Text": "Hi {{{t0}}} & co\n\nUnsubscribe: {{{t1}}}\n"}
    assert json.loads(template["TemplateData"]) == {"subject": "", "h0": "", "h1": "", "t0": "", "t1": "",
                                                    "lb": "{", "bs": "\\"}
    assert body["FromEmailAddress"] == "Field Notes <notes@example.com>"
    assert body["ReplyToAddresses"] == ["editor@example.com"]
    assert body["ConfigurationSetName"] == "newsletter-events"
    first = body["BulkEmailEntries"][0]
    assert first["Destination"] == {"ToAddresses": ["Reader 0 <reader0@example.com>"]}
    assert first["ReplacementTags"] == [{"Name": "issue", "Value": "2026-11-30-weekly"},
                                        {"Name": "batch", "Value": "b0001"}]
    assert first["ReplacementHeaders"] == [
        {"Name": "List-Unsubscribe", "Value": "<https://example.com/unsubscribe?t=token0>, "
                                              "<mailto:unsubscribe@example.com?subject=unsubscribe>"},
        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"}]
    assert json.loads(first["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"]) == {
        "subject": 'News for Reader <0> & "friends"', "h0": "Reader &lt;0&gt; &amp; &#34;friends&#34;",
        "h1": "https://example.com/unsubscribe?t=token0", "t0": 'Reader <0> & "friends"',
        "t1": "https://example.com/unsubscribe?t=token0", "lb": "{", "bs": "\\"}


def test_the_signature_is_botocores_on_a_fixed_clock_and_agrees_with_an_independent_signer(fixed_clock):
    request = ses(env={"AWS_SESSION_TOKEN": TOKEN}).build_request(sample_batch(2))
    assert request.headers["X-Amz-Date"] == "20261203T090000Z"
    assert request.headers["X-Amz-Security-Token"] == TOKEN
    authorization = request.headers["Authorization"]
    prefix = ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261203/eu-west-1/ses/aws4_request, "
              "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=")
    assert authorization.startswith(prefix)
    headers = {**request.headers, "Host": "email.eu-west-1.amazonaws.com"}
    signed = ["content-type", "host", "x-amz-date", "x-amz-security-token"]
    expected = sigv4_signature("POST", "/v2/email/outbound-bulk-emails", headers, request.data, signed, SECRET,
                               "20261203T090000Z", "eu-west-1", "ses")
    assert authorization == prefix + expected
    # any change to what was signed breaks it: the body, or a header
    assert sigv4_signature("POST", "/v2/email/outbound-bulk-emails", headers, request.data + b" ", signed, SECRET,
                           "20261203T090000Z", "eu-west-1", "ses") != expected


# AWS's published SigV4 test suite (aws-sig-v4-test-suite): get-vanilla, get-vanilla-query-order-key-case,
# post-vanilla; credentials AKIDEXAMPLE, us-east-1, service "service", 20150830T123600Z.
VECTORS = [
    ("GET", "/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("GET", "/?Param2=value2&Param1=value1", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("POST", "/", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
]


@pytest.mark.parametrize("method, target, signature", VECTORS)
def test_the_fakes_signature_check_passes_awss_published_test_vectors(method, target, signature):
    headers = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    assert sigv4_signature(method, target, headers, b"", ["host", "x-amz-date"], secret, "20150830T123600Z",
                           "us-east-1", "service") == signature
    headers["Authorization"] = ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                                f"SignedHeaders=host;x-amz-date, Signature={signature}")
    then = 1440938160.0  # 2015-08-30T12:36:00Z
    assert sigv4_verdict(method, target, headers, b"", "AKIDEXAMPLE", secret, service="service", now=then) == "ok"
    assert sigv4_verdict(method, target, headers, b"", "AKIDEXAMPLE", secret, service="service",
                         now=then + 3600) == "signature expired"
    assert sigv4_verdict(method, target, headers, b"", "AKIDEXAMPLE", secret + "x", service="service",
                         now=then) == "signature does not match"


def test_literal_braces_and_backslashes_of_the_issue_reach_the_reader_as_written():
    """Handlebars would read ``{{name}}`` in the issue (a code sample) as a variable and ``\\{{`` as an escape."""
    tricky = "Use {{name}} or {{{raw}}} or \\{{x}} in {braces} and a trailing \\"
    template = {"subject": SlotTemplate.split("News for zqslot0qz"),
                "html": SlotTemplate.split(f"<pre>{tricky}</pre><p>zqslot0qz</p>"),
                "text": SlotTemplate.split(f"{tricky}\nzqslot0qz{{")}
    batch = dataclasses.replace(sample_batch(1), template=template)
    body = json.loads(ses().build_request(batch).data)
    content = body["DefaultContent"]["Template"]["TemplateContent"]
    entry = body["BulkEmailEntries"][0]["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"]
    data = {**json.loads(body["DefaultContent"]["Template"]["TemplateData"]), **json.loads(entry)}
    values = batch.slot_values[0]
    assert handlebars(content["Html"], data) == template["html"].fill(values, html=True)
    assert handlebars(content["Text"], data) == template["text"].fill(values, html=False)
    assert handlebars(content["Subject"], data) == batch.messages[0].subject


def test_merge_values_over_the_template_data_limit_fail_that_reader_alone():
    batch = sample_batch(3)
    huge = list(batch.slot_values[1])
    huge[0] = "x" * 140_000  # twice in the data (html and text): over 262,144 characters
    batch = dataclasses.replace(batch, slot_values=(batch.slot_values[0], tuple(huge), batch.slot_values[2]))
    with pytest.raises(RecipientError) as caught:
        ses().build_request(batch)
    assert caught.value.email == "reader1@example.com" and "262,144" in caught.value.message


def test_a_header_ses_cannot_carry_fails_that_reader_before_anything_is_sent():
    batch = sample_batch(2)
    odd = dataclasses.replace(batch.messages[1], headers={"List-Unsubscribe": "<https://example.com/ü>"})
    with pytest.raises(RecipientError, match="printable ASCII"):
        ses().build_request(dataclasses.replace(batch, messages=(batch.messages[0], odd)))


def test_non_ascii_display_names_are_encoded_words():
    batch = sample_batch(1)
    batch = dataclasses.replace(batch, messages=(dataclasses.replace(batch.messages[0], to_name="Zoë Ångström"),))
    entry = json.loads(ses().build_request(batch).data)["BulkEmailEntries"][0]
    assert entry["Destination"]["ToAddresses"] == ["=?utf-8?b?Wm/DqyDDhW5nc3Ryw7Zt?= <reader0@example.com>"]


# -- the answers ---------------------------------------------------------------------------------------
@responses.activate
def test_success_entries_are_sent_with_their_message_ids_in_order():
    answer("bulk-200.json")
    outcomes = send(ses(), sample_batch(3))
    ids = [r["MessageId"] for r in canned("ses", "bulk-200.json")["BulkEmailEntryResults"]]
    assert [(o.email, o.state, o.provider_id) for o in outcomes] == [
        (f"reader{n}@example.com", "sent", ids[n]) for n in range(3)]


@responses.activate
def test_a_rejected_reader_fails_and_a_transient_failure_goes_back_to_pending():
    answer("bulk-mixed.json")
    outcomes = send(ses(), sample_batch(3))
    assert [o.state for o in outcomes] == ["sent", "failed", "retry"]
    assert "MESSAGE_REJECTED" in outcomes[1].reason and "not verified" in outcomes[1].reason


@responses.activate
def test_an_account_refusal_for_every_entry_stops_the_run_and_fails_nobody():
    answer("bulk-account-suspended.json")
    refused = refusal(ses(), sample_batch(3))
    assert not refused.retryable and "ACCOUNT_SUSPENDED" in refused.message
    assert "reputation" in refused.hint


@responses.activate
def test_a_sender_refusal_beside_accepted_entries_sends_the_refused_again_not_failed():
    answer("bulk-sender-rejected.json")
    outcomes = send(ses(), sample_batch(3))
    assert [o.state for o in outcomes] == ["sent", "retry", "sent"]


@pytest.mark.parametrize("size", [1, 2])
@responses.activate
def test_a_whole_call_refusal_about_the_sender_stops_the_run(size):
    answer("400-message-rejected.json", 400, "MessageRejected")
    with pytest.raises(ProviderError) as caught:  # even alone in its batch, the reader is not to blame
        send(ses(), sample_batch(size))
    assert not caught.value.retryable and "MessageRejected" in caught.value.message
    assert "notes@example.com" in caught.value.message  # SES's own words: whose identity failed


@responses.activate
def test_throttling_in_a_400_is_retryable():
    answer("400-throttling.json", 400, "LimitExceededException")
    refused = refusal(ses(), sample_batch(2))
    assert refused.retryable


@responses.activate
def test_a_refused_signature_aborts_without_any_secret_in_the_error():
    answer("403-signature.json", 403, "InvalidSignatureException")
    refused = refusal(ses(env={"AWS_SESSION_TOKEN": TOKEN}), sample_batch(1), AuthError)
    text = str(refused) + refused.body + refused.hint
    assert "signature we calculated" in text and SECRET not in text and TOKEN not in text
    assert "AWS_SECRET_ACCESS_KEY" in refused.hint


# -- settings and credentials --------------------------------------------------------------------------
def test_no_region_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="needs a region"):
        make_adapter("ses", None, env={"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET})


def test_no_credentials_is_a_clear_config_error(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="needs AWS credentials"):
        make_adapter("ses", None, env={"AWS_REGION": "eu-west-1"})


def test_credentials_come_from_a_named_profile(tmp_path, monkeypatch):
    (tmp_path / "credentials").write_text("[newsletter]\naws_access_key_id = AKIDPROFILE\n"
                                          f"aws_secret_access_key = {SECRET}\n", encoding="utf-8")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    provider = make_adapter("ses", None, env={"AWS_PROFILE": "newsletter", "AWS_REGION": "eu-west-1"})
    assert provider.credentials.access_key == "AKIDPROFILE" and provider.secrets() == [SECRET]


@pytest.mark.parametrize("key", ["track_opens", "track_clicks", "test_mode"])
def test_switches_ses_has_no_api_for_are_refused(key):
    with pytest.raises(ConfigError, match=key):
        ses(**{key: True})


def test_the_rate_is_in_recipients_per_second():
    assert ses(rate_limit=100.0).rate_limit == pytest.approx(2.0)  # 50 recipients a call
    assert ses(rate_limit=100.0, batch_size=10).rate_limit == pytest.approx(10.0)


# -- preflight and suppressions, against the fake ----------------------------------------------------------
@pytest.fixture
def fake():
    with FakeProviders(api_key=SECRET) as server:
        yield server


def on_fake(fake: FakeProviders, **provider) -> SesProvider:
    return make_adapter("ses", None, env={"AWS_ACCESS_KEY_ID": SES_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                                          "AWS_REGION": "eu-west-1"}, api_base=fake.url, **provider)


def test_preflight_takes_the_accounts_send_rate_and_warns_of_the_sandbox(fake):
    provider = on_fake(fake)
    with requests.Session() as session:
        assert provider.preflight(session) == []
    assert provider.max_send_rate == 14.0 and provider.rate_limit == pytest.approx(14.0 / 50)
    fake.ses_account.update(canned("ses", "account-sandbox.json"))
    with requests.Session() as session:
        warnings = on_fake(fake).preflight(session)
    assert len(warnings) == 2
    assert any("sandbox: only verified addresses receive" in w for w in warnings)
    assert any("200 more recipients in the next 24 hours" in w for w in warnings)
    assert fake.ses_regions == {"eu-west-1"}


def test_a_configured_rate_wins_over_the_accounts(fake):
    provider = on_fake(fake, rate_limit=5.0)
    with requests.Session() as session:
        provider.preflight(session)
    assert provider.rate_limit == pytest.approx(5.0 / 50)


def test_preflight_stops_when_sending_is_disabled(fake):
    fake.ses_account["SendingEnabled"] = False
    with requests.Session() as session, pytest.raises(ProviderError, match="sending is disabled"):
        on_fake(fake).preflight(session)


def test_in_the_sandbox_unverified_readers_fail_and_verified_ones_receive(fake):
    fake.ses_account["ProductionAccessEnabled"] = False
    fake.ses_verified.add("reader1@example.com")
    outcomes = send(on_fake(fake), sample_batch(3))
    assert [o.state for o in outcomes] == ["failed", "sent", "failed"]
    assert [a.to for a in fake.delivered("ses")] == ["reader1@example.com"]


def test_the_suppression_list_is_read_to_the_end_by_next_token(fake):
    for n in range(2500):
        fake.suppress("ses", f"gone{n}@example.com", "bounce" if n % 2 else "complaint")
    with requests.Session() as session:
        found = list(on_fake(fake).suppression_list(session))
    assert len(found) == 2500 and len({s.email for s in found}) == 2500
    assert {s.kind for s in found} == {"bounced", "complained"}
    assert sum(1 for method, path in fake.requests_seen if path == "/v2/email/suppression/addresses") == 3


@responses.activate
def test_the_suppression_list_reads_the_documented_pages():
    url = "https://email.eu-west-1.amazonaws.com/v2/email/suppression/addresses"
    responses.add(responses.GET, url, json=canned("ses", "suppressions-1.json"))
    responses.add(responses.GET, url, json=canned("ses", "suppressions-2.json"))
    with requests.Session() as session:
        found = list(ses().suppression_list(session))
    assert [(s.email, s.kind) for s in found] == [("gone@example.com", "bounced"),
                                                  ("angry@example.org", "complained"),
                                                  ("full@example.net", "bounced")]
    assert "NextToken=AAEAAb0NcL8ZpZ1kHS3eGQp3Hx0EXAMPLE" in responses.calls[1].request.url
    assert responses.calls[1].request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")


@responses.activate
def test_a_next_token_that_does_not_move_stops_the_read():
    url = "https://email.eu-west-1.amazonaws.com/v2/email/suppression/addresses"
    for _ in range(3):
        responses.add(responses.GET, url, json=canned("ses", "suppressions-1.json"))
    with requests.Session() as session, pytest.raises(ProviderError, match="same NextToken"):
        list(ses().suppression_list(session))


def test_reconcile_says_it_cannot():
    assert ses().reconcile(sample_batch(1), requests.Session(), age=10) is None
    assert "no idempotency key and no log search" in SesProvider.reconcile_note


def test_debug_logging_never_shows_the_session_token(caplog):
    """botocore logs the canonical request, headers and all, at DEBUG: with the root logger at DEBUG, nothing."""
    import logging

    caplog.set_level(logging.DEBUG)
    ses(env={"AWS_SESSION_TOKEN": TOKEN}).build_request(sample_batch(1))
    assert TOKEN not in caplog.text and SECRET not in caplog.text
