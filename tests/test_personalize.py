"""The per-recipient hot path keeps its exact output: escaping, signed tokens, unsubscribe URLs.

The shortcuts taken for speed (no markupsafe call for a value with nothing to
escape, HMAC pads hashed once per secret) must give byte-for-byte what the
plain library calls give.
"""

import hashlib
import hmac
import json

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import escape

from newsletter.compile.slots import SlotTemplate, escape_html
from newsletter.models import Subscriber
from newsletter.unsubscribe import TokenFacts, _Signer, make_token, open_token, unsubscribe_url


@pytest.mark.parametrize("value", ["", "Ada Lovelace", "Zoë Ørsted 山田", "a&b", "<b>", "x > y", 'say "hi"',
                                   "O'Brien", "&amp; already", "https://example.com/u?t=abc.def&x=1", "\n\t"])
def test_escape_html_is_markupsafe_escape(value):
    assert escape_html(value) == str(escape(value))
    assert type(escape_html(value)) is str


def test_fill_escapes_every_special_character_in_html_only():
    template = SlotTemplate.split("<p>zqslot0qz</p><a href=\"zqslot1qz\">x</a> zqslot0qz")
    values = ["<Tom> & \"Jerry\" 'n' co", "https://example.com/u?a=1&b=2"]
    html = template.fill(values, html=True)
    assert html == ("<p>&lt;Tom&gt; &amp; &#34;Jerry&#34; &#39;n&#39; co</p>"
                    "<a href=\"https://example.com/u?a=1&amp;b=2\">x</a> &lt;Tom&gt; &amp; &#34;Jerry&#34; &#39;n&#39; co")
    assert template.fill(values, html=False) == ("<p><Tom> & \"Jerry\" 'n' co</p>"
                                                 "<a href=\"https://example.com/u?a=1&b=2\">x</a> "
                                                 "<Tom> & \"Jerry\" 'n' co")


def test_fill_with_no_slots_and_slots_at_the_edges():
    assert SlotTemplate.split("plain").fill([], html=True) == "plain"
    assert SlotTemplate.split("zqslot0qzmidzqslot1qz").fill(["a", "<"], html=True) == "amid&lt;"


@pytest.mark.parametrize("secret", [b"", b"s", b"bench-secret", b"k" * 64, b"k" * 65, bytes(range(256))])
def test_signer_is_hmac_sha256(secret):
    for message in (b"", b"ada@example.com", "zoë@example.com".encode(), b"x" * 1000):
        assert _Signer(secret).sign(message) == hmac.new(secret, message, hashlib.sha256).digest()


def test_token_round_trip_hides_the_address_and_is_deterministic():
    """Behaviour change (issue 11): the token no longer carries base64(address); it is sealed (AES-GCM)."""
    token = make_token("Ada@Example.COM", b"s3cret", "2026-11-30-weekly")
    assert open_token(token, [b"s3cret"]) == TokenFacts("ada@example.com", "2026-11-30-weekly")
    assert open_token(token, [b"other"]) is None
    assert open_token(token, [b"other", b"s3cret"]) == TokenFacts("ada@example.com", "2026-11-30-weekly")  # rotation
    assert make_token("ada@example.com", b"s3cret", "2026-11-30-weekly") == token  # the same link on every resend
    assert make_token("ada@example.com", b"s3cret", "other-issue") != token
    assert "ada" not in token.lower() and "YWRh" not in token  # nor its base64


@pytest.mark.parametrize("token", ["", "no-dot", "YUBiLmM.\u00e9", "!!!.abc", "YUBiLmM.", ".abc", "_w.x", "A" * 5000,
                                   "AQ", "AQ" + "A" * 60])
def test_a_malformed_token_is_refused_not_raised(token):
    """What an unsubscribe page is handed comes from anyone: a bad token is None, never an exception."""
    assert open_token(token, [b"s3cret"]) is None


def test_unsubscribe_url_fills_token_and_email_or_nothing():
    assert unsubscribe_url("", "a@example.com", b"k") == ""
    assert unsubscribe_url("https://x.test/u", "a@example.com", b"k") == "https://x.test/u"
    assert unsubscribe_url("https://x.test/u?e={email}", "a+b@example.com", b"k") == "https://x.test/u?e=a%2Bb@example.com"
    both = unsubscribe_url("https://x.test/u?t={token}&e={email}&t2={token}", "a@example.com", b"k")
    token = make_token("a@example.com", b"k")  # no issue given: ""
    assert both == f"https://x.test/u?t={token}&e=a@example.com&t2={token}"


def test_mailto_stands_in_for_a_missing_unsubscribe_url(workspace):
    from newsletter import config
    from newsletter.compile.pipeline import build_issue, personalizer

    settings = config.load(workspace / "newsletter.toml", {"NEWSLETTER_UNSUBSCRIBE_URL": "",
                                                           "NEWSLETTER_UNSUBSCRIBE_MAILTO": "u@example.com"})
    message = personalizer(settings, build_issue(settings, "2026-11-30-weekly").compiled).message(
        Subscriber("a@example.com", name="Ada"))
    assert 'href="mailto:u@example.com?subject=unsubscribe"' in message.html
    assert message.headers == {"List-Unsubscribe": "<mailto:u@example.com?subject=unsubscribe>"}


@hypothesis.settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.text().filter(lambda t: "zqslot" not in t), min_size=1, max_size=5), values=st.lists(st.text(), min_size=3, max_size=3),
       html=st.booleans())
def test_json_fill_is_json_dumps_of_fill(parts, values, html):
    """The adapters' pre-encoded bodies are byte for byte what json.dumps makes of the filled text."""
    text = "".join(f"{part}zqslot{n % 3}qz" for n, part in enumerate(parts[:-1])) + parts[-1]
    template = SlotTemplate.split(text)
    assert template.json_fill(values, html=html) == json.dumps(template.fill(values, html=html))
    assert template.json_size(values, html=html) == len(json.dumps(template.fill(values, html=html)))
