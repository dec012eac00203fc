"""The compile pipeline: slots survive, personalising is a substitution, errors name file and line."""

import json
import re

import pytest

from newsletter import config
from newsletter.compile.issue import load_issue
from newsletter.compile.pipeline import build_issue, personalizer
from newsletter.compile.render import compile_issue
from newsletter.errors import TemplateError
from newsletter.models import Subscriber


def write_issue(workspace, body, front='subject: "Hi {{ subscriber.name | default(\'friend\') }}"\npreheader: P'):
    path = workspace / "issues" / "t.md"
    path.write_text(f"---\n{front}\n---\n{body}", encoding="utf-8")
    return path


def settings_for(workspace, **env):
    return config.load(workspace / "newsletter.toml", env)


def test_personalising_is_a_substitution_not_a_recompile(workspace, monkeypatch):
    write_issue(workspace, "Hello {{ subscriber.name | default(\"there\") }} from {{ subscriber.city }}.\n\n"
                           "## One\n\nText\n")
    settings = settings_for(workspace)
    compiled = build_issue(settings, "t").compiled
    import mjml

    import newsletter.compile.render as render

    def refuse(*a, **k):
        raise AssertionError("compiled again")
    monkeypatch.setattr(mjml, "mjml2html", refuse)
    monkeypatch.setattr(render, "inline_css", refuse)
    p = personalizer(settings, compiled)
    ada = p.message(Subscriber("ada@example.com", name="Ada", fields={"city": "London"}))
    anon = p.message(Subscriber("x@example.com"))
    assert ada.subject == "Hi Ada" and anon.subject == "Hi friend"
    assert "Hello Ada from London." in ada.html and "Hello Ada from London." in ada.text
    assert "Hello there from ." in anon.html
    assert "zqslot" not in ada.html + ada.text + ada.subject


def test_subscriber_values_are_escaped_in_html_only(workspace):
    write_issue(workspace, "Hi {{ subscriber.name }}\n")
    settings = settings_for(workspace)
    message = personalizer(settings, build_issue(settings, "t").compiled).message(
        Subscriber("e@example.com", name='<script>alert("x")</script> & Co'))
    assert "<script>alert" not in message.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in message.html
    assert 'Hi <script>alert("x")</script> & Co' in message.text
    assert message.subject == 'Hi <script>alert("x")</script> & Co'


def test_unsubscribe_url_is_signed_per_subscriber_and_escaped_in_href(workspace):
    write_issue(workspace, "Body\n")
    settings = settings_for(workspace)
    p = personalizer(settings, build_issue(settings, "t").compiled, secret=b"s3cret")
    a = p.message(Subscriber("a@example.com"))
    b = p.message(Subscriber("b@example.com"))
    from newsletter.unsubscribe import TokenFacts, open_token
    url = a.headers["List-Unsubscribe"].split(">")[0][1:]
    assert open_token(url.split("t=")[1], [b"s3cret"]) == TokenFacts("a@example.com", "t")
    assert open_token(url.split("t=")[1], [b"other"]) is None
    assert f'href="{url}"' in a.html and url not in b.html
    assert f"Unsubscribe: {url}" in a.text


def test_sections_numbered_except_marked(workspace):
    write_issue(workspace, "Intro\n\n## First\n\nA\n\n## Second *bold*\n\nB\n\n## Wrap up {-}\n\nC\n")
    settings = settings_for(workspace)
    compiled = build_issue(settings, "t").compiled
    html = "".join(compiled.html.parts)
    numbers = re.findall(r'<span class="item-number"[^>]*>(\d+)</span>([^<]*)', html)
    assert numbers == [("1", "First"), ("2", "Second ")]
    assert "<em>bold</em>" in html and "Wrap up" in html and "{-}" not in html
    text = "".join(compiled.text.parts)
    assert "1. First\n" in text and "2. Second bold\n" in text and "\nWrap up\n" in text


def test_markdown_tables_and_raw_html_pass_through(workspace):
    write_issue(workspace, "| a | b |\n|---|---|\n| 1 | 2 |\n\n<div class=\"note\">raw <b>html</b></div>\n")
    settings = settings_for(workspace)
    html = "".join(build_issue(settings, "t").compiled.html.parts)
    assert "<table" in html and "<td" in html and '<div class="note">raw <b>html</b></div>' in html


def test_issue_level_jinja_in_body(workspace):
    write_issue(workspace, "This is {{ newsletter.name }}, issue {{ issue.id }}.\n")
    settings = settings_for(workspace)
    assert "This is Field Notes Weekly, issue t." in "".join(build_issue(settings, "t").compiled.text.parts)


