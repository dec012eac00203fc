"""One contract, every adapter: the same scenarios against the local fake of each provider, over real sockets.

What each adapter must do, whatever its wire format: one outcome per
recipient; merge data that reaches each recipient exactly as personalised;
batches cut by count and bytes; a refused recipient is data, not an exception;
401/403 abort; 429/5xx and a connection never made are NotAccepted, a timeout or a
dropped connection NoAnswer (in doubt); an answer we cannot read is ``unknown``,
never ``sent``; the API key appears in no error, and a refusal says what the
provider said; a line break in a header value is never sent.

The outbox goes through the same send path (its transport writes .eml files): the
cases about a request and its answer hold for it too; those about an HTTP
server's answers (refusals, keys, 429, timeouts) are the HTTP adapters' alone.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import shutil

import hypothesis
import pytest
import requests
from fakeproviders import SES_ACCESS_KEY, Accepted, FakeProviders, sample_batch
from hypothesis import given
from hypothesis import strategies as st

from newsletter import config
from newsletter.errors import AuthError, NoAnswer, NotAccepted, ProviderError, RecipientError
from newsletter.jsontext import json_size
from newsletter.providers import provider_class

HTTP = ["postmark", "sendgrid", "mailgun", "resend", "ses", "brevo"]
PROVIDERS = ["outbox", *HTTP]
KEY = "contract-key-7f3a"
BAD = "broken@@example.com"  # malformed: every provider refuses it at the API


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeProviders(api_key=KEY) as server:
        server.workspace = tmp_path_factory.mktemp("outbox-workspace")  # where the outbox writes
        yield server


@pytest.fixture(autouse=True)
def fresh(fake):
    fake.reset()
    shutil.rmtree(fake.workspace / "outbox", ignore_errors=True)
    # Bodies and headers arrive exactly as sent: Postmark adds its own unsubscribe link and headers only on
    # streams whose unsubscribes it handles (its default; tests/test_unsubscribe_managed.py covers those).
    fake.postmark_streams["broadcast"] = ("Broadcasts", "Custom")
    yield


def adapter(name: str, fake: FakeProviders, *, key: str = KEY, **provider):
    flags = {"provider.name": name, "provider.api_base": fake.url, "provider.domain": fake.domain,
             "provider.timeout": 2.0, **{f"provider.{k}": v for k, v in provider.items()}}
    env = {}
    if name == "ses":  # AWS credentials from AWS's variables, the key as the secret access key
        env = {"AWS_ACCESS_KEY_ID": SES_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": key, "AWS_REGION": "eu-west-1"}
    settings = config.resolve({}, env, flags, source=fake.workspace / "newsletter.toml")
    provider = provider_class(name)(settings, key)
    if name == "postmark":
        provider.manages_unsubscribes = False  # what its preflight learns of the fake's "Custom" stream (below)
    return provider


def send(provider, batch):
    with requests.Session() as session:
        return provider.send_batch(batch, session)


def delivered(fake, name):
    """What each recipient received: from the fake server, or the outbox's files read back as email."""
    if name != "outbox":
        return fake.delivered(name)
    found = []
    for path in sorted((fake.workspace / "outbox").glob("*/*.eml")):
        mime = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        parts = {part.get_content_type(): part.get_content().replace("\r\n", "\n")  # CRLF on the wire
                 for part in mime.walk() if not part.is_multipart()}
        found.append(Accepted("outbox", mime["To"].addresses[0].addr_spec, str(mime["Subject"]),
                              parts["text/html"], parts["text/plain"],
                              {k: str(v) for k, v in mime.items()}, (path.parent.name,),
                              path.stem.rsplit("--", 1)[1], path.name))
    return found


def calls(fake, name):
    """Requests that reached the provider (for the outbox: batches that wrote a file)."""
    return len({a.batch for a in delivered(fake, name)}) if name == "outbox" else fake.send_calls


def assert_received_as_personalised(fake, name, batch):
    got = {a.to: a for a in delivered(fake, name)}
    assert len(delivered(fake, name)) == len(batch.messages)
    # MIME ends every text part with a line break (email's set_content): the outbox's bodies are compared without
    trim = (lambda text: text.rstrip("\n")) if name == "outbox" else (lambda text: text)
    for message in batch.messages:
        seen = got[message.to]
        assert (seen.subject, trim(seen.html), trim(seen.text)) == (message.subject, trim(message.html),
                                                                   trim(message.text))
        assert batch.issue_id in seen.tags and seen.batch == batch.batch_id
        assert seen.headers["List-Unsubscribe"] == message.headers["List-Unsubscribe"]
        assert seen.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("name", PROVIDERS)
