"""Both inliners pass the same fidelity tests on the same fixture (docs/architecture.md)."""

import re
import socket
from pathlib import Path

import pytest
from mjml import mjml2html

from newsletter.compile.inline import inline_css

FIXTURE = Path(__file__).parent / "fixtures" / "inline" / "layout.mjml"


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(self, address, *a, **k):
        attempts.append(address)
        raise OSError("network access during inlining")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture(params=["css-inline", "premailer"])
def inlined(request, no_network):
    html = inline_css(mjml2html(FIXTURE.read_text(), fonts={}), request.param)
    assert no_network == [], "the inliner tried to reach the network"
    return html


def test_doctype_kept(inlined):
    assert re.match(r"<!doctype html>", inlined, re.I)


def test_media_query_and_important_kept(inlined):
    assert "@media only screen and (max-width: 480px)" in inlined
    assert re.search(r"font-size:\s*19px\s*!important", inlined)


def test_import_rule_kept_not_fetched(inlined):
    assert '@import url("https://fonts.example.com/inter.css")' in inlined


def test_slot_placeholders_intact(inlined):
    assert 'href="zqslot1qz"' in inlined and "Hello zqslot0qz" in inlined


def test_inline_css_applied(inlined):
    assert re.search(r'<p style="[^"]*color:\s*#123456', inlined)


def test_image_width_attribute_untouched(inlined):
    assert re.search(r'<img[^>]*width="120"', inlined)


def test_mso_conditional_comments_kept(inlined):
    assert "<!--[if mso | IE]>" in inlined


def test_unknown_backend_is_refused():
    from newsletter.errors import TemplateError
    with pytest.raises(TemplateError, match="unknown CSS inliner 'inky'"):
        inline_css("<html></html>", "inky")