def test_unknown_template_lists_available(workspace):
    path = write_issue(workspace, "x\n", front="subject: S\ntemplate: fancy")
    with pytest.raises(TemplateError) as err:
        compile_issue(load_issue(path), settings_for(workspace))
    assert str(err.value).startswith(f"{path}:3: unknown template 'fancy'")
    assert "available layouts: bulletin, digest, letter" in str(err.value)  # issue 12: three layouts


def test_jinja_syntax_error_in_body_points_at_issue_line(workspace):
    path = write_issue(workspace, "ok\n\n{% if %}\n", front="subject: S")
    with pytest.raises(TemplateError) as err:
        compile_issue(load_issue(path), settings_for(workspace))
    assert str(err.value).startswith(f"{path}:6: template error")


def test_unknown_variable_in_body(workspace):
    path = write_issue(workspace, "\n{{ newsletter.nmae }}\n", front="subject: S")
    with pytest.raises(TemplateError, match=r"t.md:5: template error: .*nmae"):
        compile_issue(load_issue(path), settings_for(workspace))


def test_jinja_error_in_layout_points_at_layout_line(workspace):
    layout = workspace / "templates" / "digest.mjml"
    lines = layout.read_text().splitlines()
    lines[4] = "{% for x in %}"
    layout.write_text("\n".join(lines))
    path = write_issue(workspace, "x\n")
    with pytest.raises(TemplateError) as err:
        compile_issue(load_issue(path), settings_for(workspace))
    assert str(err.value).startswith(f"{layout}:5: template error")


def test_subscriber_in_layout_control_flow_is_explained(workspace):
    (workspace / "templates" / "bad.mjml").write_text(
        "<mjml><mj-body>{% if subscriber.name %}<mj-section></mj-section>{% endif %}</mj-body></mjml>")
    path = write_issue(workspace, "x\n", front="subject: S\ntemplate: bad")
    with pytest.raises(TemplateError, match=r"subscriber fields work only inside \{\{ \}\}"):
        compile_issue(load_issue(path), settings_for(workspace))


def test_mjml_refusal_is_a_clear_error(workspace):
    (workspace / "templates" / "broken.mjml").write_text("<mjml>\n<mj-raw>x</mj-raw><mj-body></mj-body></mjml>")
    path = write_issue(workspace, "x\n", front="subject: S\ntemplate: broken")
    with pytest.raises(TemplateError) as err:
        compile_issue(load_issue(path), settings_for(workspace))
    assert "broken.mjml: MJML refused the layout: unexpected element" in str(err.value)
    assert "near rendered line 2: '<mj-raw>x</mj-raw>" in str(err.value)


def test_unknown_mjml_tag_is_caught_with_its_line(workspace):
    (workspace / "templates" / "typo.mjml").write_text("<mjml>\n<mj-body>\n  <mj-sektion/>\n</mj-body></mjml>")
    path = write_issue(workspace, "x\n", front="subject: S\ntemplate: typo")
    with pytest.raises(TemplateError) as err:
        compile_issue(load_issue(path), settings_for(workspace))
    assert str(err.value).endswith("typo.mjml:3: unknown MJML tag <mj-sektion> (did you mean <mj-section>?)")


def test_mj_include_cannot_leave_templates(workspace, tmp_path):
    (tmp_path / "secret.mjml").write_text("<mj-text>secret</mj-text>")
    (workspace / "templates" / "inc.mjml").write_text(
        '<mjml><mj-body><mj-include path="../../secret.mjml" /></mj-body></mjml>')
    path = write_issue(workspace, "x\n", front="subject: S\ntemplate: inc")
    with pytest.raises(TemplateError, match="is not a file inside"):
        compile_issue(load_issue(path), settings_for(workspace))


@pytest.mark.parametrize("partial, error", [
    ("<mj-txt>hi</mj-txt>", "part.mjml:1: unknown MJML tag <mj-txt> (did you mean <mj-text>?)"),
    ("<mj-text>Hi {{ subscriber.name }}</mj-text>", 'part.mjml: mj-include inserts the file as it is: its {{ }} or '
                                                    '{% %} would reach readers literally (include it with Jinja '
                                                    'instead: {% include "part.mjml" %})'),
])
def test_an_mj_included_file_gets_the_layouts_checks(workspace, partial, error):
    (workspace / "templates" / "part.mjml").write_text(partial)
    (workspace / "templates" / "inc.mjml").write_text(
        '<mjml><mj-body><mj-section><mj-column><mj-include path="part.mjml" /></mj-column></mj-section>'
        '</mj-body></mjml>')
    path = write_issue(workspace, "x\n", front="subject: S\ntemplate: inc")
    with pytest.raises(TemplateError) as err:
        compile_issue(load_issue(path), settings_for(workspace))
    assert str(err.value).endswith(error)