def test_single_recipient_is_sent_with_its_id(fake, name):
    batch = sample_batch(1)
    [outcome] = send(adapter(name, fake), batch)
    assert outcome.state == "sent" and outcome.provider_id and outcome.email == batch.messages[0].to
    assert_received_as_personalised(fake, name, batch)


@pytest.mark.parametrize("name", PROVIDERS)
def test_full_batch_with_merge_data_reaches_each_recipient_personalised(fake, name):
    provider = adapter(name, fake)
    batch = sample_batch(provider.max_batch)
    outcomes = send(provider, batch)
    assert [o.state for o in outcomes] == ["sent"] * provider.max_batch
    assert {o.email for o in outcomes} == {m.to for m in batch.messages}
    assert calls(fake, name) == 1
    assert_received_as_personalised(fake, name, batch)


@pytest.mark.parametrize("weighed", [False, True], ids=["unweighed", "weighed-by-the-send-loop"])
@pytest.mark.parametrize("name", HTTP)
def test_batches_are_cut_by_payload_size_and_each_fits(fake, name, weighed):
    provider = adapter(name, fake)
    weigh = ("bodies" if provider.fills_bodies else "values" if provider.substitutes else "") if weighed else ""
    batch = sample_batch(10, body_bytes=3000, weigh=weigh)
    weights = [provider.payload_size(m) for m in batch.messages]
    provider.max_payload_bytes = int(weights[0] * 3.5)
    groups = list(provider.cut_batches(batch.messages))
    assert [len(g) for g in groups] == [3, 3, 3, 1]
    assert [m for g in groups for m in g] == list(batch.messages)
    bodies = []
    for n, group in enumerate(groups):
        part = sample_batch(addresses=[m.to for m in group], batch_id=f"part{n}", body_bytes=3000)
        assert all(o.state == "sent" for o in send(provider, part))
        bodies.append(len(_body(provider.build_request(part))))
    # payload_size is an upper bound of what each extra recipient adds to a request
    single = len(_body(provider.build_request(sample_batch(1, body_bytes=3000))))
    assert bodies[0] - single <= sum(weights[1:3])
    assert sorted(a.to for a in fake.delivered(name)) == sorted(m.to for m in batch.messages)


@pytest.mark.parametrize("name", HTTP)
def test_one_refused_recipient_fails_and_the_others_are_not_lost(fake, name):
    provider = adapter(name, fake)
    batch = sample_batch(addresses=["a@example.com", BAD, "c@example.com"])
    outcomes = {o.email: o for o in send(provider, batch)}
    assert outcomes[BAD].state == "failed" and outcomes[BAD].reason
    others = [outcomes["a@example.com"], outcomes["c@example.com"]]
    # sent now (per-message APIs) or back to pending to go again without the bad one (all-or-nothing APIs)
    assert {o.state for o in others} <= {"sent", "retry"} and len({o.state for o in others}) == 1
    if others[0].state == "retry":
        assert fake.delivered(name) == []
        again = sample_batch(addresses=["a@example.com", "c@example.com"], batch_id="b0002")
        assert [o.state for o in send(provider, again)] == ["sent", "sent"]
    assert sorted(a.to for a in fake.delivered(name)) == ["a@example.com", "c@example.com"]


@pytest.mark.parametrize("name", HTTP)
def test_all_refused_recipients_fail_without_an_exception(fake, name):
    batch = sample_batch(addresses=["x@@example.com", "y@@example.com"])
    outcomes = send(adapter(name, fake), batch)
    assert [o.state for o in outcomes] == ["failed", "failed"]
    assert fake.delivered(name) == []


@pytest.mark.parametrize("name", HTTP)
def test_a_wrong_key_aborts_and_is_never_shown(fake, name):
    wrong = "wrong-key-SECRET-123"
    with pytest.raises(AuthError) as caught:
        send(adapter(name, fake, key=wrong), sample_batch(2))
    err = caught.value
    assert err.status in (401, 403) and not err.retryable
    for text in (str(err), err.body, repr(err), repr(adapter(name, fake, key=wrong).build_request(sample_batch(1)))):
        assert wrong not in text
    assert fake.delivered(name) == []


