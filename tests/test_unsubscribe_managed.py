"""Whose unsubscribe link: ours (``[unsubscribe] url`` a page of yours) or the provider's (``url = "provider"``).

Postmark is the provider that manages unsubscribes: on a stream whose
UnsubscribeHandlingType is "Postmark" (the default for broadcast streams) it
fills ``{{{ pm:unsubscribe }}}``, appends its own link when there is none, and
sets List-Unsubscribe itself. ``send`` asks the stream before planning anything.
The fake does what Postmark documents, so what the readers got is checked as
they got it.
"""

from __future__ import annotations

import json

import pytest
from helpers import write_readers
import requests
import responses
from fakeproviders import (SENDGRID_GROUP, FakeProviders, mailgun_unsubscribe_url, postmark_unsubscribe_url,
                           sendgrid_unsubscribe_url)

from newsletter import config
from newsletter.compile.pipeline import build_issue, personalizer, sample_subscriber
from newsletter.errors import ConfigError, ProviderError
from newsletter.providers import open_provider, provider_class, provider_facts

KEY = "managed-key-Tt40"
ISSUE = "2026-11-30-weekly"
OWN_PAGE = "https://example.com/notes/unsubscribe?t="  # the example workspace's own page


@pytest.fixture
def fake():
    with FakeProviders(api_key=KEY) as server:
        yield server


def managed(workspace):
    toml = workspace / "newsletter.toml"
    text = toml.read_text(encoding="utf-8")
    start = text.index("[unsubscribe]")
    line = next(n for n in text[start:].splitlines() if n.startswith("url"))
    toml.write_text(text.replace(line, 'url = "provider"   # Postmark handles unsubscribes', 1), encoding="utf-8")


def other_warnings(stderr: str) -> list[str]:
    """Warnings but lint's, which every send prints (issue 10; lint's end with their check's name)."""
    return [line for line in stderr.splitlines() if line.startswith("Warning") and not line.endswith("[unsubscribe]")]


def env_for(name: str, fake: FakeProviders, **extra: str) -> dict[str, str]:
    # No NEWSLETTER_SECRET: with the provider's links there is nothing of ours to sign.
    return {"NEWSLETTER_PROVIDER_NAME": name, "NEWSLETTER_PROVIDER_API_BASE": fake.url,
            "NEWSLETTER_PROVIDER_DOMAIN": fake.domain, "NEWSLETTER_API_KEY": KEY,
            "NEWSLETTER_PROVIDER_RATE_LIMIT": "1000", **extra}


# -- the setting, before any request -------------------------------------------------------------
def load_managed(workspace, name: str, **env: str):
    managed(workspace)
    return config.load(workspace / "newsletter.toml", {"NEWSLETTER_PROVIDER_NAME": name, "NEWSLETTER_API_KEY": KEY,
                                                       "NEWSLETTER_PROVIDER_DOMAIN": "mg.example.com", **env})


def refusal(settings) -> str:
    with pytest.raises(ConfigError) as caught:
        open_provider(settings)
    text = caught.value.render()
    assert "newsletter.toml:" in text and "give your own page" in text
    return text


def test_the_outbox_cannot_manage_unsubscribes_and_says_which_providers_can(workspace):
    # Changed with issue 11: SendGrid and Mailgun manage them too now.
    assert ('[unsubscribe] url = "provider": newsletter leaves unsubscribe links to the provider only with Postmark '
            "(its broadcast streams), SendGrid (an unsubscribe group) and Mailgun, not with outbox"
            ) in refusal(load_managed(workspace, "outbox"))


def test_resend_is_refused_with_the_reason(workspace):
    text = refusal(load_managed(workspace, "resend"))
    assert ("Resend's email API documents no unsubscribe link or List-Unsubscribe headers of its own "
            "(its topic_id only skips contacts who opted out of a topic)") in text


def test_sendgrid_without_an_unsubscribe_group_is_refused_with_the_line_to_add(workspace):
    text = refusal(load_managed(workspace, "sendgrid"))
    assert "SendGrid manages unsubscribes through an unsubscribe group, and [provider] asm_group_id is not set" in text
    assert "add the line `asm_group_id = 12345` under [provider]" in text
    assert open_provider(load_managed(workspace, "sendgrid", NEWSLETTER_PROVIDER_ASM_GROUP_ID="4242")).name == "sendgrid"