def test_merge_field_without_column_is_refused(workspace):
    path = write_issue(workspace, "Hi\n\nfrom {{ subscriber.cty }}\n", front="subject: S")
    with pytest.raises(TemplateError) as err:
        build_issue(settings_for(workspace), str(path))
    assert str(err.value).startswith(f"{path}:6: merge field subscriber.cty: no column 'cty' in "
                                     "subscribers/subscribers.csv (did you mean subscriber.city?)")


def test_merge_field_with_fallback_but_no_column_is_allowed(workspace):
    write_issue(workspace, "from {{ subscriber.cty | default('somewhere') }}\n", front="subject: S")
    compiled = build_issue(settings_for(workspace), "t").compiled
    assert compiled.slots[0].defaulted


def test_content_hash_changes_with_content(workspace):
    settings = settings_for(workspace)
    write_issue(workspace, "one\n")
    first = build_issue(settings, "t").compiled.content_hash
    assert build_issue(settings, "t").compiled.content_hash == first
    write_issue(workspace, "two\n")
    assert build_issue(settings, "t").compiled.content_hash != first


def test_subject_merge_fields_reach_title_heading_and_text_filled(workspace):
    """The title defaults to the subject: its merge fields are slots there too, never raw Jinja."""
    write_issue(workspace, "Body\n", front='subject: "Hi {{ subscriber.name | default(\'friend\') }}"\n'
                                           "cta:\n  text: \"Claim yours, {{ subscriber.name | default('friend') }}\"\n"
                                           "  url: https://example.com/c?e={{ subscriber.email | urlencode }}")
    settings = settings_for(workspace)
    message = personalizer(settings, build_issue(settings, "t").compiled).message(
        Subscriber("a+b@example.com", name="Ada"))
    everything = message.html + message.text + message.subject
    assert "{{" not in everything and "subscriber." not in everything
    assert re.search(r"<h1[^>]*>Hi Ada</h1>", message.html)  # issue 12: the title is a real <h1>
    assert re.match(r"Hi Ada\n=+\n", message.text)
    assert "Claim yours, Ada" in message.html and "https://example.com/c?e=a%2Bb%40example.com" in message.html
    assert "Claim yours, Ada: https://example.com/c?e=a%2Bb%40example.com" in message.text


def test_text_part_keeps_links_written_as_html(workspace):
    write_issue(workspace, 'See <a href="https://example.com/a">the report</a> now.\n\n'
                           '<div class="note">Fish &amp; chips at <a href="https://example.com/b">the pier</a></div>\n',
                front="subject: S")
    text = "".join(build_issue(settings_for(workspace), "t").compiled.text.parts)
    assert "See the report (https://example.com/a) now." in text
    assert "Fish & chips at the pier (https://example.com/b)" in text


def test_values_only_personalisation_keeps_everything_but_the_bodies(workspace):
    """For SendGrid/Mailgun the loop skips the bodies: the rest must be the same message."""
    write_issue(workspace, "Hi {{ subscriber.name }}\n")
    settings = settings_for(workspace)
    p = personalizer(settings, build_issue(settings, "t").compiled)
    reader = Subscriber("a@example.com", name="Ada")
    full, values = p.message_with_values(reader)
    lean, lean_values = p.message_with_values(reader, bodies=False)
    assert lean.html == lean.text == "" and lean_values == values and "Hi Ada" in full.html
    assert (lean.subject, lean.headers, lean.to, lean.to_name) == (full.subject, full.headers, full.to, full.to_name)


def test_weighed_bodies_are_the_json_size_of_the_filled_ones(workspace):
    """Postmark/Resend messages leave their bodies to the adapter: their weight must be exact."""
    write_issue(workspace, 'Hi {{ subscriber.name | default("there") }} & "co" \u2603 from {{ subscriber.city }}\n')
    settings = settings_for(workspace)
    p = personalizer(settings, build_issue(settings, "t").compiled)
    reader = Subscriber("a@example.com", name='Ann <O\'Neil> "\u00e9\t"', fields={"city": "Zurich\u00a0\U0001f600"})
    full, values = p.message_with_values(reader)
    lean, _ = p.message_with_values(reader, bodies=False, weigh="bodies")
    assert lean.html == "" and lean.body_bytes == len(json.dumps(full.html)) + len(json.dumps(full.text))
    assert full.body_bytes == -1