# What each fake (like each provider) says to a wrong key: the error carries it, so the user knows why.
REFUSALS = {"postmark": "Bad or missing Server API token.",
            "sendgrid": "The provided authorization grant is invalid, expired, or revoked",
            "mailgun": "Forbidden", "resend": "API key is invalid",
            "ses": "The request signature we calculated does not match the signature you provided",
            "brevo": "Key not found"}
# What we call the refused secret, and where the hint says it lives (SES signs with AWS credentials, no API key).
REFUSED = {"ses": ("refused the credentials", "AWS_SECRET_ACCESS_KEY")}


@pytest.mark.parametrize("name", HTTP)
def test_a_wrong_key_says_what_the_provider_said(fake, name):
    with pytest.raises(AuthError) as caught:
        send(adapter(name, fake, key="wrong-key-SECRET-123"), sample_batch(1))
    what, where = REFUSED.get(name, ("refused the API key", "NEWSLETTER_API_KEY"))
    assert REFUSALS[name] in caught.value.message and what in caught.value.message
    assert where in caught.value.hint


INJECTIONS = {
    "name": {"to_name": "Eve\r\nBcc: attacker@example.net"},
    "subject": {"subject": "News\nBcc: attacker@example.net"},
    "header value": {"headers": {"List-Unsubscribe": "<https://example.com/u>\r\nBcc: attacker@example.net"}},
    "header name": {"headers": {"X-Note\r\nBcc": "attacker@example.net"}},
}


@pytest.mark.parametrize("field", sorted(INJECTIONS))
@pytest.mark.parametrize("name", PROVIDERS)
def test_a_line_break_in_a_recipients_header_value_fails_them_alone_and_sends_nothing(fake, name, field):
    batch = sample_batch(3)
    evil = dataclasses.replace(batch.messages[1], **INJECTIONS[field])
    batch = dataclasses.replace(batch, messages=(batch.messages[0], evil, batch.messages[2]))
    with pytest.raises(RecipientError) as caught:
        send(adapter(name, fake), batch)
    assert caught.value.email == evil.to and "line break" in caught.value.message
    assert "\n" not in str(caught.value) and "\r" not in str(caught.value)  # the error itself is one line
    assert calls(fake, name) == 0 and fake.accepted == [] and delivered(fake, name) == []


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_line_break_in_the_shared_reply_to_refuses_the_request(fake, name):
    batch = sample_batch(2)
    batch = dataclasses.replace(batch, messages=tuple(dataclasses.replace(m, reply_to="ed@example.com\nBcc: x@y.z")
                                                      for m in batch.messages))
    with pytest.raises(ProviderError) as caught:  # the same for every reader: theirs to fail it is not
        send(adapter(name, fake), batch)
    assert not caught.value.retryable and not isinstance(caught.value, RecipientError)
    assert "reply_to" in caught.value.hint and calls(fake, name) == 0 and delivered(fake, name) == []


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
@pytest.mark.parametrize("name", PROVIDERS)
def test_a_line_separator_in_the_shared_from_refuses_the_request_and_fails_nobody(fake, name, separator):
    """Was: the outbox had its own send path, wrote each reader's file through to_mime, and failed every
    reader for good on a From holding U+2028; every adapter now refuses the request as one."""
    batch = sample_batch(2)
    sender = f"Field Notes{separator}Bcc: x@y.z <notes@example.com>"
    batch = dataclasses.replace(batch, messages=tuple(dataclasses.replace(m, sender=sender) for m in batch.messages))
    with pytest.raises(ProviderError) as caught:
        send(adapter(name, fake), batch)
    assert not isinstance(caught.value, RecipientError) and not caught.value.retryable
    assert "From" in caught.value.message and "from" in caught.value.hint
    assert calls(fake, name) == 0 and delivered(fake, name) == []


@pytest.mark.parametrize("name", HTTP)
def test_429_is_retryable_after_the_servers_delay(fake, name):
    fake.inject("status", status=429, retry_after=7)
    with pytest.raises(ProviderError) as caught:
        send(adapter(name, fake), sample_batch(2))
    assert caught.value.retryable and caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(7, abs=1.5)