def test_mailgun_opens_with_the_setting(workspace):
    assert open_provider(load_managed(workspace, "mailgun")).name == "mailgun"


def test_lint_says_the_same_before_a_send(run, workspace):
    managed(workspace)
    result = run("lint", f"issues/{ISSUE}.md")
    assert result.exit_code == 1
    assert 'error: [unsubscribe] url = "provider": newsletter leaves unsubscribe links to the provider only ' \
           "with Postmark (its broadcast streams), SendGrid (an unsubscribe group) and Mailgun, not with outbox" \
           in result.output
    ok = run("lint", f"issues/{ISSUE}.md", env={"NEWSLETTER_PROVIDER_NAME": "postmark"})
    assert ok.exit_code == 0, ok.output
    assert 'warning: [unsubscribe] mailto is not used in emails with url = "provider"' in ok.output


def test_the_link_is_postmarks_placeholder_and_the_headers_are_left_to_postmark(workspace):
    managed(workspace)
    settings = config.load(workspace / "newsletter.toml", {"NEWSLETTER_PROVIDER_NAME": "postmark"})
    built = build_issue(settings, ISSUE)
    message = personalizer(settings, built.compiled, facts=provider_facts(settings)).message(sample_subscriber(built))
    assert message.html.count('href="{{{ pm:unsubscribe }}}"') == 1
    assert "Unsubscribe: {{{ pm:unsubscribe }}}" in message.text
    assert message.headers == {} and OWN_PAGE not in message.html