@pytest.mark.parametrize("name", HTTP)
def test_500_is_retryable(fake, name):
    fake.inject("status", status=500)
    with pytest.raises(ProviderError) as caught:
        send(adapter(name, fake), sample_batch(2))
    assert caught.value.retryable and caught.value.status == 500 and not isinstance(caught.value, AuthError)


@pytest.mark.parametrize("name", HTTP)
def test_timeout_is_retryable_and_in_doubt(fake, name):
    hold = fake.inject("hold")
    try:
        with pytest.raises(ProviderError) as caught:
            send(adapter(name, fake, timeout=0.3), sample_batch(2))
    finally:
        hold.release.set()
    assert caught.value.retryable and caught.value.status is None  # no status: it may have been accepted
    assert "no answer within" in caught.value.message


@pytest.mark.parametrize("name", HTTP)
def test_connection_reset_after_accepting_is_retryable_and_in_doubt(fake, name):
    fake.inject("drop")
    with pytest.raises(ProviderError) as caught:
        send(adapter(name, fake), sample_batch(2))
    assert caught.value.retryable and caught.value.status is None
    assert len(fake.delivered(name)) == 2  # the fake did accept: exactly why this must never count as "not sent"


@pytest.mark.parametrize("name", HTTP)
def test_a_200_that_is_not_the_documented_body_is_unknown_never_sent(fake, name):
    fake.inject("garbage")
    outcomes = send(adapter(name, fake), sample_batch(2))
    assert [o.state for o in outcomes] == ["unknown", "unknown"]
    assert all(o.reason for o in outcomes)


@pytest.mark.parametrize("name", HTTP)
def test_an_undocumented_2xx_after_accepting_is_unknown_never_a_refusal(fake, name):
    # A refusal puts the batch back to pending: the next run would send those readers a second copy.
    fake.inject("accepted", status=204)
    outcomes = send(adapter(name, fake), sample_batch(2))
    assert [o.state for o in outcomes] == ["unknown", "unknown"] and all(o.reason for o in outcomes)
    assert len(fake.delivered(name)) == 2


@pytest.mark.parametrize("name", HTTP)
def test_an_error_that_echoes_our_headers_never_shows_the_key(fake, name):
    import base64

    provider = adapter(name, fake)
    basic = base64.b64encode(f"api:{KEY}".encode()).decode()
    fake.inject("echo", status=400)
    try:
        said = [o.reason for o in send(provider, sample_batch(2))]
    except ProviderError as err:
        said = [str(err), err.message, err.body, err.hint or "", err.render()]
    assert said and "headers" in " ".join(said)  # the echo was read, and what it said is kept
    for text in said:
        assert KEY not in text and basic not in text
    assert fake.delivered(name) == []


@pytest.mark.parametrize("name", HTTP)
def test_a_connection_never_made_is_not_accepted_and_names_the_host(fake, name):
    provider = adapter(name, fake)
    provider.url = lambda path: "http://127.0.0.1:9" + path  # the discard port: nobody listens
    with pytest.raises(NotAccepted) as caught:
        send(provider, sample_batch(2))
    assert caught.value.retryable and "127.0.0.1:9 (connection refused)" in caught.value.message
    assert KEY not in str(caught.value) and fake.delivered(name) == []


def test_an_outbox_it_cannot_write_to_is_no_answer_for_the_same_batch_id_again(fake):
    (fake.workspace / "outbox").write_text("a file where the folder should be")
    try:
        with pytest.raises(NoAnswer) as caught:
            send(adapter("outbox", fake), sample_batch(2))
    finally:
        (fake.workspace / "outbox").unlink()
    assert caught.value.retryable and "cannot write to" in caught.value.message


def _body(request) -> bytes:
    prepared = requests.Request(request.method, request.url, headers=dict(request.headers), json=request.json,
                                data=request.data, files=request.files).prepare()
    return prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()


def test_every_adapter_is_in_the_contract():
    from newsletter.providers import ADAPTERS
    assert sorted(ADAPTERS) == sorted(PROVIDERS)


@given(st.text() | st.text(min_size=4096, max_size=5000)  # short strings are weighed exactly, long ones estimated
       | st.builds(lambda a, b: a * 300 + b, st.text(min_size=10, max_size=20), st.text()))
@hypothesis.settings(max_examples=200, deadline=None)
def test_json_size_is_an_upper_bound_of_what_requests_sends(text):
    """Batches are cut by this estimate: it must never be below the JSON (or UTF-8) size."""
    assert json_size(text) >= len(json.dumps(text)) and json_size(text) >= len(text.encode("utf-8", "surrogatepass"))


def test_batches_of_large_bodies_stay_within_the_memory_budget(fake):
    """Peak memory must not grow with the batch count limit: big bodies make smaller batches."""
    provider = adapter("postmark", fake)
    batch = sample_batch(40, body_bytes=400_000)
    groups = list(provider.cut_batches(batch.messages))
    assert len(groups) > 1 and [m for g in groups for m in g] == list(batch.messages)
    assert all(sum(provider.payload_size(m) for m in g) <= provider.memory_budget for g in groups)


@pytest.mark.parametrize("name", ["postmark", "resend"])
def test_bodies_filled_from_the_template_are_the_request_json_would_send(fake, name):
    """The send loop leaves Postmark/Resend bodies to the adapter, which fills them already encoded: the
    request must be byte for byte the one ``json=`` would send for the personalised messages (Resend
    replays must match the first payload exactly)."""
    provider = adapter(name, fake)
    batch = sample_batch(5)
    lean = dataclasses.replace(batch, messages=tuple(dataclasses.replace(m, html="", text="") for m in batch.messages))
    untemplated = dataclasses.replace(batch, template=None, slot_values=())
    sent = provider.build_request(lean).data
    assert sent == provider.build_request(batch).data == provider.build_request(untemplated).data
    items = json.loads(sent)
    by_to = {m.to: m for m in batch.messages}
    for item in items:
        to = item.get("To") or item["to"][0].split("<")[-1].rstrip(">")
        html, text = (item["HtmlBody"], item["TextBody"]) if name == "postmark" else (item["html"], item["text"])
        assert (html, text) == (by_to[to].html, by_to[to].text)
    plain = [{**item} for item in items]
    assert sent == json.dumps(plain).encode()  # the separators and escapes of json.dumps, as requests sends


@pytest.mark.parametrize("name", ["postmark", "resend", "brevo"])
def test_a_message_left_without_bodies_is_never_sent_empty(fake, name):
    """Bodies left to the adapter need the batch's template: without it, refuse rather than send empty mail."""
    batch = sample_batch(2, weigh="bodies")
    lean = dataclasses.replace(batch, template=None, slot_values=(),
                               messages=tuple(dataclasses.replace(m, html="", text="") for m in batch.messages))
    with pytest.raises(ProviderError, match="without its bodies"):
        send(adapter(name, fake), lean)
    assert fake.delivered(name) == []


def test_a_batch_whose_merge_values_do_not_match_its_messages_cannot_be_made():
    """Adapters zip messages with values: a short list would leave readers out of a request answered 'sent'."""
    batch = sample_batch(3)
    with pytest.raises(ValueError, match="2 sets of merge values for 3 messages"):
        dataclasses.replace(batch, slot_values=batch.slot_values[:2])


@pytest.mark.parametrize("name", ["sendgrid", "mailgun"])
def test_a_template_once_provider_refuses_different_bodies_without_the_template(fake, name):
    """Without the template there is one body for the whole batch: readers' own bodies would be lost."""
    batch = dataclasses.replace(sample_batch(2), template=None, slot_values=())
    with pytest.raises(ProviderError, match="need the compiled template"):
        send(adapter(name, fake), batch)
    assert fake.delivered(name) == []


def test_postmark_inactive_recipient_fails_and_is_suppressed_the_others_are_sent(fake):
    """Postmark's ErrorCode 406 inside a 200: that reader failed (and suppressed), the batch's others sent."""
    batch = sample_batch(3)
    fake.inactive.add(batch.messages[1].to)
    outcomes = {o.email: o for o in send(adapter("postmark", fake), batch)}
    inactive = outcomes[batch.messages[1].to]
    assert (inactive.state, inactive.suppress) == ("failed", True) and "inactive" in inactive.reason.lower()
    assert [outcomes[m.to].state for m in (batch.messages[0], batch.messages[2])] == ["sent", "sent"]
    assert sorted(a.to for a in fake.delivered("postmark")) == sorted([batch.messages[0].to, batch.messages[2].to])