# -- sends through the fake Postmark -------------------------------------------------------------
def test_a_send_gives_every_reader_postmarks_one_link_and_headers(run, workspace, fake):
    managed(workspace)
    addresses = write_readers(workspace, 4)
    result = run("send", ISSUE, "--yes", env=env_for("postmark", fake))
    assert result.exit_code == 0, result.output + result.stderr
    assert other_warnings(result.stderr) == []
    got = {a.to: a for a in fake.delivered("postmark")}
    assert sorted(got) == addresses
    for address, mail in got.items():
        link = postmark_unsubscribe_url(address)
        assert mail.html.count("unsubscribe") == mail.html.count(link) == 1 and "pm:unsubscribe" not in mail.html
        assert f"Unsubscribe: {link}" in mail.text
        assert mail.headers == {"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def leave_unsubscribes_to_us(fake) -> None:
    fake.postmark_streams["broadcast"] = ("Broadcasts", "Custom")


@pytest.mark.parametrize("name, unmanaged, refusal", [
    ("postmark", leave_unsubscribes_to_us,
     "Postmark's stream 'broadcast' leaves unsubscribes to you (UnsubscribeHandlingType 'Custom')"),
    ("mailgun", lambda fake: None,  # the fake's domain does not track unsubscribes until told to
     "Mailgun's domain mg.example.com does not track unsubscribes"),
])
def test_a_provider_that_leaves_unsubscribes_to_us_refuses_the_setting_before_the_plan(
        run, workspace, fake, name, unmanaged, refusal):
    managed(workspace)
    write_readers(workspace, 3)
    unmanaged(fake)
    result = run("send", ISSUE, "--yes", env=env_for(name, fake))
    assert result.exit_code == 1
    assert refusal in result.stderr
    assert fake.send_calls == 0
    assert json.loads(run("status", "--json", env=env_for(name, fake)).stdout) == []  # no plan frozen


def test_our_own_page_on_a_stream_postmark_handles_is_sent_with_a_warning(run, workspace, fake):
    write_readers(workspace, 2)
    result = run("send", ISSUE, "--yes", env=env_for("postmark", fake, NEWSLETTER_SECRET="s3cret"))
    assert result.exit_code == 0, result.stderr
    assert 'Postmark handles the unsubscribes of stream \'broadcast\'' in result.stderr
    assert 'Set [unsubscribe] url = "provider" for one link' in result.stderr
    mail = fake.delivered("postmark")[0]
    assert OWN_PAGE in mail.html and postmark_unsubscribe_url(mail.to) in mail.html  # what the reader really sees
    assert mail.headers["List-Unsubscribe"] == f"<{postmark_unsubscribe_url(mail.to)}>"


def test_our_own_page_on_a_stream_we_manage_keeps_our_list_unsubscribe_headers(run, workspace, fake):
    fake.postmark_streams["broadcast"] = ("Broadcasts", "Custom")
    write_readers(workspace, 2)
    result = run("send", ISSUE, "--yes", env=env_for("postmark", fake, NEWSLETTER_SECRET="s3cret"))
    assert result.exit_code == 0, result.stderr
    assert other_warnings(result.stderr) == []
    for mail in fake.delivered("postmark"):
        assert mail.html.count("unsubscribe?t=") == 1 and "pm.example" not in mail.html
        assert mail.headers["List-Unsubscribe"].startswith(f"<{OWN_PAGE}")
        assert mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_transactional_stream_is_refused_before_the_plan(run, workspace, fake):
    write_readers(workspace, 2)
    env = env_for("postmark", fake, NEWSLETTER_SECRET="s3cret", NEWSLETTER_PROVIDER_MESSAGE_STREAM="outbound")
    result = run("send", ISSUE, "--yes", env=env)
    assert result.exit_code == 1
    assert "Postmark's message stream 'outbound' is a Transactional stream" in result.stderr
    assert 'message_stream = "broadcast"' in result.stderr and fake.send_calls == 0


def test_a_wrong_key_stops_at_the_question_without_printing_it(run, workspace, fake):
    write_readers(workspace, 2)
    result = run("send", ISSUE, "--yes", env=env_for("postmark", fake, NEWSLETTER_SECRET="s", NEWSLETTER_API_KEY="no-Kk1"))
    assert result.exit_code == 1 and "postmark refused the API key (HTTP 401)" in result.stderr
    assert "no-Kk1" not in result.output + result.stderr and fake.send_calls == 0


# -- sends through the fake SendGrid (an unsubscribe group) and Mailgun (a domain tracking unsubscribes) --
def assert_one_provider_link_each(mails, addresses, link_for):
    got = {mail.to: mail for mail in mails}
    assert sorted(got) == addresses
    for address, mail in got.items():
        link = link_for(address)
        assert mail.html.count("Unsubscribe") == 1 and mail.html.count(f'href="{link}"') == 1
        assert f"Unsubscribe: {link}" in mail.text and OWN_PAGE not in mail.html + mail.text
        listed = {name: value for name, value in mail.headers.items() if name.lower().startswith("list-unsubscribe")}
        assert listed == {"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def test_a_sendgrid_send_gives_every_reader_the_groups_link_and_headers(run, workspace, fake):
    managed(workspace)
    addresses = write_readers(workspace, 4)
    env = env_for("sendgrid", fake, NEWSLETTER_PROVIDER_ASM_GROUP_ID=str(SENDGRID_GROUP))
    result = run("send", ISSUE, "--yes", env=env)
    assert result.exit_code == 0, result.output + result.stderr
    assert_one_provider_link_each(fake.delivered("sendgrid"), addresses,
                                  lambda address: sendgrid_unsubscribe_url(address, SENDGRID_GROUP))


def test_a_sendgrid_send_without_a_group_is_refused_before_the_plan(run, workspace, fake):
    managed(workspace)
    write_readers(workspace, 2)
    result = run("send", ISSUE, "--yes", env=env_for("sendgrid", fake))
    assert result.exit_code == 1 and "add the line `asm_group_id = 12345` under [provider]" in result.stderr
    assert fake.send_calls == 0


def test_sync_brings_the_groups_unsubscribes_into_the_ledger_and_the_next_send_leaves_them_out(run, workspace, fake):
    managed(workspace)
    addresses = write_readers(workspace, 3)
    fake.sendgrid_groups[SENDGRID_GROUP] = [addresses[1]]
    env = env_for("sendgrid", fake, NEWSLETTER_PROVIDER_ASM_GROUP_ID=str(SENDGRID_GROUP))
    synced = run("suppressions", "sync", "--json", env=env)
    assert synced.exit_code == 0, synced.output
    assert json.loads(synced.stdout)["kinds"] == {"unsubscribed": 1}
    assert ("GET", f"/v3/asm/groups/{SENDGRID_GROUP}/suppressions") in fake.requests_seen
    result = run("send", ISSUE, "--yes", env=env)
    assert result.exit_code == 0, result.output + result.stderr
    assert sorted(mail.to for mail in fake.delivered("sendgrid")) == [addresses[0], addresses[2]]


def test_a_mailgun_send_gives_every_reader_mailguns_link_and_headers(run, workspace, fake):
    managed(workspace)
    addresses = write_readers(workspace, 4)
    fake.mailgun_unsubscribe["active"] = True
    result = run("send", ISSUE, "--yes", env=env_for("mailgun", fake))
    assert result.exit_code == 0, result.output + result.stderr
    assert other_warnings(result.stderr) == []
    assert_one_provider_link_each(fake.delivered("mailgun"), addresses, mailgun_unsubscribe_url)


def test_a_mailgun_footer_is_sent_with_a_warning_about_the_second_link(run, workspace, fake):
    managed(workspace)
    write_readers(workspace, 1)
    fake.mailgun_unsubscribe.update(active=True, text_footer="\nUnsubscribe here: %unsubscribe_url%\n")
    result = run("send", ISSUE, "--yes", env=env_for("mailgun", fake))
    assert result.exit_code == 0, result.output + result.stderr
    assert "readers see two unsubscribe links" in result.stderr
    [mail] = fake.delivered("mailgun")
    assert mail.text.count(mailgun_unsubscribe_url(mail.to)) == 2  # what the warning is about


# -- the question itself ----------------------------------------------------------------------------
@responses.activate
def test_the_preflight_reads_the_documented_stream_answer():
    responses.get("https://api.test/message-streams/broadcast", json={
        "ID": "broadcast", "ServerID": 123457, "Name": "Broadcast Stream", "Description": "Newsletters",
        "MessageStreamType": "Broadcasts", "CreatedAt": "2020-07-01T00:00:00-04:00", "UpdatedAt": None,
        "ArchivedAt": None, "ExpectedPurgeDate": None,
        "SubscriptionManagementConfiguration": {"UnsubscribeHandlingType": "Custom"}})
    settings = config.resolve({}, {}, {"provider.name": "postmark", "provider.api_base": "https://api.test"},
                              source=None)
    provider = provider_class("postmark")(settings, KEY)
    with requests.Session() as session:
        assert provider.preflight(session) == []
    assert responses.calls[0].request.headers["X-Postmark-Server-Token"] == KEY
    assert provider.manages_unsubscribes is False


STREAM = {"ID": "broadcast", "ServerID": 123457, "Name": "Broadcast Stream", "Description": None,
          "MessageStreamType": "Broadcasts", "CreatedAt": "2020-07-01T00:00:00-04:00", "UpdatedAt": None,
          "ArchivedAt": None, "ExpectedPurgeDate": None,
          "SubscriptionManagementConfiguration": {"UnsubscribeHandlingType": "Postmark"}}
NO_ANSWER = {  # what Postmark might answer instead of the stream: none of it says who handles unsubscribes
    "429": {"status": 429, "json": {"ErrorCode": 429, "Message": "Rate limit exceeded"}},
    "500": {"status": 500, "body": "Internal Server Error"},
    "network": {"body": requests.ConnectionError("reset")},
    "not JSON": {"status": 200, "body": "<html>maintenance</html>"},
    "empty object": {"status": 200, "json": {}},
    "another 422": {"status": 422, "json": {"ErrorCode": 1000, "Message": "Something else"}},
}


def postmark(url: str = OWN_PAGE + "{token}"):
    settings = config.resolve({}, {}, {"provider.name": "postmark", "provider.api_base": "https://api.test",
                                       "unsubscribe.url": url}, source=None)
    return provider_class("postmark")(settings, KEY)


def preflight(provider):
    with requests.Session() as session:
        return provider.preflight(session)


@pytest.mark.parametrize("answer", sorted(NO_ANSWER))
@responses.activate
def test_no_answer_warns_and_sends_with_our_own_page(answer):
    responses.get("https://api.test/message-streams/broadcast", **NO_ANSWER[answer])
    provider = postmark()
    [warning] = preflight(provider)
    assert warning.startswith("could not check Postmark's stream 'broadcast' before sending (")
    assert provider.manages_unsubscribes is None  # the adapter keeps its default for the broadcast stream


@pytest.mark.parametrize("answer", sorted(NO_ANSWER))
@responses.activate
def test_no_answer_stops_a_send_that_relies_on_postmarks_link(answer):
    responses.get("https://api.test/message-streams/broadcast", **NO_ANSWER[answer])
    with pytest.raises(ProviderError) as caught:
        preflight(postmark("provider"))
    assert "nothing is sent without knowing" in caught.value.render()
    assert "try again in a while; nothing was sent" in caught.value.render()


@responses.activate
def test_a_missing_or_archived_stream_is_a_setting_to_fix():
    responses.get("https://api.test/message-streams/broadcast", status=422,
                  json={"ErrorCode": 1226, "Message": "The message stream for the provided 'ID' was not found."})
    with pytest.raises(ConfigError) as caught:
        preflight(postmark())
    assert "Postmark has no message stream 'broadcast'" in caught.value.render()
    assert 'message_stream = "broadcast"' not in caught.value.render()  # that is the one missing
    responses.replace(responses.GET, "https://api.test/message-streams/broadcast", json={
        **STREAM, "ArchivedAt": "2026-11-01T10:00:00-05:00", "ExpectedPurgeDate": "2026-12-16T10:00:00-05:00"})
    with pytest.raises(ConfigError, match="is archived, .* deleted for good after 2026-12-16T10:00:00-05:00"):
        preflight(postmark())


def test_a_send_relying_on_postmarks_link_asks_again_and_never_sends_unanswered(run, workspace, fake):
    managed(workspace)
    write_readers(workspace, 2)
    fake.inject_read(status=503, times=1)  # a blip: asked again, answered
    blip = run("send", ISSUE, "--yes", env=env_for("postmark", fake))
    assert blip.exit_code == 0, blip.stderr
    assert other_warnings(blip.stderr) == [] and len(fake.delivered("postmark")) == 2

    write_readers(workspace, 3)
    fake.inject_read(status=429, retry_after=3600, times=1)  # no answer within the run: nothing is sent
    result = run("send", ISSUE, "--yes", "--include-new", env=env_for("postmark", fake))
    assert result.exit_code == 1 and "nothing is sent without knowing" in result.stderr
    assert len(fake.delivered("postmark")) == 2
    again = run("send", ISSUE, "--yes", "--include-new", env=env_for("postmark", fake))
    assert again.exit_code == 0, again.stderr
    assert sorted(a.to for a in fake.delivered("postmark")) == [f"reader{n:03d}@example.com" for n in range(3)]


def test_a_proof_through_postmarks_link_warns_that_it_is_live(run, workspace, fake):
    managed(workspace)
    result = run("test", ISSUE, "--to", "editor@example.com", env=env_for("postmark", fake))
    assert result.exit_code == 0, result.stderr
    assert "the proofs carry postmark's own unsubscribe link, which works" in result.stderr
    [proof] = fake.delivered("postmark")
    assert postmark_unsubscribe_url("editor@example.com") in proof.html


def test_readers_who_left_through_postmarks_link_are_left_out_of_the_next_send(run, workspace, fake):
    managed(workspace)
    write_readers(workspace, 4)
    fake.suppress("postmark", "Reader001@Example.com", "unsubscribe")  # used Postmark's link last week
    env = env_for("postmark", fake)
    result = run("send", ISSUE, "--yes", env=env)
    assert result.exit_code == 0, result.stderr  # not 3: nobody was refused and failed
    assert "Suppressed: 1 new from postmark (unsubscribes, bounces, complaints)" in result.output
    assert sorted(a.to for a in fake.delivered("postmark")) == ["reader000@example.com", "reader002@example.com",
                                                                "reader003@example.com"]
    counts = json.loads(run("status", ISSUE, "--json", env=env).stdout)
    assert (counts["total"], counts["sent"], counts["failed"]) == (3, 3, 0)


def test_without_the_sync_postmark_refuses_them_and_they_fail(run, workspace, fake):
    """What the sync spares: the same reader, with our own page (no sync before the send), is refused (406)."""
    write_readers(workspace, 2)
    fake.suppress("postmark", "reader001@example.com", "unsubscribe")
    env = env_for("postmark", fake, NEWSLETTER_SECRET="s3cret")
    result = run("send", ISSUE, "--yes", env=env)
    assert result.exit_code == 3 and "Suppressed:" not in result.output
    counts = json.loads(run("status", ISSUE, "--json", env=env).stdout)
    assert (counts["sent"], counts["failed"]) == (1, 1)
